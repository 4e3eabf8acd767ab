//! The `raftkv` binary: one executable for the server, the CLI, the local
//! cluster launcher and the load generator.

use clap::{Parser, Subcommand};

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
    /// Client commands (put, get, del, cas, ls, status, member, leader).
    #[command(flatten)]
    Client(raftkv::cli::ClientCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => raftkv::server::main(*args),
        Command::Cluster(args) => raftkv::cluster::main(args),
        Command::Bench(args) => raftkv::bench::main(args),
        Command::Certs(cmd) => raftkv::certs::main(cmd),
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
