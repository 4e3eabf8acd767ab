//! The server's replicated state machine: the key-value store plus the
//! network addresses of every member.
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
//! # Snapshot layout
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

use bytes::Bytes;
use raft_core::{Entry, EntryPayload, LogIndex, NodeId, StateMachine};
use raftkv_state::{Command, KvConfig, KvStore, Response, StateError};
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
}

/// The replicated state of one raftkv server. See the module docs.
pub struct ServerState {
    kv: KvStore,
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
            .field("applied_index", &self.kv.applied_index())
            .field("keys", &self.kv.len())
            .field("members", &self.members)
            .finish()
    }
}

impl ServerState {
    /// An empty state. The returned receiver sees every address-book change.
    pub fn new(config: KvConfig) -> Result<(Self, AddressBook), raftkv_state::KvConfigError> {
        let kv = KvStore::new(config)?;
        let (publish, rx) = watch::channel(BTreeMap::new());
        Ok((
            ServerState {
                kv,
                members: BTreeMap::new(),
                publish,
            },
            rx,
        ))
    }

    /// The key-value store (read it under the state machine's read lock).
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The replicated address book.
    pub fn members(&self) -> &BTreeMap<NodeId, MemberAddrs> {
        &self.members
    }

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

    /// Advances the key-value store's applied index over an entry that is
    /// not a key-value command (so its index bookkeeping and session expiry
    /// stay identical on every replica).
    fn skip(&mut self, entry: &Entry) -> Result<(), ServerStateError> {
        let blank = Entry {
            term: entry.term,
            index: entry.index,
            payload: EntryPayload::Blank,
        };
        self.kv.apply(&blank)?;
        Ok(())
    }
}

/// Receives the replicated address book after each change.
pub type AddressBook = watch::Receiver<BTreeMap<NodeId, MemberAddrs>>;

impl StateMachine for ServerState {
    type Response = ServerResponse;
    type Error = ServerStateError;

    fn apply(&mut self, entry: &Entry) -> Result<ServerResponse, ServerStateError> {
        if entry.index <= self.kv.applied_index() {
            // Replayed after a snapshot restore: already part of the state.
            return Ok(ServerResponse::Kv(Response::AlreadyApplied {
                applied_index: self.kv.applied_index(),
            }));
        }
        let data = match &entry.payload {
            EntryPayload::Blank | EntryPayload::Membership(_) => {
                return Ok(ServerResponse::Kv(self.kv.apply(entry)?));
            }
            EntryPayload::Normal(data) => data,
        };
        match data.first() {
            Some(&TAG_KV) => {
                // Hand the inner command to the store at the same position.
                let inner = Entry {
                    term: entry.term,
                    index: entry.index,
                    payload: EntryPayload::Normal(data.slice(1..)),
                };
                Ok(ServerResponse::Kv(self.kv.apply(&inner)?))
            }
            Some(&TAG_MEMBERS) => {
                self.skip(entry)?;
                Ok(match decode_member_op(&data[1..]) {
                    Ok(op) => self.apply_member_op(op),
                    Err(e) => ServerResponse::Rejected(e),
                })
            }
            Some(&tag) => {
                self.skip(entry)?;
                Ok(ServerResponse::Rejected(format!(
                    "unknown command tag {tag}"
                )))
            }
            None => {
                self.skip(entry)?;
                Ok(ServerResponse::Rejected("empty command".into()))
            }
        }
    }

    fn applied_index(&self) -> LogIndex {
        self.kv.applied_index()
    }

    fn snapshot(&self) -> Result<Vec<u8>, ServerStateError> {
        let kv = self.kv.snapshot()?;
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

    fn restore(&mut self, data: &[u8]) -> Result<(), ServerStateError> {
        let (members, kv_bytes) = parse_snapshot(data).map_err(ServerStateError::Snapshot)?;
        let mut kv = KvStore::new(self.kv.config().clone())
            .map_err(|e| ServerStateError::Snapshot(e.to_string()))?;
        kv.restore(kv_bytes)?;
        self.kv = kv;
        self.members = members;
        self.publish.send_replace(self.members.clone());
        Ok(())
    }
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
        assert!(s.kv().is_empty() && s.members().is_empty());
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
        assert_eq!(t.kv().get(b"a").unwrap().value, "1");
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
        assert_eq!(u.kv().get(b"z").unwrap().value, "9");
    }
}
