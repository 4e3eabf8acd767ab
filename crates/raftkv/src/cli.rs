//! The client commands of the `raftkv` binary: `put`, `get`, `del`, `cas`,
//! `ls`, `status`, `member ...`, `leader transfer`.
//!
//! Every command takes `--endpoints` (env `RAFTKV_ENDPOINTS`, default the
//! local cluster of `raftkv cluster`: http://127.0.0.1:7700,7701,7702).
//! Results go to stdout; errors are one line `error: ...` on stderr.
//!
//! Exit codes: 0 success; 1 the server refused or failed the operation
//! (bad request, too large, no leader, timeout...); 2 bad command line
//! (clap); 3 key not found; 4 compare-and-swap condition false; 5 no node
//! reachable; 6 the endpoint is not a raftkv server (something else
//! answered: a wrong port?); 7 TLS failed (a server certificate not from
//! `--ca`, a client certificate refused, `http://` to a TLS server or
//! `https://` to a plain one).
//!
//! `https://` endpoints need `--ca FILE` (env `RAFTKV_CA`), the CA that
//! signed the servers' certificates; `--cert FILE --key FILE`
//! (`RAFTKV_CERT`, `RAFTKV_KEY`) present a client certificate to servers
//! run with `--tls-client-auth`.
//!
//! An error that leaves a write's fate unknown (the server's
//! `indeterminate`, or an answer lost after sending) says so: the write may
//! or may not have been applied.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use serde::Serialize;

use base64::Engine as _;
use bytes::Bytes;

use crate::client::{
    self, CasAction, CasCondition, Client, ClientConfig, ClientError, Consistency, ListRequest,
    NodeStatus, LIST_PAGE_MAX,
};

/// Exit code: the operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the key does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code: the compare-and-swap condition did not hold.
pub const EXIT_CAS_MISMATCH: u8 = 4;
/// Exit code: no endpoint could be reached.
pub const EXIT_UNREACHABLE: u8 = 5;
/// Exit code: what answered is not a raftkv server.
pub const EXIT_NOT_RAFTKV: u8 = 6;
/// Exit code: TLS failed (certificate refused either way, or a scheme that
/// does not match the server).
pub const EXIT_TLS: u8 = 7;

/// What the CLI adds to an error no node could serve because no leader is
/// known anywhere.
pub const NO_MAJORITY_HINT: &str = "a majority of the cluster's nodes must be running (and able to reach each other) to elect a leader";

/// `-w`/`--write-out`: how a command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteOut {
    /// Plain lines for people and shell scripts: a value, a key per line,
    /// `OK (revision N)`; `status` and `member list`: comma-separated
    /// fields, one line per node.
    Simple,
    /// One JSON document (the API's shapes).
    Json,
    /// Aligned columns under a header.
    Table,
}

/// Largest value `put` reads from stdin or `--file`: the store's hard
/// ceiling for a value (the server's own limit, usually lower, refuses the
/// rest with its message).
const PUT_INPUT_BYTES_MAX: u64 = raftkv_state::ITEM_BYTES_CEILING;

/// Connection options shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct ConnOpts {
    /// Output format: simple, json or table. Defaults to simple, except
    /// for `status` and `member list`, which default to table.
    #[arg(short = 'w', long = "write-out", value_enum, global = true)]
    pub write_out: Option<WriteOut>,
    /// Comma-separated client endpoints (a missing scheme means http://).
    #[arg(long, global = true, env = "RAFTKV_ENDPOINTS", default_value = client::DEFAULT_ENDPOINTS)]
    pub endpoints: String,
    /// Timeout of one HTTP request, e.g. 5s or 500ms.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How long to keep retrying while the cluster has no leader.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub retry_for: Duration,
    #[command(flatten)]
    pub tls: TlsOpts,
}

/// TLS options of a client command.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsOpts {
    /// CA certificate (PEM) that signed the servers' certificates: needed
    /// for https:// endpoints.
    #[arg(long = "ca", id = "tls_ca", global = true, env = "RAFTKV_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one
    /// (--tls-client-auth); with --key.
    #[arg(long = "cert", id = "tls_cert", global = true, env = "RAFTKV_CERT")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long = "key", id = "tls_key", global = true, env = "RAFTKV_KEY")]
    pub key: Option<PathBuf>,
}

impl TlsOpts {
    /// The TLS settings, if a CA was given.
    pub fn config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, ClientError> {
        match &self.ca {
            Some(ca) => client::tls_config(ca, self.cert.as_deref(), self.key.as_deref()).map(Some),
            None if self.cert.is_some() || self.key.is_some() => Err(ClientError::Invalid(
                "--cert and --key need --ca (the CA that signed the servers' certificates)".into(),
            )),
            None => Ok(None),
        }
    }
}

impl ConnOpts {
    /// The output format: `-w`, else `--json` (the older spelling of `-w
    /// json`), else the command's default.
    pub fn format(&self, json_flag: bool, default: WriteOut) -> WriteOut {
        match (self.write_out, json_flag) {
            (Some(w), _) => w,
            (None, true) => WriteOut::Json,
            (None, false) => default,
        }
    }

    /// Builds the client these options describe.
    pub fn client(&self) -> Result<Client, ClientError> {
        let endpoints = client::parse_endpoints(&self.endpoints)?;
        let mut config = ClientConfig::new(endpoints);
        config.request_timeout = self.timeout;
        config.connect_timeout = self.timeout.min(Duration::from_secs(1));
        config.retry_deadline = self.retry_for;
        config.tls = self.tls.config()?;
        Client::new(config)
    }
}

/// Client subcommands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Set KEY to VALUE; without VALUE, to the bytes of --file or of
    /// stdin (any bytes: a binary value is sent base64-encoded).
    Put {
        key: String,
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        #[command(flatten)]
        conn: ConnOpts,
    },
    /// Print the value of KEY (exit 3 if absent).
    Get {
        key: String,
        /// Read consistency.
        #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
        consistency: Consistency,
        /// Same as -w json.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnOpts,
    },
    /// Delete KEY (exit 3 if absent).
    Del {
        key: String,
        #[command(flatten)]
        conn: ConnOpts,
    },
    /// Compare-and-swap: change KEY only if a condition holds (exit 4 if not).
    #[command(group(ArgGroup::new("condition").required(true).multiple(false)
        .args(["expected_value", "expected_absent", "expected_mod_revision"])))]
    #[command(group(ArgGroup::new("action").required(true).multiple(false)
        .args(["value", "delete"])))]
    Cas {
        key: String,
        /// Condition: the key holds exactly this value.
        #[arg(long)]
        expected_value: Option<String>,
        /// Condition: the key is absent.
        #[arg(long)]
        expected_absent: bool,
        /// Condition: the key was last modified at this revision.
        #[arg(long)]
        expected_mod_revision: Option<u64>,
        /// Action: set the key to this value.
        #[arg(long)]
        value: Option<String>,
        /// Action: delete the key.
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        conn: ConnOpts,
    },
    /// List keys (and values) in key order: a prefix and/or a range
    /// [--start, --range-end), fetched in pages of at most 1000 (the
    /// server's limit) as --limit needs.
    Ls {
        /// Only keys starting with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only keys at or after this one.
        #[arg(long)]
        start: Option<String>,
        /// Only keys before this one (exclusive).
        #[arg(long)]
        range_end: Option<String>,
        /// Only keys strictly after this one: resume a listing from the
        /// `next` key it ended on.
        #[arg(long)]
        after: Option<String>,
        /// At most this many keys; 0 lists every key in the range.
        #[arg(long, default_value_t = 100, conflicts_with = "count_only")]
        limit: u64,
        /// Read consistency.
        #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
        consistency: Consistency,
        /// Same as -w json.
        #[arg(long)]
        json: bool,
        /// Print keys only.
        #[arg(long, conflicts_with = "count_only")]
        keys_only: bool,
        /// Print only how many keys the range holds.
        #[arg(long)]
        count_only: bool,
        #[command(flatten)]
        conn: ConnOpts,
    },
    /// Show the status of every node (unreachable ones too).
    Status {
        /// Same as -w json.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnOpts,
    },
    /// List, add, remove or promote cluster members.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
        #[command(flatten)]
        conn: ConnOpts,
    },
    /// Leadership commands.
    Leader {
        #[command(subcommand)]
        command: LeaderCommand,
        #[command(flatten)]
        conn: ConnOpts,
    },
    /// Print this CLI's version and git revision; with --endpoints, each
    /// server's too (exit 1 if one does not answer, 5 if none does).
    Version {
        /// Also ask these servers (comma-separated) what they run. Not
        /// read from RAFTKV_ENDPOINTS: without the flag, no network.
        #[arg(long)]
        endpoints: Option<String>,
        /// Timeout of one HTTP request, e.g. 5s or 500ms.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        tls: TlsOpts,
        /// Output format: simple, json or table.
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
        write_out: WriteOut,
    },
}

/// `raftkv member ...`
#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// List the members.
    List {
        /// Same as -w json.
        #[arg(long)]
        json: bool,
    },
    /// Add a node (start it first with `raftkv serve --join`).
    Add {
        id: u64,
        /// The node's peer address, host:port.
        #[arg(long)]
        peer_addr: String,
        /// The node's client address, host:port.
        #[arg(long)]
        client_addr: String,
        /// Add as a non-voting learner (promote it later).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node.
    Remove { id: u64 },
    /// Promote a learner to voter.
    Promote { id: u64 },
}

/// `raftkv leader ...`
#[derive(Subcommand, Debug)]
pub enum LeaderCommand {
    /// Hand leadership to node ID.
    Transfer { id: u64 },
}

/// Parses durations like `10s`, `250ms`, `1.5s`, `2m`, `1h`, `100us`; a bare
/// number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s, 250ms, 2m"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {s:?}: use ms, s, m or h"
            ))
        }
    };
    let secs = value * seconds_per_unit;
    // A year is far past anything a CLI run needs; the bound keeps
    // Duration::from_secs_f64 away from its panic on overflow.
    if !secs.is_finite() || !(0.0..=365.0 * 24.0 * 3600.0).contains(&secs) {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Entry point of the client commands.
pub fn main(cmd: ClientCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(run(cmd));
    Ok(ExitCode::from(code))
}

/// Runs one command; prints its output or its error; returns the exit code.
pub async fn run(cmd: ClientCommand) -> u8 {
    match execute(cmd).await {
        Ok(code) => code,
        Err(e) => {
            let hint = if e.reason() == Some("no_leader") {
                format!(" — {NO_MAJORITY_HINT}; see `raftkv status`")
            } else if matches!(e, ClientError::Api { .. }) && e.is_indeterminate() {
                " — the request may or may not have been applied".to_string()
            } else {
                String::new()
            };
            eprintln!("error: {e}{hint}");
            exit_code(&e)
        }
    }
}

/// The exit code for an error.
pub fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::KeyNotFound { .. } => EXIT_NOT_FOUND,
        ClientError::CasMismatch { .. } => EXIT_CAS_MISMATCH,
        ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
        ClientError::NotRaftkv { .. } => EXIT_NOT_RAFTKV,
        ClientError::Tls { .. } => EXIT_TLS,
        _ => EXIT_FAILED,
    }
}

async fn execute(cmd: ClientCommand) -> Result<u8, ClientError> {
    use WriteOut::{Json, Simple, Table};
    match cmd {
        ClientCommand::Put {
            key,
            value,
            file,
            conn,
        } => {
            let format = conn.format(false, Simple);
            let value = put_value(value, file.as_deref())?;
            let client = conn.client()?;
            let r = client
                .random_session()
                .put_bytes(key.as_bytes(), &value)
                .await?;
            match format {
                Simple => println!("OK (revision {})", r.revision),
                Json => println!("{}", to_json(&r)),
                Table => print!(
                    "{}",
                    render_table(
                        &["REVISION", "CREATE_REVISION", "VERSION"],
                        &[vec![
                            r.revision.to_string(),
                            r.create_revision.to_string(),
                            r.version.to_string()
                        ]]
                    )
                ),
            }
        }
        ClientCommand::Get {
            key,
            consistency,
            json,
            conn,
        } => {
            let format = conn.format(json, Simple);
            let kv = conn.client()?.get(&key, consistency).await?;
            match format {
                Simple => print_value(&kv.value),
                Json => println!("{}", to_json(&kv)),
                Table => print!(
                    "{}",
                    render_table(
                        &["KEY", "VALUE", "CREATE_REVISION", "MOD_REVISION", "VERSION"],
                        &[kv_row(&kv, false)]
                    )
                ),
            }
        }
        ClientCommand::Del { key, conn } => {
            let format = conn.format(false, Simple);
            let r = conn.client()?.random_session().delete(&key).await?;
            match format {
                Simple => println!("deleted {key} (revision {})", r.revision),
                Json => println!("{}", to_json(&r)),
                Table => print!(
                    "{}",
                    render_table(&["KEY", "REVISION"], &[vec![key, r.revision.to_string()]])
                ),
            }
        }
        ClientCommand::Cas {
            key,
            expected_value,
            expected_absent,
            expected_mod_revision,
            value,
            delete,
            conn,
        } => {
            let format = conn.format(false, Simple);
            let condition = match (expected_value, expected_absent, expected_mod_revision) {
                (Some(v), false, None) => CasCondition::Value(v),
                (None, true, None) => CasCondition::Absent,
                (None, false, Some(r)) => CasCondition::ModRevision(r),
                // clap's "condition" group makes exactly one present.
                _ => return Err(ClientError::Invalid("give exactly one condition".into())),
            };
            let action = match (value, delete) {
                (Some(v), false) => CasAction::Put(v),
                (None, true) => CasAction::Delete,
                _ => {
                    return Err(ClientError::Invalid(
                        "give exactly one of --value, --delete".into(),
                    ))
                }
            };
            let r = conn
                .client()?
                .random_session()
                .cas(&key, &condition, &action)
                .await?;
            if r.succeeded {
                match format {
                    Simple => println!("OK (revision {})", r.revision),
                    Json => println!("{}", to_json(&r)),
                    Table => print!(
                        "{}",
                        render_table(
                            &["SUCCEEDED", "REVISION"],
                            &[vec!["true".into(), r.revision.to_string()]]
                        )
                    ),
                }
            } else {
                // The API answers a failed CAS with 409; a 200 that says
                // "not succeeded" is treated the same way.
                eprintln!("error: compare-and-swap failed");
                return Ok(EXIT_CAS_MISMATCH);
            }
        }
        ClientCommand::Ls {
            prefix,
            start,
            range_end,
            after,
            limit,
            consistency,
            json,
            keys_only,
            count_only,
            conn,
        } => {
            let format = conn.format(json, Simple);
            let request = ListRequest {
                prefix: Bytes::from(prefix),
                start: start.map(Bytes::from),
                range_end: range_end.map(Bytes::from),
                after: after.map(Bytes::from),
                limit: None,
                keys_only,
                count_only,
                consistency,
            };
            let client = conn.client()?;
            if count_only {
                count_keys(&client, request, format).await?;
            } else {
                list_keys(&client, request, limit, format).await?;
            }
        }
        ClientCommand::Status { json, conn } => {
            let format = conn.format(json, Table);
            let client = conn.client()?;
            let rows = gather_status(&client, conn.timeout.min(Duration::from_secs(2))).await;
            match format {
                Json => println!("{}", status_json(&rows)),
                Table => print!("{}", render_status_table(&rows)),
                Simple => print!("{}", render_status_simple(&rows)),
            }
            let answered: Vec<&NodeStatus> =
                rows.iter().filter_map(|r| r.status.as_ref().ok()).collect();
            if answered.is_empty() {
                // Nothing to show: say why, as every other command would.
                let foreign = rows.iter().find_map(|r| match &r.status {
                    Err(e @ (ClientError::NotRaftkv { .. } | ClientError::Tls { .. })) => {
                        Some(e.clone())
                    }
                    _ => None,
                });
                return Err(foreign.unwrap_or_else(|| ClientError::Unreachable {
                    endpoints: client.endpoints().to_vec(),
                }));
            }
            if answered.iter().all(|s| s.leader.is_none()) {
                eprintln!("note: no node knows a leader: {NO_MAJORITY_HINT}");
            }
        }
        ClientCommand::Member { command, conn } => {
            let client = conn.client()?;
            match command {
                MemberCommand::List { json } => {
                    let members = client.members().await?;
                    match conn.format(json, Table) {
                        Json => {
                            println!("{}", to_json(&serde_json::json!({ "members": members })))
                        }
                        Table => {
                            println!(
                                "{:<6} {:<8} {:<22} {:<22}",
                                "ID", "ROLE", "PEER ADDR", "CLIENT ADDR"
                            );
                            for m in members {
                                println!(
                                    "{:<6} {:<8} {:<22} {:<22}",
                                    m.id, m.role, m.peer_addr, m.client_addr
                                );
                            }
                        }
                        Simple => {
                            for m in members {
                                println!(
                                    "{}, {}, {}, {}",
                                    m.id, m.role, m.peer_addr, m.client_addr
                                );
                            }
                        }
                    }
                }
                MemberCommand::Add {
                    id,
                    peer_addr,
                    client_addr,
                    learner,
                } => {
                    if id == 0 {
                        return Err(ClientError::Invalid("node ids start at 1".into()));
                    }
                    client
                        .add_member(id, &peer_addr, &client_addr, learner)
                        .await?;
                    let role = if learner { "learner" } else { "voter" };
                    print_action(
                        conn.format(false, Simple),
                        &format!("added node {id} as {role}"),
                        &["ID", "ROLE"],
                        &[id.to_string(), role.to_string()],
                        serde_json::json!({"added": id, "role": role}),
                    );
                }
                MemberCommand::Remove { id } => {
                    client.remove_member(id).await?;
                    print_action(
                        conn.format(false, Simple),
                        &format!("removed node {id}"),
                        &["REMOVED"],
                        &[id.to_string()],
                        serde_json::json!({ "removed": id }),
                    );
                }
                MemberCommand::Promote { id } => {
                    client.promote_member(id).await?;
                    print_action(
                        conn.format(false, Simple),
                        &format!("promoted node {id} to voter"),
                        &["PROMOTED"],
                        &[id.to_string()],
                        serde_json::json!({ "promoted": id }),
                    );
                }
            }
        }
        ClientCommand::Leader {
            command: LeaderCommand::Transfer { id },
            conn,
        } => {
            let leader = conn.client()?.transfer_leader(id).await?;
            print_action(
                conn.format(false, Simple),
                &format!("node {leader} is the leader"),
                &["LEADER"],
                &[leader.to_string()],
                serde_json::json!({ "leader": leader }),
            );
        }
        ClientCommand::Version {
            endpoints,
            timeout,
            tls,
            write_out,
        } => {
            return version(endpoints.as_deref(), timeout, &tls, write_out).await;
        }
    }
    Ok(0)
}

/// Prints the result of a command that did one thing: `simple` as a
/// sentence, `table` as one row, `json` as `json`.
fn print_action(
    format: WriteOut,
    sentence: &str,
    headers: &[&str],
    row: &[String],
    json: serde_json::Value,
) {
    match format {
        WriteOut::Simple => println!("{sentence}"),
        WriteOut::Json => println!("{}", to_json(&json)),
        WriteOut::Table => print!("{}", render_table(headers, &[row.to_vec()])),
    }
}

/// The value `put` stores: the argument, the file, or stdin (not a
/// terminal: a command waiting for typed input looks hung).
fn put_value(
    value: Option<String>,
    file: Option<&std::path::Path>,
) -> Result<Vec<u8>, ClientError> {
    use std::io::{IsTerminal, Read};
    let too_large = || {
        ClientError::Invalid(format!(
            "the value is over {PUT_INPUT_BYTES_MAX} bytes, the most a value can be"
        ))
    };
    if let Some(v) = value {
        return Ok(v.into_bytes());
    }
    let mut bytes = Vec::new();
    if let Some(path) = file {
        let f = std::fs::File::open(path)
            .map_err(|e| ClientError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        f.take(PUT_INPUT_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ClientError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    } else {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(ClientError::Invalid(
                "no value: give VALUE, --file FILE, or pipe the value on stdin".into(),
            ));
        }
        stdin
            .lock()
            .take(PUT_INPUT_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ClientError::Invalid(format!("cannot read stdin: {e}")))?;
    }
    if bytes.len() as u64 > PUT_INPUT_BYTES_MAX {
        return Err(too_large());
    }
    Ok(bytes)
}

/// A key-value as table cells (invalid UTF-8 shown replaced: a table is
/// for reading; `-w json` carries exact bytes).
fn kv_row(kv: &client::KeyValue, keys_only: bool) -> Vec<String> {
    let mut row = vec![kv.key_lossy().into_owned()];
    if !keys_only {
        row.push(kv.value_lossy().into_owned());
    }
    row.extend([
        kv.create_revision.to_string(),
        kv.mod_revision.to_string(),
        kv.version.to_string(),
    ]);
    row
}

/// Columns aligned under a header, two spaces apart.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(w - cell.chars().count()));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `raftkv version [--endpoints ...]`: the CLI's build, then one line per
/// server: `ENDPOINT VERSION (REVISION, PROFILE, RUSTC)` or its error.
async fn version(
    endpoints: Option<&str>,
    timeout: Duration,
    tls: &TlsOpts,
    format: WriteOut,
) -> Result<u8, ClientError> {
    use crate::version::BuildInfo;
    let own = BuildInfo::current();
    let mut rows: Vec<(String, Result<BuildInfo, ClientError>)> = Vec::new();
    if let Some(list) = endpoints {
        let endpoints = client::parse_endpoints(list)?;
        let mut config = ClientConfig::new(endpoints.clone());
        config.request_timeout = timeout;
        config.connect_timeout = timeout.min(Duration::from_secs(1));
        config.tls = tls.config()?;
        let client = Client::new(config)?;
        for ep in endpoints {
            let answer = client.version_of(&ep).await;
            rows.push((ep, answer));
        }
    }
    match format {
        WriteOut::Simple => {
            println!("raftkv {}", own.one_line());
            for (ep, answer) in &rows {
                match answer {
                    Ok(b) => println!("{ep} {}", b.one_line()),
                    Err(e) => println!("{ep} error: {}", describe_row_error(e)),
                }
            }
        }
        WriteOut::Json => {
            let servers: Vec<serde_json::Value> = rows
                .iter()
                .map(|(ep, answer)| match answer {
                    Ok(b) => serde_json::json!({"endpoint": ep, "build": b}),
                    Err(e) => serde_json::json!({"endpoint": ep, "error": describe_row_error(e)}),
                })
                .collect();
            println!(
                "{}",
                to_json(&serde_json::json!({"client": own, "servers": servers}))
            );
        }
        WriteOut::Table => {
            let cells = |who: &str, b: &BuildInfo| {
                vec![
                    who.to_string(),
                    b.version.clone(),
                    b.revision.clone(),
                    b.profile.clone(),
                    b.rustc.clone(),
                ]
            };
            let mut table = vec![cells("(this cli)", &own)];
            for (ep, answer) in &rows {
                match answer {
                    Ok(b) => table.push(cells(ep, b)),
                    Err(e) => table.push(vec![
                        ep.clone(),
                        format!("error: {}", describe_row_error(e)),
                    ]),
                }
            }
            print!(
                "{}",
                render_table(
                    &["ENDPOINT", "VERSION", "REVISION", "PROFILE", "RUSTC"],
                    &table
                )
            );
        }
    }
    let answered = rows.iter().filter(|(_, a)| a.is_ok()).count();
    match rows.into_iter().find_map(|(_, a)| a.err()) {
        None => Ok(0),
        Some(e) if answered == 0 => Err(e),
        Some(_) => Ok(EXIT_FAILED),
    }
}

/// `ls --count-only`: sums the counts of every page.
async fn count_keys(
    client: &Client,
    mut request: ListRequest,
    format: WriteOut,
) -> Result<(), ClientError> {
    let mut count = 0u64;
    let revision = loop {
        let page = client.list_range(&request).await?;
        count += page.count.unwrap_or(0);
        match page.next_key()? {
            Some(next) if page.more => request.after = Some(next),
            _ => break page.revision,
        }
    };
    match format {
        WriteOut::Simple => println!("{count}"),
        WriteOut::Json => println!(
            "{}",
            to_json(&serde_json::json!({"count": count, "revision": revision}))
        ),
        WriteOut::Table => print!(
            "{}",
            render_table(
                &["COUNT", "REVISION"],
                &[vec![count.to_string(), revision.to_string()]]
            )
        ),
    }
    Ok(())
}

/// `ls`: pages of at most [`LIST_PAGE_MAX`] keys until `limit` (0: no
/// limit) or the range's end, printed as they arrive (so memory stays
/// bounded by one page whatever the limit).
async fn list_keys(
    client: &Client,
    mut request: ListRequest,
    limit: u64,
    format: WriteOut,
) -> Result<(), ClientError> {
    let json = format == WriteOut::Json;
    use std::io::Write;
    let mut remaining = if limit == 0 { u64::MAX } else { limit };
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) ends the output, not the command.
    let mut w = |bytes: &[u8]| {
        let _ = out.write_all(bytes);
    };
    if json {
        w(b"{\"kvs\": [");
    }
    let (more, next, revision) = loop {
        request.limit = Some(remaining.min(LIST_PAGE_MAX));
        let page = client.list_range(&request).await?;
        if format == WriteOut::Table {
            // Aligned within each page (a listing is printed page by page).
            let mut headers = vec!["KEY"];
            if !request.keys_only {
                headers.push("VALUE");
            }
            headers.extend(["CREATE_REVISION", "MOD_REVISION", "VERSION"]);
            let rows: Vec<Vec<String>> = page
                .kvs
                .iter()
                .map(|kv| kv_row(kv, request.keys_only))
                .collect();
            let table = render_table(&headers, &rows);
            // The header once, on the first page.
            let body = if printed == 0 {
                &table[..]
            } else {
                table.split_once('\n').map_or("", |(_, rest)| rest)
            };
            w(body.as_bytes());
            printed += page.kvs.len() as u64;
        }
        for kv in page.kvs.iter().filter(|_| format != WriteOut::Table) {
            if json {
                let mut item = serde_json::to_value(kv).unwrap_or_default();
                if request.keys_only {
                    if let Some(o) = item.as_object_mut() {
                        o.remove("value");
                        o.remove("value_b64");
                    }
                }
                w(if printed == 0 { b"\n  " } else { b",\n  " });
                w(item.to_string().as_bytes());
            } else if request.keys_only {
                w(&kv.key);
                w(b"\n");
            } else {
                w(&kv.key);
                w(b"\t");
                w(&kv.value);
                w(b"\n");
            }
            printed += 1;
        }
        remaining = remaining.saturating_sub(page.kvs.len() as u64);
        let next = page.next_key()?;
        match next {
            Some(next) if page.more && remaining > 0 => request.after = Some(next),
            next => break (page.more, next, page.revision),
        }
    };
    if json {
        let mut tail = serde_json::Map::new();
        tail.insert("more".into(), more.into());
        if let Some(next) = &next {
            match std::str::from_utf8(next) {
                Ok(s) => tail.insert("next".into(), s.into()),
                Err(_) => tail.insert(
                    "next_b64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(next)
                        .into(),
                ),
            };
        }
        tail.insert("revision".into(), revision.into());
        let tail = serde_json::Value::Object(tail).to_string();
        // `{"more":..}` spliced after the array: drop the object's `{`.
        w(b"\n], ");
        w(&tail.as_bytes()[1..]);
        w(b"\n");
    } else if more {
        let after = next
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .unwrap_or_default();
        eprintln!("(more keys follow; raise --limit, or continue with --after {after:?})");
    }
    Ok(())
}

/// Writes a value's bytes as they are, then a newline.
fn print_value(value: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout (`| head`) is not this command's failure.
    let _ = out.write_all(value).and_then(|()| out.write_all(b"\n"));
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing plain data structs with string keys cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// One row of the status table: an endpoint and what it said.
#[derive(Debug, Clone)]
pub struct StatusRow {
    /// The endpoint asked.
    pub endpoint: String,
    /// Its status, or why it could not be had.
    pub status: Result<NodeStatus, ClientError>,
}

/// What the status table says about an endpoint that gave no status.
pub fn describe_row_error(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { .. } => "unreachable".to_string(),
        ClientError::NotRaftkv {
            status,
            content_type,
            ..
        } => format!("not a raftkv server (it answered {status} {content_type})"),
        ClientError::Tls { problem, .. } => format!("TLS: {problem}"),
        other => other.to_string(),
    }
}

/// Asks every endpoint, and every member's client address not among them,
/// for its status, concurrently, each within `timeout`.
pub async fn gather_status(client: &Client, timeout: Duration) -> Vec<StatusRow> {
    let mut endpoints = client.endpoints().to_vec();
    let first = poll_endpoints(client, &endpoints, timeout).await;
    // Members the endpoint list does not name (a node added later).
    let mut extra = Vec::new();
    // Only when some node answered is the membership worth asking for.
    if first.iter().any(|r| r.status.is_ok()) {
        if let Ok(Ok(members)) = tokio::time::timeout(timeout, client.members()).await {
            for m in members {
                let ep = client.endpoint_for(&m.client_addr);
                if !endpoints.contains(&ep) {
                    endpoints.push(ep.clone());
                    extra.push(ep);
                }
            }
        }
    }
    let mut rows = first;
    if !extra.is_empty() {
        rows.extend(poll_endpoints(client, &extra, timeout).await);
    }
    rows
}

/// Polls the given endpoints concurrently.
pub async fn poll_endpoints(
    client: &Client,
    endpoints: &[String],
    timeout: Duration,
) -> Vec<StatusRow> {
    let mut set = tokio::task::JoinSet::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let client = client.clone();
        let ep = ep.clone();
        set.spawn(async move {
            let status = match tokio::time::timeout(timeout, client.status_of(&ep)).await {
                Ok(result) => result,
                Err(_) => Err(ClientError::Ambiguous {
                    endpoint: ep.clone(),
                    detail: "no answer (timeout)".to_string(),
                }),
            };
            (
                i,
                StatusRow {
                    endpoint: ep,
                    status,
                },
            )
        });
    }
    let mut rows: Vec<Option<StatusRow>> = vec![None; endpoints.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, row)) = joined {
            rows[i] = Some(row);
        }
    }
    rows.into_iter()
        .zip(endpoints)
        .map(|(row, ep)| {
            row.unwrap_or_else(|| StatusRow {
                endpoint: ep.clone(),
                status: Err(ClientError::Invalid("poll failed".into())),
            })
        })
        .collect()
}

/// The status table, one line per endpoint, with a header.
pub fn render_status_table(rows: &[StatusRow]) -> String {
    use std::fmt::Write;
    let width = rows
        .iter()
        .map(|r| r.endpoint.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>4}  {:<14}  {:>6}  {:>6}  {:>9}  {:>9}  {:>9}",
        "ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST"
    );
    for row in rows {
        match &row.status {
            Ok(s) => {
                let leader = s
                    .leader
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into());
                let role = if s.members.learners.contains(&s.id) && s.role == "follower" {
                    "learner".to_string()
                } else {
                    s.role.clone()
                };
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>4}  {:<14}  {:>6}  {:>6}  {:>9}  {:>9}  {:>9}",
                    row.endpoint,
                    s.id,
                    role,
                    s.term,
                    leader,
                    s.commit_index,
                    s.applied_index,
                    s.last_index
                );
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>4}  {}",
                    row.endpoint,
                    "-",
                    describe_row_error(e)
                );
            }
        }
    }
    out
}

/// The status rows as `-w simple`: one comma-separated line per endpoint
/// (`endpoint, id, role, term, leader, commit, applied, last`), or the
/// endpoint and its error.
pub fn render_status_simple(rows: &[StatusRow]) -> String {
    let mut out = String::new();
    for row in rows {
        match &row.status {
            Ok(s) => out.push_str(&format!(
                "{}, {}, {}, {}, {}, {}, {}, {}\n",
                row.endpoint,
                s.id,
                s.role,
                s.term,
                s.leader.map_or_else(|| "-".to_string(), |l| l.to_string()),
                s.commit_index,
                s.applied_index,
                s.last_index
            )),
            Err(e) => out.push_str(&format!(
                "{}, error: {}\n",
                row.endpoint,
                describe_row_error(e)
            )),
        }
    }
    out
}

/// The status rows as JSON: `[{"endpoint": .., "status": {..}} | {"endpoint": .., "error": ".."}]`.
pub fn status_json(rows: &[StatusRow]) -> String {
    let value: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| match &r.status {
            Ok(s) => serde_json::json!({ "endpoint": r.endpoint, "status": s }),
            Err(e) => {
                serde_json::json!({ "endpoint": r.endpoint, "error": describe_row_error(e) })
            }
        })
        .collect();
    to_json(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("1e400s").is_err());
        assert!(parse_duration("99999999h").is_err());
    }

    #[test]
    fn status_table_shows_unreachable_nodes() {
        let rows = vec![
            StatusRow {
                endpoint: "http://127.0.0.1:1".into(),
                status: Ok(NodeStatus {
                    id: 1,
                    role: "leader".into(),
                    term: 3,
                    leader: Some(1),
                    commit_index: 20,
                    applied_index: 19,
                    last_index: 21,
                    snapshot_index: 0,
                    members: Default::default(),
                    peers: vec![],
                }),
            },
            StatusRow {
                endpoint: "http://127.0.0.1:2".into(),
                status: Err(ClientError::Unreachable {
                    endpoints: vec!["http://127.0.0.1:2".into()],
                }),
            },
            StatusRow {
                endpoint: "http://127.0.0.1:3".into(),
                status: Err(ClientError::NotRaftkv {
                    endpoint: "http://127.0.0.1:3".into(),
                    status: 404,
                    content_type: "text/html".into(),
                }),
            },
        ];
        let table = render_status_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].contains("leader") && lines[1].contains("20") && lines[1].contains("19"));
        assert!(lines[2].contains("unreachable"));
        assert!(
            lines[3].contains("not a raftkv server (it answered 404 text/html)"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&status_json(&rows)).unwrap();
        assert_eq!(json[0]["status"]["term"], 3);
        assert_eq!(json[1]["error"], "unreachable");
        assert_eq!(
            json[2]["error"],
            "not a raftkv server (it answered 404 text/html)"
        );
    }
}
