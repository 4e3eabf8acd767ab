//! Property test: a random sequence of entries applied to the store and to
//! a deliberately simple model gives the same responses and state; and a
//! snapshot taken at any point, restored elsewhere and followed by the rest
//! of the entries gives the same digest and the same responses.
//!
//! `PROPTEST_CASES=5000 cargo test -p raftkv-state --test model` for a
//! longer run.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::small_config;
use proptest::prelude::*;
use raft_core::{Entry, EntryPayload, StateMachine};
use raftkv_state::{
    CasAction, CasResponse, Command, CommandError, Condition, DeleteResponse, GetResponse,
    KeyValue, KvConfig, KvStore, ListResponse, PutResponse, ReadCommand, Response, SessionInfo,
    WriteCommand, WriteOp,
};

// ---------------------------------------------------------------- model ---

#[derive(Clone, Debug)]
struct ModelRecord {
    value: Vec<u8>,
    create: u64,
    modr: u64,
    version: u64,
}

#[derive(Clone, Debug)]
struct ModelSession {
    client: u64,
    seq: u64,
    last_used: u64,
    response: Response,
}

/// The specification, written as plainly as possible: linear scans, no
/// auxiliary indexes.
struct Model {
    config: KvConfig,
    applied: u64,
    data: BTreeMap<Vec<u8>, ModelRecord>,
    sessions: Vec<ModelSession>,
}

impl Model {
    fn new(config: KvConfig) -> Model {
        Model {
            config,
            applied: 0,
            data: BTreeMap::new(),
            sessions: Vec::new(),
        }
    }

    fn kv(&self, key: &[u8]) -> Option<KeyValue> {
        self.data.get(key).map(|r| KeyValue {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(&r.value),
            create_revision: r.create,
            mod_revision: r.modr,
            version: r.version,
        })
    }

    fn check_key(&self, key: &[u8], allow_empty: bool) -> Result<(), CommandError> {
        if key.is_empty() && !allow_empty {
            return Err(CommandError::EmptyKey);
        }
        if key.len() as u64 > self.config.key_bytes_max {
            return Err(CommandError::KeyTooLarge {
                len: key.len() as u64,
                max: self.config.key_bytes_max,
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), CommandError> {
        if value.len() as u64 > self.config.value_bytes_max {
            return Err(CommandError::ValueTooLarge {
                len: value.len() as u64,
                max: self.config.value_bytes_max,
            });
        }
        Ok(())
    }

    fn apply(&mut self, payload: &EntryPayload) -> Response {
        self.applied += 1;
        let index = self.applied;
        let ttl = self.config.session_ttl_entries;
        self.sessions.retain(|s| index - s.last_used <= ttl);
        let bytes = match payload {
            EntryPayload::Normal(bytes) => bytes,
            _ => return Response::Noop,
        };
        match Command::decode(bytes) {
            Err(e) => Response::Rejected(CommandError::Undecodable(e)),
            Ok(Command::Read(read)) => self.read(&read),
            Ok(Command::Write(WriteCommand { session, op })) => {
                let Some(session) = session else {
                    return self.write(&op);
                };
                if let Some(s) = self
                    .sessions
                    .iter_mut()
                    .find(|s| s.client == session.client_id)
                {
                    s.last_used = index;
                    if session.seq == s.seq {
                        return s.response.clone();
                    }
                    if session.seq < s.seq {
                        return Response::Rejected(CommandError::StaleSequence {
                            client_id: session.client_id,
                            seq: session.seq,
                            latest_seq: s.seq,
                        });
                    }
                }
                let response = self.write(&op);
                if let Some(s) = self
                    .sessions
                    .iter_mut()
                    .find(|s| s.client == session.client_id)
                {
                    s.seq = session.seq;
                    s.response = response.clone();
                } else {
                    self.sessions.push(ModelSession {
                        client: session.client_id,
                        seq: session.seq,
                        last_used: index,
                        response: response.clone(),
                    });
                    if self.sessions.len() as u64 > self.config.sessions_max {
                        let oldest = (0..self.sessions.len())
                            .min_by_key(|&i| self.sessions[i].last_used)
                            .unwrap();
                        self.sessions.remove(oldest);
                    }
                }
                response
            }
        }
    }

    fn read(&self, read: &ReadCommand) -> Response {
        match read {
            ReadCommand::Get { key } => {
                if let Err(e) = self.check_key(key, false) {
                    return Response::Rejected(e);
                }
                Response::Get(GetResponse {
                    revision: self.applied,
                    kv: self.kv(key),
                })
            }
            ReadCommand::List {
                prefix,
                limit,
                start,
                end,
            } => {
                if let Err(e) = self.check_key(prefix, true) {
                    return Response::Rejected(e);
                }
                let bound_max = self.config.key_bytes_max + 1;
                for b in [start, end].into_iter().flatten() {
                    if b.len() as u64 > bound_max {
                        return Response::Rejected(CommandError::RangeBoundTooLarge {
                            len: b.len() as u64,
                            max: bound_max,
                        });
                    }
                }
                if *limit == 0 || *limit > self.config.list_limit_max {
                    return Response::Rejected(CommandError::ListLimitOutOfRange {
                        limit: *limit,
                        max: self.config.list_limit_max,
                    });
                }
                let all: Vec<KeyValue> = self
                    .data
                    .keys()
                    // The definition, not the scan: every key with the
                    // prefix inside [start, end).
                    .filter(|k| k.starts_with(prefix))
                    .filter(|k| start.as_ref().is_none_or(|s| k[..] >= s[..]))
                    .filter(|k| end.as_ref().is_none_or(|e| k[..] < e[..]))
                    .map(|k| self.kv(k).unwrap())
                    .collect();
                let more = all.len() as u64 > *limit;
                Response::List(ListResponse {
                    revision: self.applied,
                    kvs: all.into_iter().take(*limit as usize).collect(),
                    more,
                })
            }
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> (u64, u64) {
        let index = self.applied;
        let (create, version) = match self.data.get(key) {
            Some(r) => (r.create, r.version + 1),
            None => (index, 1),
        };
        self.data.insert(
            key.to_vec(),
            ModelRecord {
                value: value.to_vec(),
                create,
                modr: index,
                version,
            },
        );
        (create, version)
    }

    fn write(&mut self, op: &WriteOp) -> Response {
        let index = self.applied;
        match op {
            WriteOp::Put {
                key,
                value,
                prev_kv,
            } => {
                if let Err(e) = self
                    .check_key(key, false)
                    .and_then(|_| self.check_value(value))
                {
                    return Response::Rejected(e);
                }
                let prev = if *prev_kv { self.kv(key) } else { None };
                let (create_revision, version) = self.set(key, value);
                Response::Put(PutResponse {
                    revision: index,
                    create_revision,
                    version,
                    prev,
                })
            }
            WriteOp::Delete { key, prev_kv } => {
                if let Err(e) = self.check_key(key, false) {
                    return Response::Rejected(e);
                }
                let prev = self.kv(key);
                self.data.remove(&key[..]);
                Response::Delete(DeleteResponse {
                    revision: index,
                    deleted: prev.is_some(),
                    prev: if *prev_kv { prev } else { None },
                })
            }
            WriteOp::CompareAndSwap {
                key,
                condition,
                action,
            } => {
                let mut check = self.check_key(key, false);
                if let (Ok(()), Condition::ValueEquals(v)) = (&check, condition) {
                    check = self.check_value(v);
                }
                if let (Ok(()), CasAction::Put(v)) = (&check, action) {
                    check = self.check_value(v);
                }
                if let Err(e) = check {
                    return Response::Rejected(e);
                }
                let current = self.kv(key);
                let holds = match condition {
                    Condition::Absent => current.is_none(),
                    Condition::ValueEquals(v) => current.as_ref().is_some_and(|c| c.value == v),
                    Condition::ModRevisionEquals(r) => {
                        current.as_ref().map_or(0, |c| c.mod_revision) == *r
                    }
                };
                if !holds {
                    return Response::CompareAndSwap(CasResponse {
                        revision: index,
                        succeeded: false,
                        current,
                    });
                }
                match action {
                    CasAction::Put(v) => {
                        self.set(key, v);
                    }
                    CasAction::Delete => {
                        self.data.remove(&key[..]);
                    }
                }
                Response::CompareAndSwap(CasResponse {
                    revision: index,
                    succeeded: true,
                    current: self.kv(key),
                })
            }
        }
    }
}

// ------------------------------------------------------------ generation ---

const KEYS: &[&str] = &["a", "ab", "abc", "b", "ba", "c", "", "123456789"];
/// Range bounds: keys, points between keys (`ab\0` is just past `ab`),
/// and bounds of exactly and over `key_bytes_max + 1` bytes.
const BOUNDS: &[&[u8]] = &[
    b"",
    b"a",
    b"ab",
    b"ab\0",
    b"abc",
    b"b",
    b"b\xff",
    b"c",
    b"123456789",
    b"1234567890",
];
const VALUES: &[&str] = &["", "x", "yy", "zzz", "this is 17 bytes."];
const CLIENTS: u64 = 5;

#[derive(Clone, Debug)]
enum SeqChoice {
    Next,
    Retry,
    Stale,
    Any(u64),
}

#[derive(Clone, Debug)]
enum CondChoice {
    Absent,
    Value(usize),
    ModRev(u64),
    /// The key's current modification revision, as a client that just read
    /// it would send.
    CurrentModRev,
}

#[derive(Clone, Debug)]
enum Step {
    Put(usize, usize, bool),
    Delete(usize, bool),
    Cas(usize, CondChoice, Option<usize>),
    Get(usize),
    /// Prefix, limit, range start and end (indexes into `BOUNDS`).
    List(usize, u64, Option<usize>, Option<usize>),
    Blank,
    Garbage(Vec<u8>),
}

fn step() -> impl Strategy<Value = (Step, Option<(u64, SeqChoice)>)> {
    let key = 0..KEYS.len();
    let value = 0..VALUES.len();
    let cond = prop_oneof![
        Just(CondChoice::Absent),
        (0..VALUES.len()).prop_map(CondChoice::Value),
        (0u64..40).prop_map(CondChoice::ModRev),
        Just(CondChoice::CurrentModRev),
    ];
    let op = prop_oneof![
        4 => (key.clone(), value.clone(), any::<bool>()).prop_map(|(k, v, p)| Step::Put(k, v, p)),
        2 => (key.clone(), any::<bool>()).prop_map(|(k, p)| Step::Delete(k, p)),
        3 => (key.clone(), cond, proptest::option::of(value)).prop_map(|(k, c, a)| Step::Cas(k, c, a)),
        1 => key.clone().prop_map(Step::Get),
        2 => (
            key,
            0u64..6,
            proptest::option::of(0..BOUNDS.len()),
            proptest::option::of(0..BOUNDS.len())
        )
            .prop_map(|(k, l, s, e)| Step::List(k, l, s, e)),
        1 => Just(Step::Blank),
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(Step::Garbage),
    ];
    let seq = prop_oneof![
        4 => Just(SeqChoice::Next),
        2 => Just(SeqChoice::Retry),
        1 => Just(SeqChoice::Stale),
        1 => (0u64..8).prop_map(SeqChoice::Any),
    ];
    (op, proptest::option::weighted(0.6, (1..=CLIENTS, seq)))
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Turns the generated steps into entry payloads. Sequence numbers and
/// "current revision" conditions are resolved against what a client would
/// know (its own last seq; the model's current state).
fn to_payload(
    step: &Step,
    session: &Option<(u64, SeqChoice)>,
    last_seq: &mut [u64],
    model: &Model,
) -> EntryPayload {
    let cmd = match step {
        Step::Blank => return EntryPayload::Blank,
        Step::Garbage(b) => return EntryPayload::Normal(Bytes::copy_from_slice(b)),
        Step::Get(k) => Command::get(bytes(KEYS[*k])),
        Step::List(k, limit, start, end) => Command::Read(ReadCommand::List {
            prefix: bytes(KEYS[*k]),
            limit: *limit,
            start: start.map(|i| Bytes::copy_from_slice(BOUNDS[i])),
            end: end.map(|i| Bytes::copy_from_slice(BOUNDS[i])),
        }),
        Step::Put(k, v, prev) => {
            let c = Command::put(bytes(KEYS[*k]), bytes(VALUES[*v]));
            if *prev {
                c.with_prev_kv()
            } else {
                c
            }
        }
        Step::Delete(k, prev) => {
            let c = Command::delete(bytes(KEYS[*k]));
            if *prev {
                c.with_prev_kv()
            } else {
                c
            }
        }
        Step::Cas(k, cond, action) => {
            let key = KEYS[*k];
            let condition = match cond {
                CondChoice::Absent => Condition::Absent,
                CondChoice::Value(v) => Condition::ValueEquals(bytes(VALUES[*v])),
                CondChoice::ModRev(r) => Condition::ModRevisionEquals(*r),
                CondChoice::CurrentModRev => Condition::ModRevisionEquals(
                    model.kv(key.as_bytes()).map_or(0, |kv| kv.mod_revision),
                ),
            };
            let action = match action {
                Some(v) => CasAction::Put(bytes(VALUES[*v])),
                None => CasAction::Delete,
            };
            Command::cas(bytes(key), condition, action)
        }
    };
    let cmd = match (session, &cmd) {
        (Some((client, choice)), Command::Write(_)) => {
            let last = &mut last_seq[*client as usize];
            let seq = match choice {
                SeqChoice::Next => *last + 1,
                SeqChoice::Retry => *last,
                SeqChoice::Stale => last.saturating_sub(1),
                SeqChoice::Any(s) => *s,
            };
            *last = (*last).max(seq);
            cmd.with_session(*client, seq)
        }
        _ => cmd,
    };
    EntryPayload::Normal(cmd.encode())
}

fn entry(index: u64, payload: &EntryPayload) -> Entry {
    Entry {
        term: 1,
        index,
        payload: payload.clone(),
    }
}

fn assert_same_state(store: &KvStore, model: &Model) {
    store.validate().unwrap();
    assert_eq!(store.applied_index(), model.applied);
    assert_eq!(store.len(), model.data.len());
    for key in KEYS {
        assert_eq!(
            store.get(key.as_bytes()),
            model.kv(key.as_bytes()),
            "key {key:?}"
        );
    }
    assert_eq!(store.session_count(), model.sessions.len());
    for client in 0..=CLIENTS {
        let expected = model
            .sessions
            .iter()
            .find(|s| s.client == client)
            .map(|s| SessionInfo {
                last_seq: s.seq,
                last_used_index: s.last_used,
            });
        assert_eq!(store.session(client), expected, "client {client}");
    }
}

proptest! {
    #[test]
    fn store_matches_model_and_snapshots_replay(
        steps in proptest::collection::vec(step(), 1..80),
        cut_fraction in 0.0f64..=1.0,
    ) {
        let config = small_config();
        let mut store = KvStore::new(config.clone()).unwrap();
        let mut model = Model::new(config.clone());
        let mut last_seq = vec![0u64; CLIENTS as usize + 1];
        let mut payloads = Vec::new();
        let mut responses = Vec::new();
        for (step, session) in &steps {
            let payload = to_payload(step, session, &mut last_seq, &model);
            let index = store.applied_index() + 1;
            let got = store.apply(&entry(index, &payload)).unwrap();
            let want = model.apply(&payload);
            prop_assert_eq!(&got, &want, "step {:?} session {:?} at {}", step, session, index);
            payloads.push(payload);
            responses.push(got);
        }
        assert_same_state(&store, &model);
        // Every key also lists identically (exercises list over all keys).
        for key in KEYS {
            let read = ReadCommand::list(bytes(key), 4);
            prop_assert_eq!(store.execute_read(&read), model.read(&read));
        }

        // Snapshot after `cut` entries, restore into a fresh store (with
        // junk in it), replay the rest: same responses, same digest.
        let cut = ((payloads.len() as f64) * cut_fraction) as usize;
        let mut first = KvStore::new(config.clone()).unwrap();
        for (i, p) in payloads[..cut].iter().enumerate() {
            first.apply(&entry(i as u64 + 1, p)).unwrap();
        }
        let snap = first.snapshot().unwrap();
        let mut second = KvStore::new(config).unwrap();
        second.apply(&entry(1, &EntryPayload::Normal(Command::put("junk", "j").encode()))).unwrap();
        second.restore(&snap).unwrap();
        prop_assert_eq!(second.digest(), first.digest());
        // Entries already covered by the snapshot are ignored.
        if cut > 0 {
            prop_assert_eq!(
                second.apply(&entry(cut as u64, &payloads[cut - 1])).unwrap(),
                Response::AlreadyApplied { applied_index: cut as u64 }
            );
        }
        for (i, p) in payloads.iter().enumerate().skip(cut) {
            let got = second.apply(&entry(i as u64 + 1, p)).unwrap();
            prop_assert_eq!(&got, &responses[i]);
        }
        prop_assert_eq!(second.digest(), store.digest());
        prop_assert_eq!(second.snapshot().unwrap(), store.snapshot().unwrap());
    }
}
