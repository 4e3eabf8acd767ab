//! `raftkv cluster`: one command that starts a local cluster of `raftkv
//! serve` processes, shows a live status table, can kill the leader on a
//! timer to show a failover, and stops every node cleanly on Ctrl-C.
//!
//! Layout (the contract of `raftkv serve`): node i (from 1) serves clients
//! on 127.0.0.1:`base_port + i - 1` and peers on `base_port + 100 + i - 1`,
//! keeps its data in `<data-dir>/node-<i>` and its log in
//! `<data-dir>/node-<i>/server.log`. The cluster id and layout are stored in
//! `<data-dir>/cluster.json` on the first run, so running the command again
//! restarts the same cluster from its data.
//!
//! `--tls` runs every node with TLS (HTTPS for clients, mutual TLS between
//! peers) on certificates kept in `<data-dir>/tls` (made with `raftkv certs
//! init` on the first `--tls` run, and reused after); the launcher's own
//! status polls use that CA and the client certificate made with it.

pub mod control;
mod monitor;
mod process;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub use process::{
    free_base_port, load_or_create_manifest, log_tail, port_is_free, LocalCluster, Manifest,
    MANIFEST_FILE, NODES_MAX, PEER_PORT_OFFSET, STOP_GRACE_DEFAULT,
};

use crate::certs::CertDir;
use crate::cli::parse_duration;

/// Arguments of `raftkv cluster`.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Number of nodes (default 3; fixed once the data dir holds a cluster).
    #[arg(long)]
    pub nodes: Option<u64>,
    /// Client port of node 1; node i uses base+i-1 for clients and
    /// base+100+i-1 for peers (default 7700; fixed once the data dir holds a
    /// cluster).
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Where the nodes keep their data (node i in <data-dir>/node-<i>).
    #[arg(long, default_value = "./raftkv-data")]
    pub data_dir: PathBuf,
    /// Kill the leader with SIGKILL this often (e.g. 10s), then restart it,
    /// to watch a failover.
    #[arg(long, value_parser = parse_duration)]
    pub kill_leader_every: Option<Duration>,
    /// How long a killed leader stays down before it is restarted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub restart_after: Duration,
    /// Stop the cluster after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How often the status table is refreshed.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub refresh: Duration,
    /// How long nodes get to exit after SIGTERM before SIGKILL.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub stop_grace: Duration,
    /// How long to wait for every node to start serving.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub start_timeout: Duration,
    /// Print plain lines instead of redrawing the table (the default when
    /// stdout is not a terminal).
    #[arg(long)]
    pub plain: bool,
    /// Log format of every node's server.log: text or json (passed to each
    /// `raftkv serve` as --log-format).
    #[arg(long)]
    pub log_format: Option<String>,
    /// The dashboard's buttons (kill, restart, isolate, transfer
    /// leadership) on every node's page at `/`: `true` or `false`. Kill and
    /// restart go through a control endpoint of this launcher on a free
    /// 127.0.0.1 port.
    #[arg(
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub dashboard_controls: bool,
    /// Run with TLS end to end: HTTPS for clients, mutual TLS between
    /// peers, on certificates made in <data-dir>/tls on first use (the
    /// banner prints the CA to give the CLI).
    #[arg(long)]
    pub tls: bool,
    /// Extra arguments for every `raftkv serve`, after `--`
    /// (e.g. `-- --snapshot-entries 1000`).
    #[arg(last = true)]
    pub serve_args: Vec<String>,
}

/// Entry point of `raftkv cluster`.
pub fn main(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    if args.refresh < Duration::from_millis(10) {
        anyhow::bail!("--refresh must be at least 10ms");
    }
    if let Some(every) = args.kill_leader_every {
        if every < Duration::from_millis(100) {
            anyhow::bail!("--kill-leader-every must be at least 100ms");
        }
    }
    let mut serve_args = serve_args(&args)?;
    let (manifest, created) = load_or_create_manifest(&args.data_dir, args.nodes, args.base_port)?;
    // Bound before any node starts: each is told where it is.
    let control = if args.dashboard_controls {
        let listener = control::bind()
            .map_err(|e| anyhow::anyhow!("cannot listen for the dashboard's controls: {e}"))?;
        serve_args.extend([
            "--dashboard-controls".to_string(),
            "--launcher-url".to_string(),
            format!("http://{}", listener.local_addr()?),
        ]);
        Some(listener)
    } else {
        None
    };
    let exe = std::env::current_exe().map_err(|e| {
        anyhow::anyhow!("cannot find the raftkv executable to start the nodes: {e}")
    })?;
    let data_dir = std::path::absolute(&args.data_dir).unwrap_or_else(|_| args.data_dir.clone());
    let mut cluster = LocalCluster::new(manifest.clone(), data_dir.clone(), exe, serve_args);
    if args.tls {
        cluster = cluster.with_tls(tls_dir(&data_dir, manifest.nodes)?);
    }
    cluster.check_ports()?;
    // One thread: the children's parent-death signal is tied to the thread
    // that spawned them, and this one lives until the end.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(monitor::run(cluster, args, created, control))
}

/// The arguments every `raftkv serve` child gets: the launcher's own serve
/// options, then the ones after `--`. A bad value is refused here, before
/// anything is created or started, with the server's own message.
fn serve_args(args: &ClusterArgs) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    if let Some(format) = &args.log_format {
        if args
            .serve_args
            .iter()
            .any(|a| a.starts_with("--log-format"))
        {
            anyhow::bail!("give --log-format once: before `--` or after it, not both");
        }
        let format = crate::server::LogFormat::parse(format)?;
        out.extend(["--log-format".to_string(), format.as_str().to_string()]);
    }
    if args.dashboard_controls {
        if let Some(a) = args
            .serve_args
            .iter()
            .find(|a| a.starts_with("--dashboard-controls") || a.starts_with("--launcher-url"))
        {
            anyhow::bail!(
                "{a} after `--`: the launcher sets the dashboard controls itself \
                 (use `raftkv cluster --dashboard-controls false` to turn them off)"
            );
        }
    }
    if args.tls
        && args.serve_args.iter().any(|a| {
            ["--tls-cert", "--tls-key", "--tls-ca"]
                .iter()
                .any(|f| a.starts_with(f))
        })
    {
        anyhow::bail!(
            "--tls makes and passes the certificates itself; drop --tls-cert/--tls-key/--tls-ca after `--`"
        );
    }
    out.extend(args.serve_args.iter().cloned());
    Ok(out)
}

/// `<data-dir>/tls`, with a CA and node certificates made on first use.
pub fn tls_dir(data_dir: &std::path::Path, nodes: u64) -> anyhow::Result<CertDir> {
    let dir = CertDir::new(data_dir.join("tls"));
    if !crate::certs::has_ca(&dir) {
        crate::certs::init(dir.dir(), nodes, &[], false)
            .map_err(|e| anyhow::anyhow!("cannot make the cluster's TLS certificates: {e}"))?;
    }
    Ok(dir)
}
