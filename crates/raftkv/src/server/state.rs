//! The server's replicated state machine: the key-value store plus the
//! network addresses of every member.
//!
//! # Two engines
//!
//! The key-value state lives in raftkv-mvcc's durable `MvccStore` (the
//! default: a redb file, checkpointed, snapshots streamed through
//! [`SnapshotSource`] / [`SnapshotSink`]; the address book is the engine's
//! application record, written in the batch's transaction) or in the
//! in-memory `KvStore` (`--state-engine memory`: snapshotted whole, in the
//! layout below). [`KvRead`] reads either. Both answer every command the
//! same way.
//!
//! # Why addresses are replicated
//!
//! Raft's membership entries carry node ids only. To reach a node that was
//! added at runtime (to replicate to it, or to forward a client's write to
//! it once it leads), every node must learn its peer and client addresses.
//! Putting them in the same log as the data gives every replica the same
//! address book at the same log position, survives restarts and snapshots,
//! and needs no side channel.
//!
//! # Command envelope
//!
//! Every `EntryPayload::Normal` the server proposes starts with a tag byte:
//!
//! | tag | rest                                                         |
//! |-----|--------------------------------------------------------------|
//! | `1` | a [`raftkv_state::Command`] as encoded by `Command::encode`  |
//! | `2` | a members format version then postcard of a [`MemberOp`]   |
//!
//! Members format versions: `1` ([`MEMBERS_FORMAT_V1`]) holds addresses as
//! `SocketAddr` (IP only); `2` ([`MEMBERS_FORMAT_VERSION`]) holds them as
//! text, so host names stay as given. An operation whose addresses are all
//! IPs is still written as `1`, so a cluster that uses no host names writes
//! exactly what older binaries read (rolling upgrades); both are read.
//! Anything else (an unknown tag, undecodable bytes) is answered with
//! [`ServerResponse::Rejected`]: it changes nothing but still advances the
//! applied index, identically on every replica, so a bad entry can never
//! make replicas diverge or stop.
//!
//! # Snapshot layout (in-memory engine)
//!
//! | bytes | field                                                    |
//! |-------|----------------------------------------------------------|
//! | 4     | magic `RKSV`                                             |
//! | 1     | layout version: 1 (IP-only members part) or 2 (text addresses, [`SNAPSHOT_FORMAT_VERSION`]), chosen as for member operations |
//! | 4     | length `m` of the members part, little endian            |
//! | m     | postcard of `Vec<(NodeId, MemberAddrs)>`, ascending ids  |
//! | 8     | length `k` of the key-value part, little endian          |
//! | k     | the [`KvStore`] snapshot (itself versioned and checksummed) |
//! | 4     | CRC32C of every byte above, little endian                |
//!
//! `restore` checks everything on a decoded copy before replacing the state,
//! so a damaged snapshot changes nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use raft_runtime::PeerAddr;

use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use raft_core::{
    Entry, EntryPayload, LogIndex, Membership, NodeId, SnapshotSink, SnapshotSource, SourceMeta,
    StateMachine, Term,
};
use raftkv_mvcc::{MvccOptions, MvccStore, ReceivedSnapshot};
use raftkv_state::{
    Command, CommandError, KeyValue, KvConfig, KvStore, ListResponse, ReadCommand, Response,
    StateError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Tag byte of an envelope carrying a key-value [`Command`].
pub const TAG_KV: u8 = 1;
/// Tag byte of an envelope carrying a [`MemberOp`].
pub const TAG_MEMBERS: u8 = 2;
/// Version byte after [`TAG_MEMBERS`]; bump when [`MemberOp`] changes.
pub const MEMBERS_FORMAT_VERSION: u8 = 2;
/// The first members format: addresses as `SocketAddr`.
pub const MEMBERS_FORMAT_V1: u8 = 1;
/// Leading bytes of a server snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"RKSV";
/// Layout version of a server snapshot (2: text addresses; 1, still read
/// and written when every address is an IP: `SocketAddr`s).
pub const SNAPSHOT_FORMAT_VERSION: u8 = 2;
/// The first snapshot layout.
pub const SNAPSHOT_FORMAT_V1: u8 = 1;
/// Most members the address book holds. Membership changes add one node at
/// a time through an operator, so this is far above any real cluster; it
/// bounds the memory a misbehaving client could make every replica spend.
pub const MEMBERS_MAX: usize = 1024;

/// Where to reach one member, as given (a host name is replicated as
/// written and resolved by each node when it connects).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddrs {
    /// Raft peer traffic (the node's `--listen-peer`).
    pub peer_addr: PeerAddr,
    /// The HTTP client API (the node's `--listen-client`), used to forward
    /// requests to the leader.
    pub client_addr: PeerAddr,
}

/// [`MemberAddrs`] in members format 1.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct MemberAddrsV1 {
    peer_addr: SocketAddr,
    client_addr: SocketAddr,
}

impl MemberAddrs {
    /// The format-1 form, if both addresses are IPs.
    fn v1(&self) -> Option<MemberAddrsV1> {
        Some(MemberAddrsV1 {
            peer_addr: self.peer_addr.ip()?,
            client_addr: self.client_addr.ip()?,
        })
    }
}

impl From<MemberAddrsV1> for MemberAddrs {
    fn from(a: MemberAddrsV1) -> MemberAddrs {
        MemberAddrs {
            peer_addr: a.peer_addr.into(),
            client_addr: a.client_addr.into(),
        }
    }
}

/// [`MemberOp`] in members format 1 (same variants, same order).
#[derive(Clone, Debug, Serialize, Deserialize)]
enum MemberOpV1 {
    Set { id: NodeId, addrs: MemberAddrsV1 },
    Remove { id: NodeId },
}

impl MemberOp {
    /// The format-1 form, if every address in it is an IP.
    fn v1(&self) -> Option<MemberOpV1> {
        Some(match self {
            MemberOp::Set { id, addrs } => MemberOpV1::Set {
                id: *id,
                addrs: addrs.v1()?,
            },
            MemberOp::Remove { id } => MemberOpV1::Remove { id: *id },
        })
    }
}

impl From<MemberOpV1> for MemberOp {
    fn from(op: MemberOpV1) -> MemberOp {
        match op {
            MemberOpV1::Set { id, addrs } => MemberOp::Set {
                id,
                addrs: addrs.into(),
            },
            MemberOpV1::Remove { id } => MemberOp::Remove { id },
        }
    }
}

/// A change to the replicated address book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberOp {
    /// Records (or replaces) a member's addresses.
    Set { id: NodeId, addrs: MemberAddrs },
    /// Forgets a member's addresses.
    Remove { id: NodeId },
}

/// What the server proposes: the payload of a Normal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerCommand {
    Kv(Command),
    Members(MemberOp),
}

impl ServerCommand {
    /// Encodes the command into the envelope described in the module docs.
    pub fn encode(&self) -> Bytes {
        match self {
            ServerCommand::Kv(cmd) => {
                // Room for the envelope and a typical small command, so the
                // encoding rarely grows the buffer.
                let mut out = Vec::with_capacity(ENVELOPE_BYTES_GUESS + payload_bytes(cmd));
                out.push(TAG_KV);
                Bytes::from(cmd.encode_after(out))
            }
            ServerCommand::Members(op) => {
                // Serializing a plain enum into a Vec cannot fail: the Vec
                // grows as needed and every field has a fixed encoding.
                let out = match op.v1() {
                    Some(v1) => postcard::to_extend(&v1, vec![TAG_MEMBERS, MEMBERS_FORMAT_V1]),
                    None => postcard::to_extend(op, vec![TAG_MEMBERS, MEMBERS_FORMAT_VERSION]),
                }
                .expect("postcard into a Vec cannot fail");
                Bytes::from(out)
            }
        }
    }
}

/// Bytes of an encoded key-value command besides its keys and values: the
/// tag, the version, enum tags, varint lengths and the session. A guess
/// that sizes the encoding buffer; a larger command only grows it.
const ENVELOPE_BYTES_GUESS: usize = 40;

/// Bytes of the keys and values a command carries.
fn payload_bytes(cmd: &Command) -> usize {
    use raftkv_state::{CasAction, Condition, ReadCommand, WriteOp};
    match cmd {
        Command::Write(w) => match &w.op {
            WriteOp::Put { key, value, .. } => key.len() + value.len(),
            WriteOp::Delete { key, .. } => key.len(),
            WriteOp::CompareAndSwap {
                key,
                condition,
                action,
            } => {
                let expected = match condition {
                    Condition::ValueEquals(v) => v.len(),
                    Condition::Absent | Condition::ModRevisionEquals(_) => 0,
                };
                let new = match action {
                    CasAction::Put(v) => v.len(),
                    CasAction::Delete => 0,
                };
                key.len() + expected + new
            }
        },
        Command::Read(ReadCommand::Get { key }) => key.len(),
        Command::Read(ReadCommand::List { prefix, .. }) => prefix.len(),
    }
}

/// The answer to one applied entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerResponse {
    /// The key-value store's answer to a [`ServerCommand::Kv`] (or `Noop` /
    /// `AlreadyApplied` for blank and membership entries).
    Kv(Response),
    /// A [`MemberOp`] was applied.
    Members,
    /// The entry was not a command this build understands; nothing changed.
    Rejected(String),
}

/// Fatal errors of the server state machine: never the command's fault.
#[derive(Debug, thiserror::Error)]
pub enum ServerStateError {
    /// The key-value store refused to apply or restore (a driver bug, or a
    /// damaged key-value part of a snapshot).
    #[error(transparent)]
    Kv(#[from] StateError),
    /// The server snapshot is damaged or of an unknown layout.
    #[error("invalid server snapshot: {0}")]
    Snapshot(String),
    /// The durable key-value engine failed (its file, its disk): the
    /// state on this node can no longer be trusted to advance.
    #[error("key-value engine: {0}")]
    Engine(String),
}

/// Why the durable state could not be opened. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum OpenStateError {
    /// The engine refused the file (damaged, in use, not a store).
    #[error(transparent)]
    Engine(#[from] raftkv_mvcc::OpenError),
    /// The address book stored with the state does not decode.
    #[error("{file}: stored address book is damaged: {detail}")]
    Members {
        file: std::path::PathBuf,
        detail: String,
    },
}

/// Why a read of the key-value state failed.
#[derive(Debug, thiserror::Error)]
pub enum KvReadError {
    /// The read breaks a limit (key size, list limit).
    #[error(transparent)]
    Rejected(#[from] CommandError),
    /// The durable engine failed reading (a damaged record is refused,
    /// never served).
    #[error("key-value engine: {0}")]
    Engine(String),
}

impl From<raftkv_mvcc::ReadError> for KvReadError {
    fn from(e: raftkv_mvcc::ReadError) -> Self {
        match e {
            raftkv_mvcc::ReadError::Rejected(c) => KvReadError::Rejected(c),
            other => KvReadError::Engine(other.to_string()),
        }
    }
}

/// How much the key-value state holds, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvStats {
    pub keys: u64,
    pub data_bytes: u64,
    pub sessions: u64,
}

/// Read access to the key-value state, whichever engine holds it. Taken
/// under the state machine's read lock (see `ServerState::kv`).
#[derive(Clone, Copy)]
pub enum KvRead<'a> {
    Memory(&'a KvStore),
    Durable(&'a MvccStore),
}

impl KvRead<'_> {
    /// The key's current value, if it exists.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, KvReadError> {
        match self {
            KvRead::Memory(kv) => Ok(kv.get(key)),
            KvRead::Durable(kv) => Ok(kv.get(key)?),
        }
    }

    /// Up to `limit` keys starting with `prefix`, in key order.
    pub fn list(&self, prefix: &[u8], limit: u64) -> Result<ListResponse, KvReadError> {
        match self {
            KvRead::Memory(kv) => Ok(kv.list(prefix, limit)?),
            KvRead::Durable(kv) => Ok(kv.list(prefix, limit)?),
        }
    }

    /// Runs a read exactly as applying it through the log would answer.
    pub fn execute_read(&self, read: &ReadCommand) -> Result<Response, KvReadError> {
        match self {
            KvRead::Memory(kv) => Ok(kv.execute_read(read)),
            KvRead::Durable(kv) => Ok(kv.execute_read(read)?),
        }
    }

    /// Keys, bytes and sessions held.
    pub fn stats(&self) -> Result<KvStats, KvReadError> {
        match self {
            KvRead::Memory(kv) => Ok(KvStats {
                keys: kv.len() as u64,
                data_bytes: kv.data_bytes(),
                sessions: kv.session_count() as u64,
            }),
            KvRead::Durable(kv) => {
                let view = kv.view().map_err(|e| KvReadError::Engine(e.to_string()))?;
                let engine = |e: raftkv_mvcc::Fault| KvReadError::Engine(e.to_string());
                Ok(KvStats {
                    keys: view.len().map_err(engine)?,
                    data_bytes: view.state().data_bytes,
                    sessions: view.session_count().map_err(engine)?,
                })
            }
        }
    }

    /// The digest two replicas with the same state share (see
    /// `KvStore::digest`; the durable engine computes the same value).
    pub fn digest(&self) -> Result<u64, KvReadError> {
        match self {
            KvRead::Memory(kv) => Ok(kv.digest()),
            KvRead::Durable(kv) => Ok(kv.digest()?),
        }
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> LogIndex {
        match self {
            KvRead::Memory(kv) => kv.applied_index(),
            KvRead::Durable(kv) => kv.applied_index(),
        }
    }

    /// Checks every invariant of the stored state (reads all of it: for
    /// tests and the simulator).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            KvRead::Memory(kv) => kv.validate().map_err(str::to_string),
            KvRead::Durable(kv) => {
                let view = kv.view().map_err(|e| e.to_string())?;
                view.verify().map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }
}

/// Where the key-value state lives.
enum KvEngine {
    /// In memory, snapshotted whole: `--state-engine memory`.
    Memory(KvStore),
    /// In a redb file (raftkv-mvcc), checkpointed, snapshots streamed.
    Durable(Box<DurableKv>),
}

/// The durable engine and the snapshot received for it, if any.
struct DurableKv {
    store: MvccStore,
    /// A snapshot received (durable beside the live file) and not yet
    /// installed: put by a sink's `finish`, taken by `restore`.
    received: Arc<Mutex<Option<ReceivedSnapshot>>>,
}

/// The replicated state of one raftkv server. See the module docs.
pub struct ServerState {
    kv: KvEngine,
    members: BTreeMap<NodeId, MemberAddrs>,
    /// Publishes the address book after every change, so a task outside the
    /// driver can hand new addresses to the transport. (Applying runs inside
    /// the driver task, which cannot wait on its own admin queue.) A watch
    /// channel holds only the latest value: bounded, and never loses the
    /// final state.
    publish: watch::Sender<BTreeMap<NodeId, MemberAddrs>>,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("applied_index", &self.applied_index())
            .field(
                "engine",
                &match self.kv {
                    KvEngine::Memory(_) => "memory",
                    KvEngine::Durable(_) => "durable",
                },
            )
            .field("members", &self.members)
            .finish()
    }
}

impl ServerState {
    /// An empty in-memory state. The returned receiver sees every
    /// address-book change.
    pub fn new(config: KvConfig) -> Result<(Self, AddressBook), raftkv_state::KvConfigError> {
        let kv = KvStore::new(config)?;
        let (publish, rx) = watch::channel(BTreeMap::new());
        Ok((
            ServerState {
                kv: KvEngine::Memory(kv),
                members: BTreeMap::new(),
                publish,
            },
            rx,
        ))
    }

    /// Opens (or creates) the durable state in `file`: the key-value data,
    /// the client sessions, the applied index and the address book, as of
    /// the engine's last checkpoint. The host replays the log after it.
    pub fn open_durable(
        file: &Path,
        config: KvConfig,
        options: MvccOptions,
    ) -> Result<(Self, AddressBook), OpenStateError> {
        let store = MvccStore::open(file, config, options)?;
        Self::from_durable(store)
    }

    /// Wraps an opened durable store (e.g. one on a simulated disk). A
    /// received snapshot kept from before that the state already covers
    /// is removed (one ahead of it stays: the log may have recorded it, and
    /// `restore` then installs it).
    pub fn from_durable(store: MvccStore) -> Result<(Self, AddressBook), OpenStateError> {
        if let Some(r) = store.take_received()? {
            if r.state().applied_index <= store.applied_index() {
                drop(r);
                store.discard_received().map_err(|source| {
                    OpenStateError::Engine(raftkv_mvcc::OpenError::Io {
                        file: store.path().to_path_buf(),
                        source,
                    })
                })?;
            }
        }
        let members =
            decode_members_blob(store.app_state()).map_err(|detail| OpenStateError::Members {
                file: store.path().to_path_buf(),
                detail,
            })?;
        let (publish, rx) = watch::channel(members.clone());
        Ok((
            ServerState {
                kv: KvEngine::Durable(Box::new(DurableKv {
                    store,
                    received: Arc::new(Mutex::new(None)),
                })),
                members,
                publish,
            },
            rx,
        ))
    }

    /// Read access to the key-value state (take the state machine's read
    /// lock around it).
    pub fn kv(&self) -> KvRead<'_> {
        match &self.kv {
            KvEngine::Memory(kv) => KvRead::Memory(kv),
            KvEngine::Durable(d) => KvRead::Durable(&d.store),
        }
    }

    /// The durable engine, if the state lives in one.
    pub fn durable_store(&self) -> Option<&MvccStore> {
        match &self.kv {
            KvEngine::Memory(_) => None,
            KvEngine::Durable(d) => Some(&d.store),
        }
    }

    /// The replicated address book.
    pub fn members(&self) -> &BTreeMap<NodeId, MemberAddrs> {
        &self.members
    }

    /// Applies an address-book change to `self.members` (and publishes
    /// it); true if the book changed.
    fn apply_member_op(&mut self, op: MemberOp) -> ServerResponse {
        match op {
            MemberOp::Set { id, addrs } => {
                if id == 0 {
                    return ServerResponse::Rejected("node id 0 is reserved".into());
                }
                if !self.members.contains_key(&id) && self.members.len() >= MEMBERS_MAX {
                    return ServerResponse::Rejected(format!(
                        "address book full ({MEMBERS_MAX} members)"
                    ));
                }
                self.members.insert(id, addrs);
            }
            MemberOp::Remove { id } => {
                self.members.remove(&id);
            }
        }
        self.publish.send_replace(self.members.clone());
        ServerResponse::Members
    }

    /// What the key-value engine is handed for `entry`, and the answer the
    /// server gives instead of the engine's when it is not a key-value
    /// command (`None`: the engine's answer stands).
    fn route(&mut self, entry: &Entry) -> (Entry, Option<ServerResponse>) {
        let data = match &entry.payload {
            EntryPayload::Blank | EntryPayload::Membership(_) => return (entry.clone(), None),
            EntryPayload::Normal(data) => data,
        };
        match data.first() {
            // The inner command, at the same position.
            Some(&TAG_KV) => (
                Entry {
                    term: entry.term,
                    index: entry.index,
                    payload: EntryPayload::Normal(data.slice(1..)),
                },
                None,
            ),
            Some(&TAG_MEMBERS) => {
                let answer = match decode_member_op(&data[1..]) {
                    Ok(op) => self.apply_member_op(op),
                    Err(e) => ServerResponse::Rejected(e),
                };
                (blank(entry), Some(answer))
            }
            Some(&tag) => (
                blank(entry),
                Some(ServerResponse::Rejected(format!(
                    "unknown command tag {tag}"
                ))),
            ),
            None => (
                blank(entry),
                Some(ServerResponse::Rejected("empty command".into())),
            ),
        }
    }

    /// Applies a batch to the durable engine in one transaction, the
    /// address book with it when the batch changed it.
    fn apply_durable(
        &mut self,
        entries: &[Entry],
    ) -> Result<Vec<ServerResponse>, ServerStateError> {
        let before = self.members.clone();
        let mut routed = Vec::with_capacity(entries.len());
        let mut answers = Vec::with_capacity(entries.len());
        for e in entries {
            let (inner, answer) = self.route(e);
            routed.push(inner);
            answers.push(answer);
        }
        let app = (self.members != before).then(|| encode_members_blob(&self.members));
        let KvEngine::Durable(d) = &mut self.kv else {
            unreachable!("called for the durable engine only");
        };
        let responses = match d.store.apply_batch_with_app(&routed, app) {
            Ok(r) => r,
            Err(e) => {
                // Nothing of the batch was applied: neither was the book.
                self.members = before;
                return Err(ServerStateError::Engine(e.to_string()));
            }
        };
        Ok(responses
            .into_iter()
            .zip(answers)
            .map(|(r, a)| a.unwrap_or(ServerResponse::Kv(r)))
            .collect())
    }
}

/// A blank entry at `entry`'s position: advances the index, changes
/// nothing else.
fn blank(entry: &Entry) -> Entry {
    Entry {
        term: entry.term,
        index: entry.index,
        payload: EntryPayload::Blank,
    }
}

/// Version byte of the address book stored with the durable state.
const MEMBERS_BLOB_VERSION: u8 = 1;

/// The address book as stored with the durable state: a version byte, then
/// postcard of `Vec<(NodeId, MemberAddrs)>` in ascending id order.
fn encode_members_blob(members: &BTreeMap<NodeId, MemberAddrs>) -> Vec<u8> {
    let all: Vec<(&NodeId, &MemberAddrs)> = members.iter().collect();
    // Serializing plain data into a Vec cannot fail.
    postcard::to_extend(&all, vec![MEMBERS_BLOB_VERSION]).expect("postcard into a Vec cannot fail")
}

fn decode_members_blob(bytes: &[u8]) -> Result<BTreeMap<NodeId, MemberAddrs>, String> {
    let Some((&version, body)) = bytes.split_first() else {
        return Ok(BTreeMap::new()); // a new store: no book yet
    };
    if version != MEMBERS_BLOB_VERSION {
        return Err(format!("unknown address book version {version}"));
    }
    let list: Vec<(NodeId, MemberAddrs)> =
        postcard::from_bytes(body).map_err(|e| format!("malformed address book: {e}"))?;
    if list.len() > MEMBERS_MAX {
        return Err(format!("{} members, at most {MEMBERS_MAX}", list.len()));
    }
    Ok(list.into_iter().collect())
}

/// Receives the replicated address book after each change.
pub type AddressBook = watch::Receiver<BTreeMap<NodeId, MemberAddrs>>;

/// Leading bytes of the descriptor a durable sink hands to `restore`.
const RECEIVED_MAGIC: [u8; 4] = *b"RKRS";
/// Bytes of one snapshot chunk streamed to a follower.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

impl StateMachine for ServerState {
    type Response = ServerResponse;
    type Error = ServerStateError;

    fn apply(&mut self, entry: &Entry) -> Result<ServerResponse, ServerStateError> {
        let mut r = self.apply_batch(std::slice::from_ref(entry))?;
        // apply_batch answers every entry.
        Ok(r.pop().expect("one entry, one answer"))
    }

    fn apply_batch(&mut self, entries: &[Entry]) -> Result<Vec<ServerResponse>, ServerStateError> {
        let applied = self.applied_index();
        // Replayed after a snapshot restore: already part of the state.
        let fresh = entries.partition_point(|e| e.index <= applied);
        let mut out: Vec<ServerResponse> = entries[..fresh]
            .iter()
            .map(|_| {
                ServerResponse::Kv(Response::AlreadyApplied {
                    applied_index: applied,
                })
            })
            .collect();
        let entries = &entries[fresh..];
        if entries.is_empty() {
            return Ok(out);
        }
        if matches!(self.kv, KvEngine::Durable(_)) {
            out.extend(self.apply_durable(entries)?);
            return Ok(out);
        }
        for e in entries {
            let (inner, answer) = self.route(e);
            let KvEngine::Memory(kv) = &mut self.kv else {
                unreachable!("checked above");
            };
            let r = kv.apply(&inner)?;
            out.push(answer.unwrap_or(ServerResponse::Kv(r)));
        }
        Ok(out)
    }

    fn applied_index(&self) -> LogIndex {
        self.kv().applied_index()
    }

    fn snapshot(&self) -> Result<Vec<u8>, ServerStateError> {
        let KvEngine::Memory(kv) = &self.kv else {
            return Err(ServerStateError::Snapshot(
                "the durable engine streams its snapshots".into(),
            ));
        };
        let kv = kv.snapshot()?;
        let v1: Option<Vec<(NodeId, MemberAddrsV1)>> = self
            .members
            .iter()
            .map(|(id, a)| Some((*id, a.v1()?)))
            .collect();
        // Serializing plain data into a Vec cannot fail.
        let (layout, members) = match v1 {
            Some(v1) => (SNAPSHOT_FORMAT_V1, postcard::to_allocvec(&v1)),
            None => {
                let all: Vec<(&NodeId, &MemberAddrs)> = self.members.iter().collect();
                (SNAPSHOT_FORMAT_VERSION, postcard::to_allocvec(&all))
            }
        };
        let members = members.expect("postcard into a Vec cannot fail");
        let members_len = u32::try_from(members.len())
            .map_err(|_| ServerStateError::Snapshot("members part over 4 GiB".into()))?;
        let mut out = Vec::with_capacity(4 + 1 + 4 + members.len() + 8 + kv.len() + 4);
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.push(layout);
        out.extend_from_slice(&members_len.to_le_bytes());
        out.extend_from_slice(&members);
        out.extend_from_slice(&(kv.len() as u64).to_le_bytes());
        out.extend_from_slice(&kv);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// In memory: a snapshot's bytes. Durable: the descriptor of the
    /// snapshot a sink received; switches to it (an atomic rename) and
    /// reloads the address book stored with it.
    fn restore(&mut self, data: &[u8]) -> Result<(), ServerStateError> {
        match &mut self.kv {
            KvEngine::Memory(kv) => {
                let (members, kv_bytes) =
                    parse_snapshot(data).map_err(ServerStateError::Snapshot)?;
                let mut fresh = KvStore::new(kv.config().clone())
                    .map_err(|e| ServerStateError::Snapshot(e.to_string()))?;
                fresh.restore(kv_bytes)?;
                *kv = fresh;
                self.members = members;
            }
            KvEngine::Durable(d) => {
                let (index, term) = parse_received(data).map_err(ServerStateError::Snapshot)?;
                let held = d.received.lock().unwrap_or_else(|e| e.into_inner()).take();
                // After a crash between the log recording the snapshot and
                // the switch, the received file is found again on disk.
                let received = match held {
                    Some(r) => r,
                    None => d
                        .store
                        .take_received()
                        .map_err(|e| ServerStateError::Engine(e.to_string()))?
                        .ok_or_else(|| {
                            ServerStateError::Snapshot(format!(
                                "no received snapshot to install at {index} (its file is \
                                 gone: remove this node's data directory and add it again)"
                            ))
                        })?,
                };
                let got = received.state();
                if (got.applied_index, got.applied_term) != (index, term) {
                    return Err(ServerStateError::Snapshot(format!(
                        "the received snapshot covers {}@{}, the log recorded {index}@{term}",
                        got.applied_index, got.applied_term
                    )));
                }
                d.store
                    .install(received)
                    .map_err(|e| ServerStateError::Engine(e.to_string()))?;
                let members =
                    decode_members_blob(d.store.app_state()).map_err(ServerStateError::Snapshot)?;
                self.members = members;
            }
        }
        self.publish.send_replace(self.members.clone());
        Ok(())
    }

    fn durable_applied_index(&self) -> Option<LogIndex> {
        self.durable_store().map(|s| s.durable_applied_index())
    }

    fn checkpoint(&self) -> Result<LogIndex, ServerStateError> {
        match &self.kv {
            KvEngine::Memory(kv) => Ok(kv.applied_index()),
            KvEngine::Durable(d) => d
                .store
                .checkpoint()
                .map_err(|e| ServerStateError::Engine(e.to_string())),
        }
    }

    fn applied_meta(&self) -> (Term, Option<Membership>) {
        match &self.kv {
            KvEngine::Memory(_) => (0, None),
            KvEngine::Durable(d) => {
                let st = d.store.state();
                (st.applied_term, st.membership.clone())
            }
        }
    }

    fn snapshot_source(&self) -> Result<Box<dyn SnapshotSource>, String> {
        let KvEngine::Durable(d) = &self.kv else {
            return Err("the in-memory engine sends snapshots whole".into());
        };
        let source = d
            .store
            .snapshot_source(SNAPSHOT_CHUNK_BYTES)
            .map_err(|e| e.to_string())?;
        Ok(Box::new(Source(source)))
    }

    fn snapshot_sink(&self) -> Result<Box<dyn SnapshotSink>, String> {
        let KvEngine::Durable(d) = &self.kv else {
            return Err("the in-memory engine receives snapshots whole".into());
        };
        let receiver = d.store.snapshot_receiver().map_err(|e| e.to_string())?;
        Ok(Box::new(Sink {
            receiver,
            slot: d.received.clone(),
        }))
    }
}

/// A durable engine's snapshot stream, chunk by chunk.
struct Source(raftkv_mvcc::SnapshotSource);

impl SnapshotSource for Source {
    fn meta(&self) -> SourceMeta {
        let st = self.0.state();
        SourceMeta {
            last_index: st.applied_index,
            last_term: st.applied_term,
            membership: st.membership.clone(),
        }
    }

    fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self.0.next() {
            None => Ok(None),
            Some(Ok(chunk)) => Ok(Some(Bytes::from(chunk.encode()))),
            Some(Err(e)) => Err(e.to_string()),
        }
    }
}

/// Builds a received stream beside the live engine file; `finish` leaves
/// it in `slot` for `restore`.
struct Sink {
    receiver: raftkv_mvcc::SnapshotReceiver,
    slot: Arc<Mutex<Option<ReceivedSnapshot>>>,
}

impl SnapshotSink for Sink {
    fn push(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (chunk, used) =
            raftkv_mvcc::SnapshotChunk::decode_prefix(bytes).map_err(|e| e.to_string())?;
        if used != bytes.len() {
            return Err(format!(
                "{} bytes after a snapshot chunk in one frame",
                bytes.len() - used
            ));
        }
        self.receiver.push(&chunk).map_err(|e| e.to_string())
    }

    fn finish(self: Box<Self>) -> Result<(SourceMeta, Bytes), String> {
        let received = self.receiver.finish().map_err(|e| e.to_string())?;
        let st = received.state();
        let meta = SourceMeta {
            last_index: st.applied_index,
            last_term: st.applied_term,
            membership: st.membership.clone(),
        };
        let mut desc = Vec::with_capacity(20);
        desc.extend_from_slice(&RECEIVED_MAGIC);
        desc.extend_from_slice(&meta.last_index.to_le_bytes());
        desc.extend_from_slice(&meta.last_term.to_le_bytes());
        // A newer stream replaces one never installed (the engine refused
        // it); the descriptor names its index, so the wrong one is refused.
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(received);
        Ok((meta, Bytes::from(desc)))
    }
}

/// The index and term a durable sink's descriptor names.
fn parse_received(data: &[u8]) -> Result<(LogIndex, Term), String> {
    if data.len() != 20 || data[..4] != RECEIVED_MAGIC {
        return Err("not a received-snapshot descriptor".into());
    }
    let index = u64::from_le_bytes(data[4..12].try_into().map_err(|_| "short index")?);
    let term = u64::from_le_bytes(data[12..20].try_into().map_err(|_| "short term")?);
    Ok((index, term))
}

fn decode_member_op(bytes: &[u8]) -> Result<MemberOp, String> {
    let (&version, body) = bytes.split_first().ok_or("empty member command")?;
    let malformed = |e: postcard::Error| format!("malformed member command: {e}");
    let (op, rest) = match version {
        MEMBERS_FORMAT_V1 => {
            let (op, rest) = postcard::take_from_bytes::<MemberOpV1>(body).map_err(malformed)?;
            (MemberOp::from(op), rest)
        }
        MEMBERS_FORMAT_VERSION => postcard::take_from_bytes::<MemberOp>(body).map_err(malformed)?,
        _ => return Err(format!("unsupported member command version {version}")),
    };
    if !rest.is_empty() {
        return Err(format!(
            "{} trailing bytes after member command",
            rest.len()
        ));
    }
    Ok(op)
}

type ParsedSnapshot<'a> = (BTreeMap<NodeId, MemberAddrs>, &'a [u8]);

/// Splits and checks a server snapshot; returns the address book and the
/// key-value part. Never panics on any input.
fn parse_snapshot(data: &[u8]) -> Result<ParsedSnapshot<'_>, String> {
    const FIXED_BYTES: usize = 4 + 1 + 4 + 8 + 4;
    if data.len() < FIXED_BYTES {
        return Err(format!("{} bytes is shorter than the header", data.len()));
    }
    let (body, crc) = data.split_at(data.len() - 4);
    let expected = u32::from_le_bytes(crc.try_into().map_err(|_| "short checksum")?);
    let actual = crc32c::crc32c(body);
    if expected != actual {
        return Err(format!(
            "checksum mismatch: stored {expected:#010x}, computed {actual:#010x}"
        ));
    }
    if body[..4] != SNAPSHOT_MAGIC {
        return Err("bad magic: not a raftkv server snapshot".into());
    }
    let layout = body[4];
    if layout != SNAPSHOT_FORMAT_V1 && layout != SNAPSHOT_FORMAT_VERSION {
        return Err(format!("unsupported layout version {layout}"));
    }
    let mut rest = &body[5..];
    let members_len = take_len(&mut rest, 4)? as usize;
    if members_len > rest.len() {
        return Err("members part longer than the snapshot".into());
    }
    let (members_bytes, after) = rest.split_at(members_len);
    rest = after;
    let kv_len = take_len(&mut rest, 8)?;
    if kv_len != rest.len() as u64 {
        return Err(format!(
            "key-value part declared {kv_len} bytes, {} present",
            rest.len()
        ));
    }
    let malformed = |e: postcard::Error| format!("malformed members part: {e}");
    let (list, extra) = if layout == SNAPSHOT_FORMAT_V1 {
        let (list, extra) =
            postcard::take_from_bytes::<Vec<(NodeId, MemberAddrsV1)>>(members_bytes)
                .map_err(malformed)?;
        let list: Vec<(NodeId, MemberAddrs)> =
            list.into_iter().map(|(id, a)| (id, a.into())).collect();
        (list, extra)
    } else {
        postcard::take_from_bytes::<Vec<(NodeId, MemberAddrs)>>(members_bytes).map_err(malformed)?
    };
    if !extra.is_empty() {
        return Err("trailing bytes in the members part".into());
    }
    if list.len() > MEMBERS_MAX {
        return Err(format!("{} members, at most {MEMBERS_MAX}", list.len()));
    }
    let mut members = BTreeMap::new();
    let mut last = 0;
    for (id, addrs) in list {
        // Canonical: strictly ascending, no reserved id.
        if id <= last {
            return Err("member ids not strictly ascending (or id 0)".into());
        }
        last = id;
        members.insert(id, addrs);
    }
    Ok((members, rest))
}

/// Reads a little-endian length of `width` (4 or 8) bytes off the front.
fn take_len(rest: &mut &[u8], width: usize) -> Result<u64, String> {
    if rest.len() < width {
        return Err("truncated length field".into());
    }
    let (len, after) = rest.split_at(width);
    *rest = after;
    let mut buf = [0u8; 8];
    buf[..width].copy_from_slice(len);
    Ok(u64::from_le_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> MemberAddrs {
        MemberAddrs {
            peer_addr: SocketAddr::from(([127, 0, 0, 1], 7800 + n)).into(),
            client_addr: SocketAddr::from(([127, 0, 0, 1], 7700 + n)).into(),
        }
    }

    fn host_addrs(n: u16) -> MemberAddrs {
        MemberAddrs {
            peer_addr: PeerAddr::Host(format!("node{n}"), 7800),
            client_addr: SocketAddr::from(([10, 0, 0, 1], 7700 + n)).into(),
        }
    }

    #[test]
    fn ip_only_member_ops_keep_format_1_and_host_names_use_format_2() {
        let ip = ServerCommand::Members(MemberOp::Set {
            id: 4,
            addrs: addrs(4),
        })
        .encode();
        assert_eq!(ip[..2], [TAG_MEMBERS, MEMBERS_FORMAT_V1]);
        // Byte for byte what the first format wrote.
        let v1 = MemberOpV1::Set {
            id: 4,
            addrs: MemberAddrsV1 {
                peer_addr: SocketAddr::from(([127, 0, 0, 1], 7804)),
                client_addr: SocketAddr::from(([127, 0, 0, 1], 7704)),
            },
        };
        assert_eq!(
            ip[..],
            postcard::to_extend(&v1, vec![TAG_MEMBERS, 1]).unwrap()[..]
        );
        let host = ServerCommand::Members(MemberOp::Set {
            id: 5,
            addrs: host_addrs(5),
        });
        assert_eq!(host.encode()[..2], [TAG_MEMBERS, MEMBERS_FORMAT_VERSION]);
        let (mut s, mut book) = state();
        s.apply(&entry(
            1,
            &ServerCommand::Members(MemberOp::Set {
                id: 4,
                addrs: addrs(4),
            }),
        ))
        .unwrap();
        assert_eq!(s.apply(&entry(2, &host)).unwrap(), ServerResponse::Members);
        assert_eq!(book.borrow_and_update().get(&5), Some(&host_addrs(5)));
        // A snapshot with a host name uses layout 2 and round-trips.
        let snap = s.snapshot().unwrap();
        assert_eq!(snap[4], SNAPSHOT_FORMAT_VERSION);
        let (mut t, _b) = state();
        t.restore(&snap).unwrap();
        assert_eq!(t.members(), s.members());
        assert_eq!(t.members()[&5].peer_addr.to_string(), "node5:7800");
        // A bad host name inside a well-formed format-2 op is refused.
        let bad = postcard::to_extend(
            &(0u32, 6u64, "bad host:1", "10.0.0.1:1"),
            vec![TAG_MEMBERS, MEMBERS_FORMAT_VERSION],
        )
        .unwrap();
        let e = Entry {
            term: 1,
            index: 3,
            payload: EntryPayload::Normal(Bytes::from(bad)),
        };
        assert!(matches!(s.apply(&e).unwrap(), ServerResponse::Rejected(_)));
        assert!(!s.members().contains_key(&6));
    }

    fn entry(index: LogIndex, cmd: &ServerCommand) -> Entry {
        Entry {
            term: 1,
            index,
            payload: EntryPayload::Normal(cmd.encode()),
        }
    }

    fn state() -> (ServerState, AddressBook) {
        ServerState::new(KvConfig::default()).unwrap()
    }

    #[test]
    fn kv_and_member_commands_share_one_index_sequence() {
        let (mut s, mut book) = state();
        let put = ServerCommand::Kv(Command::put("k", "v"));
        let set = ServerCommand::Members(MemberOp::Set {
            id: 4,
            addrs: addrs(4),
        });
        let ServerResponse::Kv(Response::Put(p)) = s.apply(&entry(1, &put)).unwrap() else {
            panic!("put answers Put");
        };
        assert_eq!(p.revision, 1);
        assert_eq!(s.apply(&entry(2, &set)).unwrap(), ServerResponse::Members);
        assert_eq!(s.applied_index(), 2);
        assert!(book.has_changed().unwrap());
        assert_eq!(book.borrow_and_update().get(&4), Some(&addrs(4)));
        // The next key-value write gets the next index as its revision.
        let ServerResponse::Kv(Response::Put(p)) = s.apply(&entry(3, &put)).unwrap() else {
            panic!("put answers Put");
        };
        assert_eq!((p.revision, p.version), (3, 2));
        // Replays are ignored, member ops included.
        let remove = ServerCommand::Members(MemberOp::Remove { id: 4 });
        assert!(matches!(
            s.apply(&entry(2, &remove)).unwrap(),
            ServerResponse::Kv(Response::AlreadyApplied { applied_index: 3 })
        ));
        assert!(s.members().contains_key(&4));
        assert_eq!(
            s.apply(&entry(4, &remove)).unwrap(),
            ServerResponse::Members
        );
        assert!(s.members().is_empty());
    }

    #[test]
    fn garbage_entries_are_rejected_but_advance_the_index() {
        let (mut s, _book) = state();
        for (i, bytes) in [
            vec![],
            vec![9, 1, 2],
            vec![TAG_MEMBERS],
            vec![TAG_MEMBERS, 77],
            vec![TAG_MEMBERS, MEMBERS_FORMAT_VERSION, 200],
        ]
        .into_iter()
        .enumerate()
        {
            let e = Entry {
                term: 1,
                index: i as u64 + 1,
                payload: EntryPayload::Normal(Bytes::from(bytes)),
            };
            assert!(matches!(s.apply(&e).unwrap(), ServerResponse::Rejected(_)));
        }
        // A broken key-value command is the store's rejection.
        let e = Entry {
            term: 1,
            index: 6,
            payload: EntryPayload::Normal(Bytes::from_static(&[TAG_KV, 99])),
        };
        assert!(matches!(
            s.apply(&e).unwrap(),
            ServerResponse::Kv(Response::Rejected(_))
        ));
        assert_eq!(s.applied_index(), 6);
        assert!(s.kv().stats().unwrap().keys == 0 && s.members().is_empty());
    }

    #[test]
    fn snapshot_round_trips_and_damage_changes_nothing() {
        let (mut s, _b) = state();
        s.apply(&entry(1, &ServerCommand::Kv(Command::put("a", "1"))))
            .unwrap();
        s.apply(&entry(
            2,
            &ServerCommand::Members(MemberOp::Set {
                id: 2,
                addrs: addrs(2),
            }),
        ))
        .unwrap();
        let snap = s.snapshot().unwrap();
        let (mut t, mut book) = state();
        t.restore(&snap).unwrap();
        assert_eq!(t.applied_index(), 2);
        assert_eq!(t.kv().get(b"a").unwrap().unwrap().value, "1");
        assert_eq!(t.members(), s.members());
        assert_eq!(book.borrow_and_update().get(&2), Some(&addrs(2)));
        assert_eq!(t.snapshot().unwrap(), snap, "encoding is canonical");
        assert_eq!(snap[4], SNAPSHOT_FORMAT_V1, "IP-only: the first layout");

        // Every single-byte corruption and every truncation is refused and
        // leaves the state as it was.
        let (mut u, _b) = state();
        u.apply(&entry(1, &ServerCommand::Kv(Command::put("z", "9"))))
            .unwrap();
        for i in 0..snap.len() {
            let mut bad = snap.clone();
            bad[i] ^= 0x5a;
            assert!(u.restore(&bad).is_err(), "flip at {i} accepted");
            assert!(u.restore(&snap[..i]).is_err(), "truncation at {i} accepted");
        }
        assert_eq!(u.applied_index(), 1);
        assert_eq!(u.kv().get(b"z").unwrap().unwrap().value, "9");
    }

    fn durable(dir: &Path) -> (ServerState, AddressBook) {
        ServerState::open_durable(
            &dir.join("state.redb"),
            KvConfig::default(),
            MvccOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn durable_state_keeps_data_and_address_book_as_of_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, mut book) = durable(dir.path());
        assert_eq!(s.durable_applied_index(), Some(0));
        let set = ServerCommand::Members(MemberOp::Set {
            id: 4,
            addrs: host_addrs(4),
        });
        let answers = s
            .apply_batch(&[
                entry(1, &ServerCommand::Kv(Command::put("a", "1"))),
                entry(2, &set),
                entry(3, &ServerCommand::Kv(Command::put("b", "2"))),
                Entry {
                    term: 1,
                    index: 4,
                    payload: EntryPayload::Normal(Bytes::from_static(&[9])),
                },
            ])
            .unwrap();
        assert!(matches!(answers[0], ServerResponse::Kv(Response::Put(_))));
        assert_eq!(answers[1], ServerResponse::Members);
        assert!(matches!(answers[3], ServerResponse::Rejected(_)));
        assert_eq!(book.borrow_and_update().get(&4), Some(&host_addrs(4)));
        assert_eq!(s.checkpoint().unwrap(), 4);
        // Applied after the checkpoint: lost by a crash (the log replays it).
        s.apply(&entry(5, &ServerCommand::Kv(Command::put("c", "3"))))
            .unwrap();
        drop(s);
        // A clean close may keep the later commit too; a crash keeps at
        // least the checkpoint (the simulated-disk tests of raftkv-mvcc
        // cover crashes). Either way the state is exactly as of one index.
        let (r, book) = durable(dir.path());
        let applied = r.applied_index();
        assert!(applied == 4 || applied == 5, "reopened at {applied}");
        assert_eq!(r.durable_applied_index(), Some(applied));
        assert_eq!(r.kv().get(b"b").unwrap().unwrap().value, "2");
        assert_eq!(r.kv().get(b"c").unwrap().is_some(), applied == 5);
        assert_eq!(r.members().get(&4), Some(&host_addrs(4)));
        assert_eq!(book.borrow().get(&4), Some(&host_addrs(4)));
    }

    #[test]
    fn durable_snapshot_streams_into_a_sink_and_restore_switches_to_it() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut a, _) = durable(a_dir.path());
        let mut batch = Vec::new();
        for i in 0..1500u64 {
            let cmd = Command::put(format!("k{i:04}"), "v".repeat(1000));
            batch.push(entry(i + 1, &ServerCommand::Kv(cmd)));
        }
        batch.push(entry(
            1501,
            &ServerCommand::Members(MemberOp::Set {
                id: 2,
                addrs: addrs(2),
            }),
        ));
        a.apply_batch(&batch).unwrap();
        let (mut b, book) = durable(b_dir.path());
        b.apply(&entry(1, &ServerCommand::Kv(Command::put("old", "x"))))
            .unwrap();
        // Stream a -> b, chunk by chunk, as the runtime does.
        let mut source = a.snapshot_source().unwrap();
        assert_eq!(source.meta().last_index, 1501);
        let mut sink = b.snapshot_sink().unwrap();
        let mut chunks = 0;
        while let Some(c) = source.next_chunk().unwrap() {
            assert!(
                c.len() <= SNAPSHOT_CHUNK_BYTES + 4096,
                "chunk of {} bytes",
                c.len()
            );
            sink.push(&c).unwrap();
            chunks += 1;
        }
        assert!(chunks > 1, "1.5 MB goes in more than one 1 MiB chunk");
        let (covers, descriptor) = sink.finish().unwrap();
        assert_eq!((covers.last_index, covers.last_term), (1501, 1));
        // Not switched until restore.
        assert_eq!(b.kv().get(b"old").unwrap().unwrap().value, "x");
        // A descriptor for another index is refused and changes nothing.
        let mut wrong = descriptor.to_vec();
        wrong[4] ^= 1;
        assert!(b.restore(&wrong).is_err());
        assert_eq!(b.applied_index(), 1);
        let (mut b, mut book) = {
            drop(b);
            drop(book);
            durable(b_dir.path())
        };
        // A crash before the switch: the received file is found again.
        assert_eq!(b.applied_index(), 1, "not switched by reopening");
        assert!(b_dir.path().join("state.redb.received").exists());
        b.restore(&descriptor).unwrap();
        assert_eq!(b.applied_index(), 1501);
        assert_eq!(b.durable_applied_index(), Some(1501));
        assert_eq!(b.kv().get(b"old").unwrap(), None);
        assert_eq!(b.kv().digest().unwrap(), a.kv().digest().unwrap());
        assert_eq!(b.members(), a.members());
        assert_eq!(book.borrow_and_update().get(&2), Some(&addrs(2)));
        assert!(!b_dir.path().join("state.redb.received").exists());
    }

    #[test]
    fn a_broken_stream_is_refused_by_the_sink() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut a, _) = durable(a_dir.path());
        a.apply(&entry(1, &ServerCommand::Kv(Command::put("a", "1"))))
            .unwrap();
        let (b, _) = durable(b_dir.path());
        let mut source = a.snapshot_source().unwrap();
        let first = source.next_chunk().unwrap().unwrap();
        let mut bad = first.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let mut sink = b.snapshot_sink().unwrap();
        assert!(sink.push(&bad).is_err(), "a damaged chunk is refused");
        // Truncated stream: finish refuses.
        let mut sink = b.snapshot_sink().unwrap();
        sink.push(&first).unwrap();
        assert!(sink.finish().is_err() || source.next_chunk().unwrap().is_none());
        assert_eq!(b.applied_index(), 0);
    }
}
