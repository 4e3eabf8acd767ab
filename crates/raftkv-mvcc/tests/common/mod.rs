//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use raft_core::{Entry, EntryPayload, Membership};
use raftkv_mvcc::{MvccOptions, MvccStore};
use raftkv_state::{CasAction, Command, Condition, KvConfig};

/// Small limits, so that refusals, session expiry and LRU eviction all
/// happen within a few dozen entries.
pub fn small_config() -> KvConfig {
    KvConfig {
        key_bytes_max: 4,
        value_bytes_max: 8,
        list_limit_max: 3,
        sessions_max: 2,
        session_ttl_entries: 6,
    }
}

pub fn options() -> MvccOptions {
    MvccOptions {
        cache_bytes: 4 * 1024 * 1024,
        verify_on_open: false,
    }
}

pub fn open(path: &Path, config: &KvConfig) -> MvccStore {
    MvccStore::open(path, config.clone(), options()).expect("open store")
}

pub fn store_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state.redb")
}

pub fn normal(index: u64, cmd: &Command) -> Entry {
    Entry {
        term: 1 + index / 10,
        index,
        payload: EntryPayload::Normal(cmd.encode()),
    }
}

/// What an entry carries, before it is given an index.
#[derive(Clone, Debug)]
pub enum Payload {
    Cmd(Command),
    Raw(Vec<u8>),
    Blank,
    Membership(Vec<u64>),
}

impl Payload {
    pub fn entry(&self, index: u64) -> Entry {
        let payload = match self {
            Payload::Cmd(c) => EntryPayload::Normal(c.encode()),
            Payload::Raw(b) => EntryPayload::Normal(Bytes::from(b.clone())),
            Payload::Blank => EntryPayload::Blank,
            Payload::Membership(v) => EntryPayload::Membership(Membership::new_voters(v.clone())),
        };
        Entry {
            term: 1 + index / 10,
            index,
            payload,
        }
    }
}

fn key() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        8 => prop::sample::select(vec!["a", "b", "ab", "abc", "b1", "c"]).prop_map(Bytes::from),
        1 => Just(Bytes::new()),
        1 => Just(Bytes::from("toolong")),
    ]
}

fn value() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        8 => prop::sample::select(vec!["", "x", "y", "zz", "12345678"]).prop_map(Bytes::from),
        1 => Just(Bytes::from("123456789")),
    ]
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        Just(Condition::Absent),
        value().prop_map(Condition::ValueEquals),
        (0u64..40).prop_map(Condition::ModRevisionEquals),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    let op = prop_oneof![
        4 => (key(), value(), any::<bool>()).prop_map(|(k, v, p)| {
            let c = Command::put(k, v);
            if p { c.with_prev_kv() } else { c }
        }),
        2 => (key(), any::<bool>()).prop_map(|(k, p)| {
            let c = Command::delete(k);
            if p { c.with_prev_kv() } else { c }
        }),
        2 => (key(), condition(), prop_oneof![value().prop_map(CasAction::Put), Just(CasAction::Delete)])
            .prop_map(|(k, c, a)| Command::cas(k, c, a)),
        1 => key().prop_map(Command::get),
        1 => (prop::sample::select(vec!["", "a", "b", "abcde"]), 0u64..5)
            .prop_map(|(p, l)| Command::list(p, l)),
    ];
    // Sessions: few clients, sequence numbers that go up, repeat and go back.
    (op, prop::option::weighted(0.6, (0u64..4, 0u64..6))).prop_map(|(c, s)| match s {
        Some((client, seq)) => c.with_session(client, seq),
        None => c,
    })
}

pub fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        20 => command().prop_map(Payload::Cmd),
        1 => prop::collection::vec(any::<u8>(), 0..6).prop_map(Payload::Raw),
        1 => Just(Payload::Blank),
        1 => prop::collection::btree_set(1u64..6, 1..4)
            .prop_map(|s| Payload::Membership(s.into_iter().collect())),
    ]
}
