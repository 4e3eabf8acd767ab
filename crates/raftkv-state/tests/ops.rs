//! Per-operation tests with exact expected responses.

mod common;

use bytes::Bytes;
use common::{small_config, Driver};
use raft_core::{Entry, EntryPayload, Membership, StateMachine};
use raftkv_state::{
    CasAction, CasResponse, Command, CommandError, Condition, DecodeError, DeleteResponse,
    GetResponse, KeyValue, ListResponse, PutResponse, ReadCommand, Response, StateError,
    FORMAT_VERSION,
};

fn kv(key: &str, value: &str, create: u64, modr: u64, version: u64) -> KeyValue {
    KeyValue {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        create_revision: create,
        mod_revision: modr,
        version,
    }
}

#[test]
fn put_creates_then_updates() {
    let mut d = Driver::new(small_config());
    assert_eq!(
        d.apply(&Command::put("a", "1")),
        Response::Put(PutResponse {
            revision: 1,
            create_revision: 1,
            version: 1,
            prev: None
        })
    );
    assert_eq!(
        d.apply(&Command::put("a", "2").with_prev_kv()),
        Response::Put(PutResponse {
            revision: 2,
            create_revision: 1,
            version: 2,
            prev: Some(kv("a", "1", 1, 1, 1)),
        })
    );
    // Without prev_kv the previous value is not returned.
    assert_eq!(
        d.apply(&Command::put("a", "3")),
        Response::Put(PutResponse {
            revision: 3,
            create_revision: 1,
            version: 3,
            prev: None
        })
    );
    assert_eq!(d.store.get(b"a"), Some(kv("a", "3", 1, 3, 3)));
    assert_eq!(d.store.len(), 1);
    assert_eq!(d.store.data_bytes(), 2);
    d.store.validate().unwrap();
}

#[test]
fn delete_reports_existence_and_recreate_resets_revisions() {
    let mut d = Driver::new(small_config());
    d.apply(&Command::put("a", "1"));
    d.apply(&Command::put("a", "2"));
    assert_eq!(
        d.apply(&Command::delete("a").with_prev_kv()),
        Response::Delete(DeleteResponse {
            revision: 3,
            deleted: true,
            prev: Some(kv("a", "2", 1, 2, 2)),
        })
    );
    assert_eq!(
        d.apply(&Command::delete("a")),
        Response::Delete(DeleteResponse {
            revision: 4,
            deleted: false,
            prev: None
        })
    );
    assert_eq!(d.store.get(b"a"), None);
    assert_eq!(
        d.apply(&Command::put("a", "x")),
        Response::Put(PutResponse {
            revision: 5,
            create_revision: 5,
            version: 1,
            prev: None
        })
    );
    // Delete without prev_kv says it existed but returns no value.
    assert_eq!(
        d.apply(&Command::delete("a")),
        Response::Delete(DeleteResponse {
            revision: 6,
            deleted: true,
            prev: None
        })
    );
    assert!(d.store.is_empty());
    assert_eq!(d.store.data_bytes(), 0);
}

#[test]
fn cas_on_value() {
    let mut d = Driver::new(small_config());
    d.apply(&Command::put("k", "old"));
    assert_eq!(
        d.apply(&Command::cas(
            "k",
            Condition::ValueEquals("nope".into()),
            CasAction::Put("new".into())
        )),
        Response::CompareAndSwap(CasResponse {
            revision: 2,
            succeeded: false,
            current: Some(kv("k", "old", 1, 1, 1)),
        })
    );
    assert_eq!(
        d.apply(&Command::cas(
            "k",
            Condition::ValueEquals("old".into()),
            CasAction::Put("new".into())
        )),
        Response::CompareAndSwap(CasResponse {
            revision: 3,
            succeeded: true,
            current: Some(kv("k", "new", 1, 3, 2)),
        })
    );
    // Value condition on an absent key fails with no current value.
    assert_eq!(
        d.apply(&Command::cas(
            "z",
            Condition::ValueEquals("x".into()),
            CasAction::Delete
        )),
        Response::CompareAndSwap(CasResponse {
            revision: 4,
            succeeded: false,
            current: None
        })
    );
}

#[test]
fn cas_on_absence() {
    let mut d = Driver::new(small_config());
    assert_eq!(
        d.apply(&Command::cas(
            "k",
            Condition::Absent,
            CasAction::Put("v".into())
        )),
        Response::CompareAndSwap(CasResponse {
            revision: 1,
            succeeded: true,
            current: Some(kv("k", "v", 1, 1, 1)),
        })
    );
    assert_eq!(
        d.apply(&Command::cas(
            "k",
            Condition::Absent,
            CasAction::Put("w".into())
        )),
        Response::CompareAndSwap(CasResponse {
            revision: 2,
            succeeded: false,
            current: Some(kv("k", "v", 1, 1, 1)),
        })
    );
    assert_eq!(d.store.get(b"k"), Some(kv("k", "v", 1, 1, 1)));
}

#[test]
fn cas_on_mod_revision() {
    let mut d = Driver::new(small_config());
    d.apply(&Command::put("k", "a")); // 1
    d.apply(&Command::put("k", "b")); // 2
    assert_eq!(
        d.apply(&Command::cas(
            "k",
            Condition::ModRevisionEquals(1),
            CasAction::Delete
        )),
        Response::CompareAndSwap(CasResponse {
            revision: 3,
            succeeded: false,
            current: Some(kv("k", "b", 1, 2, 2)),
        })
    );
    assert_eq!(
        d.apply(&Command::cas(
            "k",
            Condition::ModRevisionEquals(2),
            CasAction::Delete
        )),
        Response::CompareAndSwap(CasResponse {
            revision: 4,
            succeeded: true,
            current: None
        })
    );
    assert_eq!(d.store.get(b"k"), None);
    // Revision 0 means absent.
    assert_eq!(
        d.apply(&Command::cas(
            "k",
            Condition::ModRevisionEquals(0),
            CasAction::Put("c".into())
        )),
        Response::CompareAndSwap(CasResponse {
            revision: 5,
            succeeded: true,
            current: Some(kv("k", "c", 5, 5, 1)),
        })
    );
    assert_eq!(
        d.apply(&Command::cas(
            "k",
            Condition::ModRevisionEquals(0),
            CasAction::Put("d".into())
        )),
        Response::CompareAndSwap(CasResponse {
            revision: 6,
            succeeded: false,
            current: Some(kv("k", "c", 5, 5, 1)),
        })
    );
}

#[test]
fn get_and_list_through_the_log() {
    let mut d = Driver::new(small_config());
    for (k, v) in [
        ("b", "2"),
        ("a", "1"),
        ("ab", "3"),
        ("abc", "4"),
        ("ac", "5"),
    ] {
        d.apply(&Command::put(k, v));
    }
    // a=2 ab=3 abc=4 ac=5 b=1 (revisions).
    assert_eq!(
        d.apply(&Command::get("ab")),
        Response::Get(GetResponse {
            revision: 6,
            kv: Some(kv("ab", "3", 3, 3, 1))
        })
    );
    assert_eq!(
        d.apply(&Command::get("zz")),
        Response::Get(GetResponse {
            revision: 7,
            kv: None
        })
    );
    assert_eq!(
        d.apply(&Command::list("ab", 4)),
        Response::List(ListResponse {
            revision: 8,
            kvs: vec![kv("ab", "3", 3, 3, 1), kv("abc", "4", 4, 4, 1)],
            more: false,
        })
    );
    assert_eq!(
        d.apply(&Command::list("a", 2)),
        Response::List(ListResponse {
            revision: 9,
            kvs: vec![kv("a", "1", 2, 2, 1), kv("ab", "3", 3, 3, 1)],
            more: true,
        })
    );
    // Exactly `limit` matches: no more.
    assert_eq!(
        d.apply(&Command::list("a", 4)),
        Response::List(ListResponse {
            revision: 10,
            kvs: vec![
                kv("a", "1", 2, 2, 1),
                kv("ab", "3", 3, 3, 1),
                kv("abc", "4", 4, 4, 1),
                kv("ac", "5", 5, 5, 1)
            ],
            more: false,
        })
    );
    // Empty prefix lists everything in order.
    let Response::List(all) = d.apply(&Command::list("", 4)) else {
        panic!("list answers a list")
    };
    assert!(all.more);
    assert_eq!(
        all.kvs.iter().map(|kv| &kv.key[..]).collect::<Vec<_>>(),
        [&b"a"[..], b"ab", b"abc", b"ac"]
    );
    assert_eq!(
        d.apply(&Command::list("c", 4)),
        Response::List(ListResponse {
            revision: 12,
            kvs: vec![],
            more: false
        })
    );
    // Reads changed nothing but the applied index.
    assert_eq!(d.store.len(), 5);
}

#[test]
fn local_reads_match_log_reads() {
    let mut d = Driver::new(small_config());
    d.apply(&Command::put("p1", "x"));
    d.apply(&Command::put("p2", "y"));
    d.apply(&Command::put("q", "z"));
    let local = d.store.list(b"p", 1).unwrap();
    assert_eq!(
        local,
        ListResponse {
            revision: 3,
            kvs: vec![kv("p1", "x", 1, 1, 1)],
            more: true
        }
    );
    assert_eq!(
        d.store.execute_read(&ReadCommand::list("p", 1)),
        Response::List(local)
    );
    assert_eq!(
        d.store.list(b"p", 5),
        Err(CommandError::ListLimitOutOfRange { limit: 5, max: 4 })
    );
    assert_eq!(
        d.store.execute_read(&ReadCommand::Get { key: "".into() }),
        Response::Rejected(CommandError::EmptyKey)
    );
}

#[test]
fn limits_are_rejected_and_change_nothing() {
    let mut d = Driver::new(small_config());
    d.apply(&Command::put("a", "1"));
    let digest = d.store.digest();
    let cases = [
        (
            Command::put("123456789", "v"),
            CommandError::KeyTooLarge { len: 9, max: 8 },
        ),
        (
            Command::put("a", "x".repeat(17)),
            CommandError::ValueTooLarge { len: 17, max: 16 },
        ),
        (Command::put("", "v"), CommandError::EmptyKey),
        (Command::delete(""), CommandError::EmptyKey),
        (
            Command::cas(
                "a",
                Condition::Absent,
                CasAction::Put("x".repeat(17).into()),
            ),
            CommandError::ValueTooLarge { len: 17, max: 16 },
        ),
        (
            Command::list("", 5),
            CommandError::ListLimitOutOfRange { limit: 5, max: 4 },
        ),
        (
            Command::list("", 0),
            CommandError::ListLimitOutOfRange { limit: 0, max: 4 },
        ),
        (
            Command::get("123456789"),
            CommandError::KeyTooLarge { len: 9, max: 8 },
        ),
    ];
    for (cmd, err) in cases {
        let index = d.next_index();
        assert_eq!(d.apply(&cmd), Response::Rejected(err), "{cmd:?}");
        assert_eq!(d.store.applied_index(), index);
    }
    assert_eq!(d.store.get(b"a"), Some(kv("a", "1", 1, 1, 1)));
    assert_eq!(d.store.len(), 1);
    // Only the applied index moved: the digest covers it, so compare with a
    // store that applied the same put and the same number of blanks.
    let mut other = Driver::new(small_config());
    other.apply(&Command::put("a", "1"));
    for _ in 0..8 {
        other.blank();
    }
    assert_ne!(digest, d.store.digest());
    assert_eq!(other.store.digest(), d.store.digest());
}

#[test]
fn blank_and_membership_only_advance_the_index() {
    let mut d = Driver::new(small_config());
    d.apply(&Command::put("a", "1"));
    assert_eq!(d.blank(), Response::Noop);
    assert_eq!(
        d.apply_payload(EntryPayload::Membership(Membership::new_voters([1, 2, 3]))),
        Response::Noop
    );
    assert_eq!(d.store.applied_index(), 3);
    assert_eq!(d.store.get(b"a"), Some(kv("a", "1", 1, 1, 1)));
    // The next write's revision is its own index.
    assert_eq!(
        d.apply(&Command::put("a", "2")),
        Response::Put(PutResponse {
            revision: 4,
            create_revision: 1,
            version: 2,
            prev: None
        })
    );
}

#[test]
fn garbage_commands_are_answered_and_advance_the_index() {
    let mut d = Driver::new(small_config());
    d.apply(&Command::put("a", "1"));
    assert_eq!(
        d.apply_raw(&[]),
        Response::Rejected(CommandError::Undecodable(DecodeError::Empty))
    );
    assert_eq!(
        d.apply_raw(&[0xee, 1, 2, 3]),
        Response::Rejected(CommandError::Undecodable(DecodeError::UnsupportedVersion {
            version: 0xee
        }))
    );
    assert!(matches!(
        d.apply_raw(&[FORMAT_VERSION, 0xff, 0xff]),
        Response::Rejected(CommandError::Undecodable(DecodeError::Malformed { .. }))
    ));
    assert_eq!(d.store.applied_index(), 4);
    assert_eq!(d.store.len(), 1);
    // Pseudo-random garbage never panics and is always answered.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..300usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let index = d.next_index();
        let response = d.apply_raw(&bytes);
        assert_eq!(d.store.applied_index(), index);
        if Command::decode(&bytes).is_err() {
            assert!(matches!(
                response,
                Response::Rejected(CommandError::Undecodable(_))
            ));
        }
    }
    d.store.validate().unwrap();
}

#[test]
fn old_entries_are_ignored_and_gaps_are_fatal() {
    let mut d = Driver::new(small_config());
    d.apply(&Command::put("a", "1"));
    d.apply(&Command::put("a", "2"));
    let digest = d.store.digest();
    // Replaying entry 1 (a put of a different value, even) changes nothing.
    let replay = Entry {
        term: 1,
        index: 1,
        payload: EntryPayload::Normal(Command::put("a", "other").encode()),
    };
    assert_eq!(
        d.store.apply(&replay).unwrap(),
        Response::AlreadyApplied { applied_index: 2 }
    );
    let replay_current = Entry { index: 2, ..replay };
    assert_eq!(
        d.store.apply(&replay_current).unwrap(),
        Response::AlreadyApplied { applied_index: 2 }
    );
    assert_eq!(d.store.digest(), digest);
    let gap = Entry {
        term: 1,
        index: 4,
        payload: EntryPayload::Blank,
    };
    assert_eq!(
        d.store.apply(&gap),
        Err(StateError::IndexGap {
            applied_index: 2,
            entry_index: 4
        })
    );
    assert_eq!(d.store.applied_index(), 2);
    assert_eq!(d.store.digest(), digest);
}

#[test]
fn digest_depends_on_contents() {
    let mut a = Driver::new(small_config());
    let mut b = Driver::new(small_config());
    a.apply(&Command::put("k", "1"));
    b.apply(&Command::put("k", "2"));
    assert_ne!(a.store.digest(), b.store.digest());
    let mut c = Driver::new(small_config());
    c.apply(&Command::put("k", "1"));
    assert_eq!(a.store.digest(), c.store.digest());
    // Same contents reached differently (different revisions) differ.
    let mut e = Driver::new(small_config());
    e.blank();
    e.apply(&Command::put("k", "1"));
    a.blank();
    assert_ne!(a.store.digest(), e.store.digest());
}

/// The keys of a range listing through the log, and its `more`.
fn range(
    d: &mut Driver,
    prefix: &str,
    limit: u64,
    start: Option<&[u8]>,
    end: Option<&[u8]>,
) -> (Vec<String>, bool) {
    let read = ReadCommand::List {
        prefix: Bytes::copy_from_slice(prefix.as_bytes()),
        limit,
        start: start.map(Bytes::copy_from_slice),
        end: end.map(Bytes::copy_from_slice),
    };
    // The local read answers exactly as the read through the log.
    let local = d.store.execute_read(&read);
    let logged = d.apply(&Command::Read(read));
    let Response::List(list) = logged else {
        panic!("a list answers a list: {logged:?}")
    };
    let Response::List(local) = local else {
        panic!("a list answers a list: {local:?}")
    };
    assert_eq!(local.kvs, list.kvs);
    assert_eq!(local.more, list.more);
    let keys = list
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect();
    (keys, list.more)
}

#[test]
fn list_ranges_and_pages() {
    let mut d = Driver::new(small_config());
    for k in ["a", "a/1", "a/2", "a/3", "b", "c"] {
        d.apply(&Command::put(k, "v"));
    }
    let s = |k: &'static str| Some(k.as_bytes());
    // [start, end) without a prefix.
    assert_eq!(
        range(&mut d, "", 4, s("a/1"), s("b")),
        (vec!["a/1".into(), "a/2".into(), "a/3".into()], false)
    );
    assert_eq!(
        range(&mut d, "", 4, s("a/1"), s("a/3")),
        (vec!["a/1".into(), "a/2".into()], false)
    );
    // Open ends.
    assert_eq!(
        range(&mut d, "", 4, s("b"), None),
        (vec!["b".into(), "c".into()], false)
    );
    assert_eq!(
        range(&mut d, "", 2, None, s("a/2")),
        (vec!["a".into(), "a/1".into()], false)
    );
    assert_eq!(
        range(&mut d, "", 1, None, s("a/2")),
        (vec!["a".into()], true)
    );
    // Paging: the next page starts just past the last key (key + 0 byte).
    assert_eq!(
        range(&mut d, "a/", 2, None, None),
        (vec!["a/1".into(), "a/2".into()], true)
    );
    assert_eq!(
        range(&mut d, "a/", 2, Some(b"a/2\0"), None),
        (vec!["a/3".into()], false)
    );
    // Range and prefix together: both apply.
    assert_eq!(
        range(&mut d, "a/", 4, s("a"), s("a/3")),
        (vec!["a/1".into(), "a/2".into()], false)
    );
    assert_eq!(range(&mut d, "a/", 4, s("b"), None), (vec![], false));
    // An empty or inverted range lists nothing.
    assert_eq!(range(&mut d, "", 4, s("b"), s("b")), (vec![], false));
    assert_eq!(range(&mut d, "", 4, s("c"), s("a")), (vec![], false));
    // `more` is about the range, not the whole store.
    assert_eq!(
        range(&mut d, "", 3, s("a/1"), s("a/4")),
        (vec!["a/1".into(), "a/2".into(), "a/3".into()], false)
    );

    // Bounds of key_bytes_max + 1 bytes (past any key) are accepted; longer
    // ones are refused and change nothing.
    let max = small_config().key_bytes_max as usize;
    let at_limit = vec![b'z'; max + 1];
    assert_eq!(range(&mut d, "", 4, Some(&at_limit), None), (vec![], false));
    let over = vec![b'z'; max + 2];
    let before = (d.store.len(), d.store.data_bytes());
    let read = ReadCommand::List {
        prefix: Bytes::new(),
        limit: 4,
        start: None,
        end: Some(Bytes::from(over)),
    };
    let want = Response::Rejected(CommandError::RangeBoundTooLarge {
        len: max as u64 + 2,
        max: max as u64 + 1,
    });
    assert_eq!(d.store.execute_read(&read), want);
    assert_eq!(d.apply(&Command::Read(read)), want);
    assert_eq!((d.store.len(), d.store.data_bytes()), before);
}
