//! MvccStore answers exactly as KvStore: the same random entry sequences,
//! applied to both, give the same response for every entry and the same
//! state (digest, every key, every list, every session) after every batch,
//! across checkpoints and reopenings.

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use raft_core::{Entry, EntryPayload, StateMachine};
use raftkv_mvcc::{ApplyError, MvccStore};
use raftkv_state::{Command, KvStore, ReadCommand, Response};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// Every observable of the current state must agree.
fn assert_same_state(kv: &KvStore, mvcc: &MvccStore) {
    assert_eq!(mvcc.applied_index(), kv.applied_index());
    assert_eq!(mvcc.digest().unwrap(), kv.digest(), "digest");
    let view = mvcc.view().unwrap();
    assert_eq!(view.len().unwrap(), kv.len() as u64);
    assert_eq!(view.state().data_bytes, kv.data_bytes());
    for key in ["a", "b", "ab", "abc", "b1", "c", "zz"] {
        assert_eq!(
            view.get(key.as_bytes()).unwrap(),
            kv.get(key.as_bytes()),
            "get {key}"
        );
    }
    for prefix in ["", "a", "b", "ab", "q"] {
        for limit in 1..=3 {
            assert_eq!(
                view.list(prefix.as_bytes(), limit).unwrap(),
                kv.list(prefix.as_bytes(), limit).unwrap(),
                "list {prefix:?} {limit}"
            );
        }
    }
    // Ranges `[start, end)`, alone and with a prefix, through both stores'
    // `execute_read` (what the server's list route runs).
    let bounds: [Option<&[u8]>; 6] = [
        None,
        Some(b""),
        Some(b"ab"),
        Some(b"ab\0"),
        Some(b"b"),
        Some(b"b1"),
    ];
    for prefix in ["", "a", "b"] {
        for start in bounds {
            for end in bounds {
                let read = ReadCommand::List {
                    prefix: prefix.into(),
                    limit: 2,
                    start: start.map(Bytes::copy_from_slice),
                    end: end.map(Bytes::copy_from_slice),
                };
                assert_eq!(
                    mvcc.execute_read(&read).unwrap(),
                    kv.execute_read(&read),
                    "{read:?}"
                );
            }
        }
    }
    for client in 0..4 {
        assert_eq!(
            view.session(client).unwrap(),
            kv.session(client),
            "session {client}"
        );
    }
    assert_eq!(view.session_count().unwrap(), kv.session_count() as u64);
    view.verify().unwrap();
}

/// After a batch: nothing, a checkpoint, or a clean reopen.
#[derive(Clone, Debug)]
enum Then {
    Continue,
    Checkpoint,
    Reopen,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn same_answers_as_kvstore(
        batches in prop::collection::vec(
            (prop::collection::vec(payload(), 1..8),
             prop_oneof![6 => Just(Then::Continue), 1 => Just(Then::Checkpoint), 1 => Just(Then::Reopen)]),
            1..12),
    ) {
        let config = small_config();
        let dir = tempfile::tempdir().unwrap();
        let path = store_path(&dir);
        let mut kv = KvStore::new(config.clone()).unwrap();
        let mut mvcc = open(&path, &config);
        let mut index = 0;
        let mut last_membership = None;
        for (batch, then) in batches {
            let entries: Vec<Entry> = batch
                .iter()
                .map(|p| {
                    index += 1;
                    p.entry(index)
                })
                .collect();
            for e in &entries {
                if let EntryPayload::Membership(m) = &e.payload {
                    last_membership = Some(m.clone());
                }
            }
            let expected: Vec<Response> = entries.iter().map(|e| kv.apply(e).unwrap()).collect();
            let got = mvcc.apply_batch(&entries).unwrap();
            prop_assert_eq!(got, expected);
            prop_assert_eq!(&mvcc.state().membership, &last_membership);
            prop_assert_eq!(mvcc.state().applied_term, 1 + index / 10);
            match then {
                Then::Continue => {}
                Then::Checkpoint => {
                    prop_assert_eq!(mvcc.checkpoint().unwrap(), index);
                    prop_assert_eq!(mvcc.durable_applied_index(), index);
                }
                Then::Reopen => {
                    // A clean close makes everything durable.
                    drop(mvcc);
                    mvcc = open(&path, &config);
                    prop_assert_eq!(mvcc.durable_applied_index(), index);
                    prop_assert_eq!(&mvcc.state().membership, &last_membership);
                }
            }
            assert_same_state(&kv, &mvcc);
        }
    }
}

#[test]
fn already_applied_and_gaps_match_kvstore() {
    let config = small_config();
    let dir = tempfile::tempdir().unwrap();
    let mut mvcc = open(&store_path(&dir), &config);
    let mut kv = KvStore::new(config).unwrap();
    let e1 = normal(1, &Command::put("a", "1"));
    let e2 = normal(2, &Command::put("a", "2"));
    assert_eq!(mvcc.apply(&e1).unwrap(), kv.apply(&e1).unwrap());
    // A replayed entry is ignored, as KvStore ignores it.
    assert_eq!(
        mvcc.apply(&e1).unwrap(),
        Response::AlreadyApplied { applied_index: 1 }
    );
    assert_eq!(
        kv.apply(&e1).unwrap(),
        Response::AlreadyApplied { applied_index: 1 }
    );
    // A gap is fatal for the batch and changes nothing, not even the
    // entries before it in the same batch.
    let e4 = normal(4, &Command::put("b", "x"));
    let err = mvcc.apply_batch(&[e2.clone(), e4]).unwrap_err();
    assert!(
        matches!(
            err,
            ApplyError::IndexGap {
                applied_index: 2,
                entry_index: 4
            }
        ),
        "{err}"
    );
    assert_eq!(mvcc.applied_index(), 1);
    assert_eq!(mvcc.get(b"a").unwrap().unwrap().value, "1");
    // The store still works: the gap was the driver's fault, not a fault of
    // the engine.
    assert_eq!(mvcc.apply(&e2).unwrap(), kv.apply(&e2).unwrap());
    assert_eq!(mvcc.digest().unwrap(), kv.digest());
}

#[test]
fn reads_check_limits_like_kvstore() {
    let config = small_config();
    let dir = tempfile::tempdir().unwrap();
    let mvcc = open(&store_path(&dir), &config);
    let kv = KvStore::new(config.clone()).unwrap();
    for read in [
        raftkv_state::ReadCommand::Get { key: "".into() },
        raftkv_state::ReadCommand::Get {
            key: "toolong".into(),
        },
        raftkv_state::ReadCommand::list("", 0),
        raftkv_state::ReadCommand::list("", 4),
        // A range bound over key_bytes_max + 1 bytes.
        raftkv_state::ReadCommand::List {
            prefix: "".into(),
            limit: 1,
            start: Some(vec![b'z'; config.key_bytes_max as usize + 2].into()),
            end: None,
        },
    ] {
        let got = mvcc.execute_read(&read).unwrap();
        assert!(matches!(got, Response::Rejected(_)), "{read:?}");
        assert_eq!(got, kv.execute_read(&read));
    }
    assert!(matches!(
        mvcc.get(b""),
        Err(raftkv_mvcc::ReadError::Rejected(_))
    ));
}

#[test]
fn statemachine_snapshot_restore_round_trip() {
    let config = small_config();
    let dir = tempfile::tempdir().unwrap();
    let mut src = open(&dir.path().join("a.redb"), &config);
    let mut kv = KvStore::new(config.clone()).unwrap();
    for i in 1..=30u64 {
        let cmd =
            Command::put(["a", "b", "c"][(i % 3) as usize], format!("v{i}")).with_session(i % 3, i);
        let e = normal(i, &cmd);
        kv.apply(&e).unwrap();
        src.apply(&e).unwrap();
    }
    let blob = StateMachine::snapshot(&src).unwrap();
    let mut dst = open(&dir.path().join("b.redb"), &config);
    dst.restore(&blob).unwrap();
    assert_eq!(dst.applied_index(), 30);
    assert_same_state(&kv, &dst);
    // History travelled too.
    assert_eq!(dst.get_at(b"a", 4).unwrap().unwrap().value, "v3");
    // A damaged blob is refused and changes nothing.
    let mut bad = blob.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x40;
    let mut other = open(&dir.path().join("c.redb"), &config);
    assert!(other.restore(&bad).is_err());
    assert_eq!(other.applied_index(), 0);
    assert!(!dir.path().join("c.redb.incoming").exists());
}
