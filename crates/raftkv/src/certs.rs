//! `raftkv certs init`: a CA and one certificate per node, for local use
//! (a laptop cluster, a compose file, tests), made with `rcgen`.
//!
//! A production deployment would take its certificates from its own PKI;
//! what `raftkv serve` needs of them is in [`raft_runtime::tls`] (chain to
//! `--tls-ca`, usable for server and client authentication, and the DNS
//! name `raft-node-<id>` for the peer transport).
//!
//! Files written into the directory (keys with mode 0600, the rest 0644):
//!
//! | file | what |
//! |---|---|
//! | `ca.pem` | the CA certificate: `--tls-ca` of every node, `--ca` of the CLI |
//! | `ca.key` | the CA's private key: keep it private; it signs more nodes later |
//! | `node-<i>.pem`, `node-<i>.key` | node i's certificate and key (`--tls-cert`, `--tls-key`) |
//! | `client.pem`, `client.key` | a client certificate for the CLI (`--cert`, `--key`), for servers run with `--tls-client-auth` |
//!
//! A node certificate names `raft-node-<i>` (its peer identity),
//! `localhost`, `127.0.0.1`, `::1` and every `--hosts` entry (clients
//! check the name they dialed against these), and may be used both as a
//! server and as a client certificate (a node is both, towards its peers
//! and when it forwards requests to the leader). It is valid from a day ago
//! (clock skew) for 825 days; the CA for ten years.
//!
//! The CA's distinguished name is derived from its key (`raftkv CA
//! <key id>`), so [`ensure_node`] can sign a new node's certificate from
//! `ca.key` alone, without parsing `ca.pem`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration as TimeDuration, OffsetDateTime};

/// The CA certificate's file name.
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file name.
pub const CA_KEY: &str = "ca.key";
/// The client certificate's file name.
pub const CLIENT_CERT: &str = "client.pem";
/// The client key's file name.
pub const CLIENT_KEY: &str = "client.key";
/// Most nodes `certs init` makes certificates for at once.
pub const NODES_MAX: u64 = 99;
/// Most `--hosts` entries.
pub const HOSTS_MAX: usize = 64;
/// How long a node or client certificate is valid (the most browsers
/// accept; irrelevant to raftkv, a familiar bound).
const LEAF_VALIDITY_DAYS: i64 = 825;
/// How long the CA is valid.
const CA_VALIDITY_DAYS: i64 = 3650;

/// `raftkv certs ...`
#[derive(clap::Subcommand, Debug)]
pub enum CertsCommand {
    /// Generate a CA, one certificate per node and a client certificate
    /// (for local use).
    Init(InitArgs),
}

/// Arguments of `raftkv certs init`.
#[derive(clap::Args, Debug, Clone)]
pub struct InitArgs {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = "./raftkv-certs")]
    pub dir: PathBuf,
    /// Number of nodes: certificates for node 1..=N.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Extra host names or IPs every node certificate is valid for, besides
    /// localhost, 127.0.0.1 and ::1 (comma-separated, e.g. the compose
    /// service names `raftkv-1,raftkv-2,raftkv-3`).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Replace files that already exist (a new CA: every node needs its new
    /// certificate).
    #[arg(long)]
    pub force: bool,
}

/// Why certificates could not be made. Every variant names the file or
/// value.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file to be written exists (and `--force` was not given).
    #[error("{} already exists; pass --force to replace it (and every node's certificate with it), or use another --dir", .0.display())]
    Exists(PathBuf),
    /// A file or directory could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `--hosts` entry is neither an IP nor a DNS name.
    #[error("--hosts: `{0}` is not a host name or IP address")]
    BadHost(String),
    /// A count is out of range.
    #[error("{0}")]
    Range(String),
    /// The CA key could not be read back.
    #[error("the CA key {}: {detail}", .path.display())]
    CaKey { path: PathBuf, detail: String },
    /// rcgen refused the parameters.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertsError + '_ {
    move |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files of a certificate directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertDir {
    dir: PathBuf,
}

impl CertDir {
    /// The files under `dir` (nothing is read or written).
    pub fn new(dir: impl Into<PathBuf>) -> CertDir {
        CertDir { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// `ca.key`.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join(CA_KEY)
    }

    /// `node-<id>.pem`.
    pub fn node_cert(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.pem"))
    }

    /// `node-<id>.key`.
    pub fn node_key(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.key"))
    }

    /// `client.pem`.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join(CLIENT_CERT)
    }

    /// `client.key`.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join(CLIENT_KEY)
    }

    /// The `raftkv serve` flags of node `id`.
    pub fn serve_flags(&self, id: u64) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.node_cert(id).display().to_string(),
            "--tls-key".into(),
            self.node_key(id).display().to_string(),
            "--tls-ca".into(),
            self.ca_cert().display().to_string(),
        ]
    }
}

/// A `--hosts` entry as a subject alternative name.
fn san(host: &str) -> Result<SanType, CertsError> {
    let h = host.trim();
    if let Ok(ip) = h
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SanType::IpAddress(ip));
    }
    // rustls' own DNS name check: what clients will accept is what we write.
    if h.is_empty() || rustls::pki_types::DnsName::try_from(h.to_string()).is_err() {
        return Err(CertsError::BadHost(host.to_string()));
    }
    let name = h
        .to_ascii_lowercase()
        .try_into()
        .map_err(|_| CertsError::BadHost(host.to_string()))?;
    Ok(SanType::DnsName(name))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - TimeDuration::days(1);
    params.not_after = now + TimeDuration::days(days);
}

/// The CA's parameters, derived from its key alone (see the module docs).
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    let id: String = params
        .key_identifier(key)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "raftkv (local use)");
    dn.push(DnType::CommonName, format!("raftkv CA {id}"));
    params.distinguished_name = dn;
    // May sign end-entity certificates only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALIDITY_DAYS);
    params
}

fn leaf_params(
    common_name: String,
    sans: Vec<SanType>,
    ekus: Vec<ExtendedKeyUsagePurpose>,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "raftkv (local use)");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = ekus;
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_VALIDITY_DAYS);
    params
}

/// Node `id`'s certificate parameters: its peer identity, loopback and
/// `hosts`; server and client use.
fn node_params(id: u64, hosts: &[SanType]) -> Result<CertificateParams, CertsError> {
    let mut sans = vec![
        SanType::DnsName(raft_runtime::tls::peer_name(id).try_into()?),
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    for h in hosts {
        if !sans.contains(h) {
            sans.push(h.clone());
        }
    }
    Ok(leaf_params(
        format!("raftkv node {id}"),
        sans,
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    ))
}

/// Writes `bytes` to `path` through a temporary file with `mode`, so a
/// reader (a node reloading on SIGHUP) never sees half a file.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertsError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    // The mode given at creation is masked by the umask; set it exactly.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

fn write_pair(
    cert_path: &Path,
    cert_pem: &str,
    key_path: &Path,
    key: &KeyPair,
) -> Result<(), CertsError> {
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert_pem.as_bytes(), 0o644)
}

fn create_dir(dir: &Path) -> Result<(), CertsError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        // Only the owner reads the keys in it.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    }
    Ok(())
}

/// Writes a new CA, certificates for nodes `1..=nodes` and a client
/// certificate into `dir`. Refuses (writing nothing) if any of those files
/// exists, unless `force`.
pub fn init(dir: &Path, nodes: u64, hosts: &[String], force: bool) -> Result<CertDir, CertsError> {
    if nodes == 0 || nodes > NODES_MAX {
        return Err(CertsError::Range(format!(
            "--nodes must be between 1 and {NODES_MAX}, not {nodes}"
        )));
    }
    if hosts.len() > HOSTS_MAX {
        return Err(CertsError::Range(format!(
            "--hosts has {} entries; at most {HOSTS_MAX}",
            hosts.len()
        )));
    }
    let hosts = hosts
        .iter()
        .filter(|h| !h.trim().is_empty())
        .map(|h| san(h))
        .collect::<Result<Vec<_>, _>>()?;
    let out = CertDir::new(dir);
    if !force {
        let mut paths = vec![
            out.ca_cert(),
            out.ca_key(),
            out.client_cert(),
            out.client_key(),
        ];
        for id in 1..=nodes {
            paths.push(out.node_cert(id));
            paths.push(out.node_key(id));
        }
        if let Some(p) = paths.into_iter().find(|p| p.exists()) {
            return Err(CertsError::Exists(p));
        }
    }
    create_dir(dir)?;
    let ca_key = KeyPair::generate()?;
    let ca = ca_params(&ca_key);
    let ca_cert = ca.self_signed(&ca_key)?;
    write_pair(&out.ca_cert(), &ca_cert.pem(), &out.ca_key(), &ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    for id in 1..=nodes {
        issue_node(&out, &issuer, id, &hosts)?;
    }
    let key = KeyPair::generate()?;
    let cert = leaf_params(
        "raftkv client".into(),
        vec![SanType::DnsName("raftkv-client".try_into()?)],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )
    .signed_by(&key, &issuer)?;
    write_pair(&out.client_cert(), &cert.pem(), &out.client_key(), &key)?;
    Ok(out)
}

fn issue_node(
    out: &CertDir,
    issuer: &Issuer<'_, KeyPair>,
    id: u64,
    hosts: &[SanType],
) -> Result<(), CertsError> {
    let key = KeyPair::generate()?;
    let cert = node_params(id, hosts)?.signed_by(&key, issuer)?;
    write_pair(&out.node_cert(id), &cert.pem(), &out.node_key(id), &key)
}

/// Makes node `id`'s certificate with the CA in `dir` if it is missing
/// (for a node added to a local cluster after `init`). Its names are the
/// peer identity and loopback only.
pub fn ensure_node(dir: &CertDir, id: u64) -> Result<(), CertsError> {
    if dir.node_cert(id).exists() && dir.node_key(id).exists() {
        return Ok(());
    }
    let path = dir.ca_key();
    let pem = fs::read_to_string(&path).map_err(io_err(&path))?;
    let ca_key = KeyPair::from_pem(&pem).map_err(|e| CertsError::CaKey {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    let issuer = Issuer::new(ca_params(&ca_key), ca_key);
    issue_node(dir, &issuer, id, &[])
}

/// Entry point of `raftkv certs`.
pub fn main(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Init(args) => {
            let out = init(&args.dir, args.nodes, &args.hosts, args.force)?;
            let d = out.dir().display();
            println!("wrote into {d}:");
            println!(
                "  CA:      {} (key {}: keep it private)",
                out.ca_cert().display(),
                out.ca_key().display()
            );
            let mut names = vec![
                "raft-node-<i>".to_string(),
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
            ];
            names.extend(args.hosts.iter().map(|h| h.trim().to_string()));
            for id in 1..=args.nodes {
                println!(
                    "  node {id}:  {} {}",
                    out.node_cert(id).display(),
                    out.node_key(id).display()
                );
            }
            println!(
                "  client:  {} {} (for servers run with --tls-client-auth)",
                out.client_cert().display(),
                out.client_key().display()
            );
            println!("node certificates are valid for {}", names.join(", "));
            println!();
            println!("start node 1 with TLS (clients and peers):");
            println!("  raftkv serve --id 1 ... {}", out.serve_flags(1).join(" "));
            println!("and talk to it with:");
            println!(
                "  raftkv status --endpoints https://127.0.0.1:7700 --ca {}",
                out.ca_cert().display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Whether `dir` holds a CA (`ca.pem` and `ca.key`).
pub fn has_ca(dir: &CertDir) -> bool {
    dir.ca_cert().exists() && dir.ca_key().exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_runtime::tls::{TlsCerts, TlsFiles};

    #[test]
    fn init_writes_certificates_the_runtime_accepts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let out = init(&dir, 2, &["raftkv-1".into(), "10.1.2.3".into()], false).unwrap();
        for id in 1..=2 {
            let files = TlsFiles {
                cert: out.node_cert(id),
                key: out.node_key(id),
                ca: out.ca_cert(),
            };
            // Chains to the CA, usable both ways, names raft-node-<id>.
            TlsCerts::load(files.clone(), Some(raft_runtime::tls::peer_name(id))).unwrap();
            // ...and not another node's name.
            let e = TlsCerts::load(files, Some(raft_runtime::tls::peer_name(id + 1))).unwrap_err();
            assert!(e.to_string().contains("does not name raft-node-"), "{e}");
        }
        for key in [
            out.ca_key(),
            out.node_key(1),
            out.node_key(2),
            out.client_key(),
        ] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // A second run refuses to replace anything...
        let e = init(&dir, 2, &[], false).unwrap_err();
        assert!(matches!(e, CertsError::Exists(_)), "{e}");
        // ...unless forced, which makes a new CA the old node certificates
        // do not chain to.
        let old = fs::read(out.node_cert(1)).unwrap();
        init(&dir, 1, &[], true).unwrap();
        assert_ne!(old, fs::read(out.node_cert(1)).unwrap());
    }

    #[test]
    fn ensure_node_signs_with_the_existing_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let out = init(tmp.path(), 1, &[], false).unwrap();
        assert!(!out.node_cert(5).exists());
        ensure_node(&out, 5).unwrap();
        let files = TlsFiles {
            cert: out.node_cert(5),
            key: out.node_key(5),
            ca: out.ca_cert(),
        };
        TlsCerts::load(files, Some(raft_runtime::tls::peer_name(5))).unwrap();
        // An existing certificate is kept.
        let before = fs::read(out.node_cert(1)).unwrap();
        ensure_node(&out, 1).unwrap();
        assert_eq!(before, fs::read(out.node_cert(1)).unwrap());
    }

    #[test]
    fn bad_hosts_and_counts_are_refused_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        for (nodes, hosts, needle) in [
            (3, vec!["bad host".to_string()], "not a host name"),
            (0, vec![], "--nodes"),
            (100, vec![], "--nodes"),
        ] {
            let e = init(&dir, nodes, &hosts, false).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
        assert!(!dir.exists());
    }
}
