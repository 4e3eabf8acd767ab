//! Snapshot round trips and refusal of bad snapshots.

mod common;

use bytes::Bytes;
use common::{small_config, Driver};
use raft_core::StateMachine;
use raftkv_state::snapshot::{SNAPSHOT_FORMAT_VERSION, SNAPSHOT_MAGIC};
use raftkv_state::{Command, KvConfig, KvStore, SnapshotError, StateError};
use serde::Serialize;

fn populated() -> Driver {
    let mut d = Driver::new(small_config());
    for i in 0..20u64 {
        d.apply(&Command::put(format!("k{}", i % 6), format!("v{i}")).with_session(i % 4, i));
        if i % 5 == 0 {
            d.apply(&Command::delete(format!("k{}", i % 3)));
        }
    }
    d.blank();
    d
}

#[test]
fn round_trip_preserves_everything() {
    let d = populated();
    let snap = d.store.snapshot().unwrap();
    let mut e = Driver::new(small_config());
    e.apply(&Command::put("junk", "to be replaced"));
    e.store.restore(&snap).unwrap();
    assert_eq!(e.store.digest(), d.store.digest());
    assert_eq!(e.store.applied_index(), d.store.applied_index());
    assert_eq!(e.store.len(), d.store.len());
    assert_eq!(e.store.data_bytes(), d.store.data_bytes());
    assert_eq!(e.store.session_count(), d.store.session_count());
    assert_eq!(e.store.get(b"junk"), None);
    assert_eq!(e.store.list(b"", 4).unwrap(), d.store.list(b"", 4).unwrap());
    for c in 0..4 {
        assert_eq!(e.store.session(c), d.store.session(c));
    }
    e.store.validate().unwrap();
    // Canonical: snapshotting the restored store gives the same bytes.
    assert_eq!(e.store.snapshot().unwrap(), snap);
    // And both continue identically.
    let mut d = d;
    for cmd in [
        Command::put("k1", "after"),
        Command::put("k2", "x").with_session(3, 19),
        Command::put("k2", "y").with_session(3, 30),
    ] {
        assert_eq!(d.apply(&cmd), e.apply(&cmd));
    }
    assert_eq!(e.store.digest(), d.store.digest());
}

#[test]
fn empty_store_round_trip() {
    let d = Driver::new(small_config());
    let snap = d.store.snapshot().unwrap();
    let mut e = populated();
    e.store.restore(&snap).unwrap();
    assert_eq!(e.store.applied_index(), 0);
    assert!(e.store.is_empty());
    assert_eq!(e.store.session_count(), 0);
    assert_eq!(e.store.digest(), d.store.digest());
}

/// Restores `bytes` into a populated store and checks it is refused and
/// that nothing changed.
fn refused(bytes: &[u8]) -> SnapshotError {
    let mut d = populated();
    let digest = d.store.digest();
    let applied = d.store.applied_index();
    let err = match d.store.restore(bytes) {
        Err(StateError::Snapshot(e)) => e,
        other => panic!("expected a snapshot error, got {other:?}"),
    };
    assert_eq!(d.store.digest(), digest);
    assert_eq!(d.store.applied_index(), applied);
    d.store.validate().unwrap();
    err
}

#[test]
fn corrupted_snapshots_are_refused_and_change_nothing() {
    let snap = populated().store.snapshot().unwrap();
    assert_eq!(refused(&[]), SnapshotError::TooShort { len: 0 });
    assert_eq!(refused(&snap[..10]), SnapshotError::TooShort { len: 10 });
    let mut bad = snap.clone();
    bad[0] ^= 1;
    assert_eq!(refused(&bad), SnapshotError::BadMagic);
    let mut bad = snap.clone();
    bad[4] = 77;
    assert_eq!(
        refused(&bad),
        SnapshotError::UnsupportedVersion { version: 77 }
    );
    let body_len = (snap.len() - 17) as u64;
    assert_eq!(
        refused(&snap[..snap.len() - 1]),
        SnapshotError::LengthMismatch {
            declared: body_len,
            actual: body_len - 1
        }
    );
    let mut padded = snap.clone();
    padded.push(0);
    assert!(matches!(
        refused(&padded),
        SnapshotError::LengthMismatch { .. }
    ));
    // Every single-bit flip in the body is caught by the CRC.
    for i in 17..snap.len() {
        let mut bad = snap.clone();
        bad[i] ^= 0x10;
        assert!(
            matches!(refused(&bad), SnapshotError::ChecksumMismatch { .. }),
            "flip at {i}"
        );
    }
    // Flips in the CRC field itself too.
    let mut bad = snap.clone();
    bad[14] ^= 0xff;
    assert!(matches!(
        refused(&bad),
        SnapshotError::ChecksumMismatch { .. }
    ));
}

/// Wraps `body` in a header with a correct length and CRC, so the checks
/// past the checksum are exercised.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    out.push(SNAPSHOT_FORMAT_VERSION);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

// Mirrors of the body layout, to forge bodies that pass the checksum.
#[derive(Serialize)]
struct Record {
    value: Bytes,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
}

#[derive(Serialize)]
struct Session {
    last_seq: u64,
    last_used_index: u64,
    response: raftkv_state::Response,
}

#[derive(Serialize)]
struct Body {
    applied_index: u64,
    data: Vec<(Bytes, Record)>,
    sessions: Vec<(u64, Session)>,
}

fn rec(create: u64, modr: u64, version: u64) -> Record {
    Record {
        value: Bytes::from_static(b"v"),
        create_revision: create,
        mod_revision: modr,
        version,
    }
}

fn forged(body: &Body) -> Vec<u8> {
    framed(&postcard::to_stdvec(body).unwrap())
}

#[test]
fn forged_body_layout_matches_the_real_one() {
    // If this fails, the mirror structs above are out of date and the
    // inconsistency tests below prove nothing.
    let body = Body {
        applied_index: 5,
        data: vec![("a".into(), rec(1, 3, 2)), ("b".into(), rec(4, 4, 1))],
        sessions: vec![(
            9,
            Session {
                last_seq: 1,
                last_used_index: 5,
                response: raftkv_state::Response::Noop,
            },
        )],
    };
    let mut store = KvStore::new(small_config()).unwrap();
    store.restore(&forged(&body)).unwrap();
    assert_eq!(store.applied_index(), 5);
    assert_eq!(store.get(b"a").unwrap().version, 2);
    assert_eq!(store.session(9).unwrap().last_used_index, 5);
}

#[test]
fn inconsistent_bodies_are_refused() {
    let body = |data: Vec<(Bytes, Record)>, sessions: Vec<(u64, u64)>| Body {
        applied_index: 10,
        data,
        sessions: sessions
            .into_iter()
            .map(|(client, used)| {
                (
                    client,
                    Session {
                        last_seq: 1,
                        last_used_index: used,
                        response: raftkv_state::Response::Noop,
                    },
                )
            })
            .collect(),
    };
    let inconsistent = |b: Body| match refused(&forged(&b)) {
        SnapshotError::Inconsistent { reason } => reason,
        other => panic!("expected inconsistency, got {other:?}"),
    };
    inconsistent(body(
        vec![("b".into(), rec(1, 1, 1)), ("a".into(), rec(2, 2, 1))],
        vec![],
    ));
    inconsistent(body(
        vec![("a".into(), rec(1, 1, 1)), ("a".into(), rec(2, 2, 1))],
        vec![],
    ));
    inconsistent(body(vec![("".into(), rec(1, 1, 1))], vec![]));
    inconsistent(body(vec![("a".into(), rec(1, 11, 1))], vec![]));
    inconsistent(body(vec![("a".into(), rec(3, 2, 1))], vec![]));
    inconsistent(body(vec![("a".into(), rec(2, 3, 3))], vec![]));
    inconsistent(body(vec![("a".into(), rec(2, 3, 0))], vec![]));
    inconsistent(body(vec![], vec![(1, 4), (2, 4)]));
    inconsistent(body(vec![], vec![(2, 4), (1, 5)]));
    inconsistent(body(vec![], vec![(1, 11)]));
    inconsistent(body(vec![], vec![(1, 0)]));
    // Not postcard for the layout at all (but a valid checksum).
    assert!(matches!(
        refused(&framed(&[0xff; 3])),
        SnapshotError::Malformed { .. }
    ));
    // A valid body followed by extra bytes inside the framed length.
    let mut long = postcard::to_stdvec(&body(vec![], vec![])).unwrap();
    long.push(0);
    assert!(matches!(
        refused(&framed(&long)),
        SnapshotError::Malformed { .. }
    ));
}

#[test]
fn restore_keeps_the_local_config() {
    let d = populated();
    let snap = d.store.snapshot().unwrap();
    let config = KvConfig {
        value_bytes_max: 1,
        ..small_config()
    };
    let mut e = Driver::new(config.clone());
    e.store.restore(&snap).unwrap();
    assert_eq!(e.store.config(), &config);
    assert_eq!(e.store.digest(), d.store.digest());
}
