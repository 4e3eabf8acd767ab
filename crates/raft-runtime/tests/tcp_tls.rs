//! Mutual TLS on the peer transport, over real loopback sockets: nodes of
//! the cluster CA talk; a node whose certificate comes from another CA is
//! refused whichever side dials, a plain-TCP node is refused, a
//! certificate naming another node than the one the handshake claims is
//! refused, and each refusal is counted in `raft_peer_tls_refused_total`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{init_tracing, CLUSTER_ID};
use raft_core::{Message, MessageBody};
use raft_runtime::frame::{encode_frame, Hello, WireFrame};
use raft_runtime::metrics::ReasonLabel;
use raft_runtime::tls::peer_name;
use raft_runtime::{
    Inbound, Metrics, PeerTls, TcpConfig, TcpTransport, TlsCerts, TlsFiles, Transport,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// Writes node `id`'s certificate (signed by `ca`, naming `raft-node-<id>`,
/// server and client use) and key, and a CA file holding `trusted`, under
/// `dir`; returns the files.
fn node_files(dir: &Path, tag: &str, ca: &Ca, id: u64, trusted: &[&Ca]) -> TlsFiles {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![peer_name(id)]).unwrap();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let files = TlsFiles {
        cert: dir.join(format!("{tag}-node-{id}.pem")),
        key: dir.join(format!("{tag}-node-{id}.key")),
        ca: dir.join(format!("{tag}-ca-{id}.pem")),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    let bundle: String = trusted.iter().map(|c| c.pem.as_str()).collect();
    std::fs::write(&files.ca, bundle).unwrap();
    files
}

fn peer_tls(files: TlsFiles, id: u64) -> PeerTls {
    PeerTls::new(TlsCerts::load(files, Some(peer_name(id))).unwrap()).unwrap()
}

async fn transport(
    id: u64,
    peers: &[(u64, SocketAddr)],
    tls: Option<PeerTls>,
) -> (TcpTransport, Inbound, Metrics) {
    let mut cfg = TcpConfig::new(CLUSTER_ID, id, "127.0.0.1:0".parse().unwrap());
    cfg.peers = peers.iter().map(|&(i, a)| (i, a.into())).collect();
    cfg.tls = tls;
    // Refused peers are retried soon, so a test sees several refusals.
    cfg.reconnect_backoff_max = Duration::from_millis(100);
    let metrics = Metrics::new();
    let (t, inbound) = TcpTransport::start(cfg, metrics.clone()).await.unwrap();
    (t, inbound, metrics)
}

fn probe(from: u64, to: u64) -> Message {
    Message {
        from,
        to,
        term: 1,
        body: MessageBody::TimeoutNow,
    }
}

/// Sends `msg` through `t` every 20 ms until `inbound` receives it, or
/// `within` passes.
async fn delivered(
    t: &mut TcpTransport,
    inbound: &mut Inbound,
    msg: Message,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        t.send(msg.clone());
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(20), inbound.recv()).await {
            assert_eq!((m.from, m.to), (msg.from, msg.to));
            return true;
        }
    }
    false
}

fn tls_refused(m: &Metrics, reason: &str) -> u64 {
    m.peer_tls_refused
        .get(&ReasonLabel {
            reason: reason.into(),
        })
        .map_or(0, |c| c.get())
}

fn tls_refused_total(m: &Metrics) -> u64 {
    [
        "untrusted_certificate",
        "no_certificate",
        "refused_by_peer",
        "not_tls",
        "identity",
        "timeout",
        "handshake_failed",
    ]
    .iter()
    .map(|r| tls_refused(m, r))
    .sum()
}

/// Waits until `f` holds (checking every 10 ms) or panics after 10 s.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_peers_of_the_cluster_ca_get_through_either_way() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (good, other) = (ca("cluster CA"), ca("another CA"));
    let (t1, mut in1, m1) = transport(
        1,
        &[],
        Some(peer_tls(node_files(dir.path(), "a", &good, 1, &[&good]), 1)),
    )
    .await;
    let addr1 = t1.local_addr();

    // A node of the cluster CA reaches node 1.
    let (mut t3, _in3, m3) = transport(
        3,
        &[(1, addr1)],
        Some(peer_tls(node_files(dir.path(), "a", &good, 3, &[&good]), 3)),
    )
    .await;
    assert!(delivered(&mut t3, &mut in1, probe(3, 1), Duration::from_secs(10)).await);
    assert_eq!(tls_refused_total(&m1) + tls_refused_total(&m3), 0);

    // A node whose certificate is from another CA (and which trusts both
    // CAs, so that it goes as far as showing its certificate) is refused by
    // node 1's listener...
    let rogue = node_files(dir.path(), "b", &other, 2, &[&good, &other]);
    let (mut t2, mut in2, m2) = transport(2, &[(1, addr1)], Some(peer_tls(rogue, 2))).await;
    assert!(!delivered(&mut t2, &mut in1, probe(2, 1), Duration::from_secs(1)).await);
    eventually("node 1 counts the untrusted client certificate", || {
        tls_refused(&m1, "untrusted_certificate") >= 1
    })
    .await;

    // ...and node 1, dialing it, refuses its server certificate.
    let before = tls_refused(&m1, "untrusted_certificate");
    let mut t1 = t1;
    t1.set_peer_addr(2, Some(t2.local_addr().into()));
    assert!(!delivered(&mut t1, &mut in2, probe(1, 2), Duration::from_secs(1)).await);
    eventually("node 1 counts the untrusted server certificate", || {
        tls_refused(&m1, "untrusted_certificate") > before
    })
    .await;
    // The rogue node saw node 1 abort the handshake.
    assert!(tls_refused(&m2, "refused_by_peer") >= 1);

    // The cluster's own traffic still flows.
    assert!(delivered(&mut t3, &mut in1, probe(3, 1), Duration::from_secs(10)).await);

    // A node without TLS is refused, and node 1 says why.
    let (mut t4, _in4, _) = transport(4, &[(1, addr1)], None).await;
    assert!(!delivered(&mut t4, &mut in1, probe(4, 1), Duration::from_millis(500)).await);
    eventually("node 1 counts the plain-TCP node", || {
        tls_refused(&m1, "not_tls") >= 1
    })
    .await;

    // Node 1 dialing a plain-TCP node fails its handshake (counted too).
    let (t5, mut in5, _) = transport(5, &[], None).await;
    let before = tls_refused_total(&m1);
    t1.set_peer_addr(5, Some(t5.local_addr().into()));
    assert!(!delivered(&mut t1, &mut in5, probe(1, 5), Duration::from_millis(500)).await);
    eventually("node 1 counts the failed handshake", || {
        tls_refused_total(&m1) > before
    })
    .await;

    for t in [&mut t1, &mut t2, &mut t3, &mut t4] {
        t.shutdown();
        t.closed().await;
    }
}

/// A connection with node 3's certificate that claims, in its handshake
/// frame, to be node 2 is refused: the certificate is the identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_speaks_only_for_the_node_it_names() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let good = ca("cluster CA");
    let (mut t1, mut in1, m1) = transport(
        1,
        &[],
        Some(peer_tls(node_files(dir.path(), "a", &good, 1, &[&good]), 1)),
    )
    .await;
    let node3 = TlsCerts::load(
        node_files(dir.path(), "a", &good, 3, &[&good]),
        Some(peer_name(3)),
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(node3.client_config().unwrap()));

    for (claimed, accepted) in [(2, false), (3, true)] {
        let tcp = tokio::net::TcpStream::connect(t1.local_addr())
            .await
            .unwrap();
        let mut s = connector
            .connect(ServerName::try_from(peer_name(1)).unwrap(), tcp)
            .await
            .unwrap();
        let mut out = Vec::new();
        let hello = Hello {
            cluster_id: CLUSTER_ID,
            from: claimed,
            to: 1,
        };
        encode_frame(&WireFrame::Hello(hello), 1 << 20, &mut out).unwrap();
        encode_frame(&WireFrame::Message(probe(claimed, 1)), 1 << 20, &mut out).unwrap();
        s.write_all(&out).await.unwrap();
        s.flush().await.unwrap();
        let got = tokio::time::timeout(Duration::from_millis(500), in1.recv()).await;
        if accepted {
            let m = got.expect("the message arrives").unwrap();
            assert_eq!(m.from, 3);
        } else {
            assert!(got.is_err(), "a message from node {claimed} got through");
            // The node closes the connection.
            let mut buf = [0u8; 8];
            let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
            assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
            assert_eq!(tls_refused(&m1, "identity"), 1);
        }
    }
    t1.shutdown();
    t1.closed().await;
}

#[tokio::test]
async fn a_transport_refuses_a_certificate_of_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let good = ca("cluster CA");
    let mut cfg = TcpConfig::new(CLUSTER_ID, 1, "127.0.0.1:0".parse().unwrap());
    cfg.tls = Some(peer_tls(node_files(dir.path(), "a", &good, 2, &[&good]), 2));
    let e = TcpTransport::start(cfg, Metrics::new())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("must name raft-node-1"), "{e}");
    // Loading checks the name too, and the CA.
    let files = node_files(dir.path(), "b", &good, 4, &[&ca("another CA")]);
    let e = TlsCerts::load(files, Some(peer_name(4))).unwrap_err();
    assert!(
        e.to_string().contains("does not verify against the CA"),
        "{e}"
    );
    let files = node_files(dir.path(), "c", &good, 5, &[&good]);
    let e = TlsCerts::load(files, Some(peer_name(6))).unwrap_err();
    assert!(e.to_string().contains("does not name raft-node-6"), "{e}");
}

/// A reload that fails keeps the certificates in use; one that succeeds
/// serves new connections with the new files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_takes_new_files_and_survives_bad_ones() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (ca("first CA"), ca("second CA"));
    let files1 = node_files(dir.path(), "a", &first, 1, &[&first]);
    let certs1 = TlsCerts::load(files1.clone(), Some(peer_name(1))).unwrap();
    let (mut t1, mut in1, _) = transport(1, &[], Some(PeerTls::new(certs1.clone()).unwrap())).await;

    // A bad key: refused, nothing changes.
    let good_key = std::fs::read(&files1.key).unwrap();
    std::fs::write(&files1.key, "not a key").unwrap();
    let e = certs1.reload().unwrap_err();
    assert!(e.to_string().contains("no PRIVATE KEY"), "{e}");
    std::fs::write(&files1.key, good_key).unwrap();
    let (mut t2, _in2, _) = transport(
        2,
        &[(1, t1.local_addr())],
        Some(peer_tls(
            node_files(dir.path(), "a", &first, 2, &[&first]),
            2,
        )),
    )
    .await;
    assert!(delivered(&mut t2, &mut in1, probe(2, 1), Duration::from_secs(10)).await);

    // Node 1 moves to the second CA: new files in place, then a reload.
    let files2 = node_files(dir.path(), "z", &second, 1, &[&second]);
    for (from, to) in [
        (&files2.cert, &files1.cert),
        (&files2.key, &files1.key),
        (&files2.ca, &files1.ca),
    ] {
        std::fs::copy(from, to).unwrap();
    }
    certs1.reload().unwrap();
    // A node of the second CA now gets through (a new connection)...
    let (mut t3, _in3, _) = transport(
        3,
        &[(1, t1.local_addr())],
        Some(peer_tls(
            node_files(dir.path(), "z", &second, 3, &[&second]),
            3,
        )),
    )
    .await;
    assert!(delivered(&mut t3, &mut in1, probe(3, 1), Duration::from_secs(10)).await);
    // ...and a node of the first CA no longer does.
    let (mut t4, _in4, m4) = transport(
        4,
        &[(1, t1.local_addr())],
        Some(peer_tls(
            node_files(dir.path(), "a", &first, 4, &[&first]),
            4,
        )),
    )
    .await;
    assert!(!delivered(&mut t4, &mut in1, probe(4, 1), Duration::from_millis(500)).await);
    eventually("node 4 refuses node 1's new certificate", || {
        tls_refused(&m4, "untrusted_certificate") >= 1
    })
    .await;
    for t in [&mut t1, &mut t2, &mut t3, &mut t4] {
        t.shutdown();
        t.closed().await;
    }
}
