//! The `raftkv` binary: one executable for the server, the CLI, the local
//! cluster launcher and the load generator.

use clap::{CommandFactory, Parser, Subcommand};

/// The server allocates for every request (hyper's and axum's request and
/// response types, the command, the log entry, the messages to followers)
/// from several threads at once: with glibc's allocator, malloc, free and
/// realloc were about 11% of a leader's CPU under load. mimalloc's
/// thread-local free lists make them much cheaper. Only this binary uses
/// it (the library's tests keep the system allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "raftkv",
    version,
    about = "A replicated key-value store built on Raft"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one server node.
    // Boxed: its many options make it far larger than the other commands.
    Serve(Box<raftkv::server::ServeArgs>),
    /// Start a local cluster of server processes and watch it.
    Cluster(raftkv::cluster::ClusterArgs),
    /// Generate load against running endpoints and report latency.
    Bench(raftkv::bench::BenchArgs),
    /// Make TLS certificates for local use (a CA and one per node).
    #[command(subcommand)]
    Certs(raftkv::certs::CertsCommand),
    /// Print a shell completion script: `raftkv completion bash >
    /// /etc/bash_completion.d/raftkv`, or `source <(raftkv completion zsh)`.
    Completion {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `raftkv man > raftkv.1; man
    /// ./raftkv.1`.
    Man,
    /// Client commands (put, get, del, cas, ls, status, member, leader).
    #[command(flatten)]
    Client(raftkv::cli::ClientCommand),
}

/// Writes `bytes` to stdout; a closed stdout (`| head`) is not a failure.
fn print_bytes(bytes: &[u8]) -> anyhow::Result<std::process::ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(std::process::ExitCode::SUCCESS),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => raftkv::server::main(*args),
        Command::Cluster(args) => raftkv::cluster::main(args),
        Command::Bench(args) => raftkv::bench::main(args),
        Command::Certs(cmd) => raftkv::certs::main(cmd),
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "raftkv", &mut script);
            print_bytes(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => print_bytes(&page),
                Err(e) => Err(e.into()),
            }
        }
        Command::Client(cmd) => raftkv::cli::main(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
