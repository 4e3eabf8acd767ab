//! Exactly-once writes through client sessions: duplicates, stale
//! sequences, expiry by log index, and the cap on sessions.

mod common;

use common::{small_config, Driver};
use raft_core::StateMachine;
use raftkv_state::{
    CasAction, CasResponse, Command, CommandError, Condition, KvConfig, PutResponse, Response,
    SessionInfo,
};

fn put(revision: u64, create_revision: u64, version: u64) -> Response {
    Response::Put(PutResponse {
        revision,
        create_revision,
        version,
        prev: None,
    })
}

#[test]
fn duplicate_returns_the_recorded_response_and_applies_nothing() {
    let mut d = Driver::new(small_config());
    let first = d.apply(&Command::put("a", "1").with_session(7, 1));
    assert_eq!(first, put(1, 1, 1));
    d.apply(&Command::put("b", "x")); // 2, someone else
                                      // Retry of seq 1 (same payload): same answer, version still 1.
    assert_eq!(d.apply(&Command::put("a", "1").with_session(7, 1)), first);
    assert_eq!(d.store.get(b"a").unwrap().version, 1);
    assert_eq!(d.store.get(b"a").unwrap().mod_revision, 1);
    // The retry refreshed the session's last use.
    assert_eq!(
        d.store.session(7),
        Some(SessionInfo {
            last_seq: 1,
            last_used_index: 3
        })
    );
    // Next sequence number applies.
    assert_eq!(
        d.apply(&Command::put("a", "2").with_session(7, 2)),
        put(4, 1, 2)
    );
    // A retry whose payload differs still gets the first answer: the
    // store identifies writes by (client, seq) only.
    assert_eq!(
        d.apply(&Command::delete("a").with_session(7, 2)),
        put(4, 1, 2)
    );
    assert!(d.store.get(b"a").is_some());
}

#[test]
fn duplicate_cas_is_not_reevaluated() {
    let mut d = Driver::new(small_config());
    d.apply(&Command::put("k", "v1"));
    let cas = Command::cas(
        "k",
        Condition::ValueEquals("v1".into()),
        CasAction::Put("v2".into()),
    )
    .with_session(9, 5);
    let first = d.apply(&cas);
    assert!(matches!(
        first,
        Response::CompareAndSwap(CasResponse {
            succeeded: true,
            ..
        })
    ));
    // Re-evaluating would fail (value is now v2); the retry must still say
    // it succeeded, since it did.
    assert_eq!(d.apply(&cas), first);
    assert_eq!(d.store.get(b"k").unwrap().version, 2);
}

#[test]
fn stale_sequence_is_refused_and_not_applied() {
    let mut d = Driver::new(small_config());
    d.apply(&Command::put("a", "1").with_session(3, 10));
    d.apply(&Command::put("a", "2").with_session(3, 11));
    let digest_before = d.store.get(b"a");
    assert_eq!(
        d.apply(&Command::put("a", "stale").with_session(3, 10)),
        Response::Rejected(CommandError::StaleSequence {
            client_id: 3,
            seq: 10,
            latest_seq: 11
        })
    );
    assert_eq!(d.store.get(b"a"), digest_before);
    assert_eq!(d.store.session(3).unwrap().last_seq, 11);
    // Gaps in seq are fine (a client may skip numbers).
    assert_eq!(
        d.apply(&Command::put("a", "3").with_session(3, 20)),
        put(4, 1, 3)
    );
}

#[test]
fn refusals_are_recorded_too() {
    let mut d = Driver::new(small_config());
    let too_big = Command::put("a", "x".repeat(17)).with_session(1, 1);
    let refused = Response::Rejected(CommandError::ValueTooLarge { len: 17, max: 16 });
    assert_eq!(d.apply(&too_big), refused);
    assert_eq!(d.store.session(1).unwrap().last_seq, 1);
    assert_eq!(d.apply(&too_big), refused);
    assert!(d.store.is_empty());
}

#[test]
fn sessions_are_independent() {
    let mut d = Driver::new(small_config());
    assert_eq!(
        d.apply(&Command::put("a", "1").with_session(1, 1)),
        put(1, 1, 1)
    );
    assert_eq!(
        d.apply(&Command::put("a", "2").with_session(2, 1)),
        put(2, 1, 2)
    );
    assert_eq!(
        d.apply(&Command::put("a", "1").with_session(1, 1)),
        put(1, 1, 1)
    );
    assert_eq!(d.store.session_count(), 2);
}

#[test]
fn session_expires_after_ttl_entries() {
    // ttl = 5: used at index 1, still there through index 6, gone at 7.
    let mut d = Driver::new(small_config());
    let first = d.apply(&Command::put("a", "1").with_session(5, 1));
    for _ in 0..4 {
        d.blank(); // 2..=5
    }
    assert!(d.store.session(5).is_some());
    // Index 6 = 1 + ttl: the retry is still recognized.
    assert_eq!(d.apply(&Command::put("a", "1").with_session(5, 1)), first);
    assert_eq!(d.store.session(5).unwrap().last_used_index, 6);
    for _ in 0..5 {
        d.blank(); // 7..=11
    }
    assert!(d.store.session(5).is_some(), "used at 6, alive through 11");
    d.blank(); // 12
    assert_eq!(d.store.session(5), None);
    assert_eq!(d.store.session_count(), 0);
    // After expiry the client is unknown: the same seq is applied again
    // (documented limitation; the TTL must exceed the retry horizon).
    assert_eq!(
        d.apply(&Command::put("a", "1").with_session(5, 1)),
        put(13, 1, 2)
    );
}

#[test]
fn expiry_counts_every_kind_of_entry() {
    let mut d = Driver::new(small_config());
    d.apply(&Command::put("a", "1").with_session(5, 1)); // 1
    d.apply(&Command::get("a")); // 2
    d.apply_raw(b"garbage"); // 3
    d.apply(&Command::put("b", "1")); // 4
    d.apply(&Command::list("", 1)); // 5
    d.blank(); // 6
    assert!(d.store.session(5).is_some());
    d.apply(&Command::get("a")); // 7
    assert_eq!(d.store.session(5), None);
}

#[test]
fn cap_evicts_least_recently_used() {
    // sessions_max = 3.
    let mut d = Driver::new(small_config());
    d.apply(&Command::put("a", "1").with_session(10, 1)); // 1
    d.apply(&Command::put("a", "2").with_session(20, 1)); // 2
    d.apply(&Command::put("a", "3").with_session(30, 1)); // 3
                                                          // Touch 10 with a duplicate: 20 is now the least recently used.
    d.apply(&Command::put("a", "1").with_session(10, 1)); // 4
    d.apply(&Command::put("a", "4").with_session(40, 1)); // 5
    assert_eq!(d.store.session_count(), 3);
    assert_eq!(d.store.session(20), None);
    assert!(d.store.session(10).is_some());
    assert!(d.store.session(30).is_some());
    assert!(d.store.session(40).is_some());
    d.apply(&Command::put("a", "5").with_session(50, 1)); // 6: evicts 30
    assert_eq!(d.store.session(30), None);
    assert_eq!(d.store.session_count(), 3);
    d.store.validate().unwrap();
}

#[test]
fn sessions_survive_snapshot_and_restore() {
    let mut d = Driver::new(small_config());
    let first = d.apply(&Command::put("a", "1").with_session(8, 1));
    let snap = d.store.snapshot().unwrap();
    let mut e = Driver::new(small_config());
    e.store.restore(&snap).unwrap();
    assert_eq!(e.apply(&Command::put("a", "1").with_session(8, 1)), first);
    assert_eq!(e.store.get(b"a").unwrap().version, 1);
    assert_eq!(
        e.apply(&Command::put("a", "x").with_session(8, 0)),
        Response::Rejected(CommandError::StaleSequence {
            client_id: 8,
            seq: 0,
            latest_seq: 1
        })
    );
}

#[test]
fn many_sessions_stay_bounded() {
    let config = KvConfig {
        sessions_max: 50,
        session_ttl_entries: 1_000,
        ..KvConfig::default()
    };
    let mut d = Driver::new(config);
    for i in 0..500u64 {
        d.apply(&Command::put(format!("k{}", i % 7), "v").with_session(i % 120, i));
        assert!(d.store.session_count() <= 50);
    }
    d.store.validate().unwrap();
    assert_eq!(d.store.session_count(), 50);
}
