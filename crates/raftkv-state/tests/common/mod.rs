//! Shared test driver: applies commands at consecutive log indexes.
#![allow(dead_code)]

use bytes::Bytes;
use raft_core::{Entry, EntryPayload, LogIndex, StateMachine};
use raftkv_state::{Command, KvConfig, KvStore, Response};

pub struct Driver {
    pub store: KvStore,
}

impl Driver {
    pub fn new(config: KvConfig) -> Driver {
        Driver {
            store: KvStore::new(config).unwrap(),
        }
    }

    pub fn next_index(&self) -> LogIndex {
        self.store.applied_index() + 1
    }

    pub fn apply_payload(&mut self, payload: EntryPayload) -> Response {
        let entry = Entry {
            term: 1,
            index: self.next_index(),
            payload,
        };
        let response = self.store.apply(&entry).unwrap();
        assert_eq!(self.store.applied_index(), entry.index);
        response
    }

    pub fn apply(&mut self, cmd: &Command) -> Response {
        self.apply_payload(EntryPayload::Normal(cmd.encode()))
    }

    pub fn apply_raw(&mut self, bytes: &[u8]) -> Response {
        self.apply_payload(EntryPayload::Normal(Bytes::copy_from_slice(bytes)))
    }

    pub fn blank(&mut self) -> Response {
        self.apply_payload(EntryPayload::Blank)
    }
}

pub fn small_config() -> KvConfig {
    KvConfig {
        key_bytes_max: 8,
        value_bytes_max: 16,
        list_limit_max: 4,
        sessions_max: 3,
        session_ttl_entries: 5,
    }
}
