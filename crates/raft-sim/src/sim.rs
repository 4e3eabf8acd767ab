//! The simulation: virtual time, an event queue, the network, the disks,
//! the nodes (raft-host's `NodeHost` over raft-core, applying the server's
//! `ServerState`: what the server runs), the clients and the nemesis.
//!
//! Everything runs on one thread, one event at a time, in the order of
//! `(virtual time, sequence number)`. All randomness comes from one
//! [`Rng`] seeded by the run's seed, so a seed replays bit for bit.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{self, AssertUnwindSafe};

use bytes::Bytes;
use std::path::PathBuf;

use raft_core::{
    AppendOutcome, AppendResponse, Config, Entry, LogIndex, LogStore, MemStorage, Membership,
    MembershipChange, Message, MessageBody, Nanos, NodeId, Role, Snapshot, SnapshotSink, SoftState,
    StateMachine, Term,
};
use raft_host::{
    Event as HostEvent, HostConfig, ProposeError, ReadConsistency, ReadError, ReadPath, WriteBatch,
    WriteOp,
};
use raft_storage::{FaultKind, SimDisk, Store, StoreConfig, WriteError};
use raftkv::server::state::{ServerCommand, ServerResponse, ServerState};
use raftkv_mvcc::{MvccOptions, MvccStore};
use raftkv_state::{CasAction, Command, Condition, KvConfig, Response};

use crate::checker::{Checker, Violation};
use crate::config::*;
use crate::linearizability::{
    self, CheckOptions, CheckResult, History, KvInput, KvModel, KvOutput, OpId,
};
use crate::queue::EventQueue;
use crate::rng::Rng;
use crate::shadow::{payload_hash, ShadowLog};
use crate::storage::{Acked, SimStore, StorageKind};
use crate::trace::{Trace, TraceEvent, TraceKind};

mod clients;
mod durable;
mod hosted;
mod nemesis;

#[cfg(feature = "planted-bugs")]
use crate::config::BugKind;
use hosted::{Checked, ProposalCaller, ReadCaller, SimHost};

/// Which parts of the production stack are simulated by stand-ins with
/// `--storage disk` (the default): only the disk, the network and the
/// clocks. Printed by the CLI and recorded in every trace.
pub const STAND_INS: &str = "storage: raft-storage Store (real) over SimDisk (simulated disk: \
     unsynced writes lost on crash, the last one torn at a random byte; ENOSPC/EIO injected); \
     engine: raft-core (real); host layer: raft-host NodeHost (real, the server driver's); \
     network and clocks: simulated";

/// The stand-ins with `--storage mem`.
pub const STAND_INS_MEM: &str = "storage: raft_core::MemStorage with simulated fsync \
     (writes durable only when their fsync completes; a crash keeps a random prefix \
     of the unsynced writes, torn at entry granularity), standing in for raft-storage; \
     engine: raft-core (real); host layer: raft-host NodeHost (real, the server driver's); \
     network and clocks: simulated";

/// The state machine with `--state durable` (the default).
pub const STATE_DURABLE: &str = "state machine: raftkv ServerState (real, the server's) on \
     raftkv-mvcc (real, the server's default engine) over the node's SimDisk: applied \
     without fsync, checkpointed (a simulated fsync), reopened after a crash from what \
     was durable, snapshots streamed through the simulated network";

/// The state machine with `--state memory`.
pub const STATE_MEMORY: &str = "state machine: raftkv ServerState (real, the server's) with \
     its in-memory engine, snapshotted whole into the log store";

/// The stand-ins of a run with `storage` and `state`.
pub fn stand_ins(storage: StorageKind, state: StateKind) -> String {
    let storage = match storage {
        StorageKind::Disk => STAND_INS,
        StorageKind::Mem => STAND_INS_MEM,
    };
    let state = match state {
        StateKind::Durable => STATE_DURABLE,
        StateKind::Memory => STATE_MEMORY,
    };
    format!("{storage}; {state}")
}

/// Leader hints a client follows in a row before it tries a random node
/// instead (hints from stale nodes can point at other stale nodes).
const HINTS_FOLLOWED_MAX: u32 = 3;

/// The client history type checked for linearizability.
pub type KvHistory = History<KvInput<u64, u64>, KvOutput<u64>>;

/// Counters of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Events processed (both phases).
    pub events: u64,
    /// Raft messages handed to a node's `step`.
    pub deliveries: u64,
    /// Messages lost (random loss, cut links, down nodes).
    pub dropped: u64,
    /// Messages duplicated.
    pub duplicated: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub pauses: u64,
    /// Pauses after which the node drops the ticks it missed.
    pub pauses_dropping_ticks: u64,
    /// Forward jumps of a node's clock.
    pub clock_jumps: u64,
    pub partitions: u64,
    /// Disk faults armed.
    pub disk_faults: u64,
    /// Armed disk faults that hit a write or an fsync (the node stopped).
    pub storage_failures: u64,
    pub membership_changes: u64,
    pub transfers: u64,
    pub compactions: u64,
    pub snapshots_installed: u64,
    /// Durable state machines: checkpoints completed.
    pub checkpoints: u64,
    /// Durable state machines: snapshot streams received whole, and
    /// streams that ended early (lost, cut, refused, an end down).
    pub snapshot_streams: u64,
    pub streams_broken: u64,
    /// Distinct (term, leader) pairs seen.
    pub leaders: u64,
    pub ops_invoked: u64,
    pub ops_completed: u64,
    /// Operations whose outcome stayed unknown (still pending at the end).
    pub ops_unknown: u64,
    /// Virtual time at the end, microseconds.
    pub virtual_time_us: u64,
}

/// The linearizability verdict of a run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum LinVerdict {
    /// The history is linearizable.
    Ok,
    /// The checker ran out of budget on some keys (not a violation).
    Unknown,
    /// Not checked (the run stopped at an earlier violation).
    Skipped,
    /// Not linearizable (also reported as the run's violation).
    Illegal,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct SeedOutcome {
    pub config: SimConfig,
    pub params: Params,
    /// The first invariant broken, if any.
    pub violation: Option<Violation>,
    pub stats: Stats,
    pub linearizability: LinVerdict,
    /// Hash of every event of the run (same seed, same hash).
    pub trace_hash: u64,
    /// The readable timeline (empty unless `record_trace`).
    pub trace: Vec<TraceEvent>,
    /// The client history.
    pub history: KvHistory,
}

/// Runs one seed to the end and checks it.
pub fn run(cfg: &SimConfig) -> SeedOutcome {
    crate::panics::install_quiet_hook();
    let _quiet = crate::panics::SimGuard::enter();
    let mut sim = Sim::new(cfg.clone());
    sim.run();
    sim.finish()
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum ReqKind {
    /// A write or a read through the log: propose this command.
    Propose(Bytes),
    /// A ReadIndex read of this key.
    ReadIndex(u64),
    /// A lease read of this key (falls back to ReadIndex without a lease).
    LeaseRead(u64),
}

#[derive(Clone, Debug)]
struct ClientReq {
    client: usize,
    op: u64,
    attempt: u32,
    kind: ReqKind,
}

#[derive(Clone, Debug)]
enum ReplyResult {
    /// The command was applied at (index, term) with this response.
    Applied {
        response: Response,
        index: LogIndex,
        term: Term,
    },
    /// A read served locally: the key's value bytes.
    Read(Option<Bytes>),
    /// Not the leader; try the hint.
    NotLeader(Option<NodeId>),
    /// Try again later.
    Retry(&'static str),
    /// Another entry took the proposal's place; it was never applied.
    Lost,
}

#[derive(Clone, Debug)]
struct ClientReply {
    op: u64,
    attempt: u32,
    result: ReplyResult,
}

#[derive(Clone, Debug)]
enum Event {
    Tick {
        node: NodeId,
        epoch: u32,
    },
    /// Boxed: messages are large and events move through the queue.
    Deliver(Box<Message>),
    DiskDone {
        node: NodeId,
        epoch: u32,
        number: u64,
    },
    Request {
        node: NodeId,
        /// Boxed, like messages: a request carries a whole command.
        req: Box<ClientReq>,
    },
    Reply {
        client: usize,
        /// Boxed, like messages: replies carry whole responses.
        reply: Box<ClientReply>,
    },
    ClientSend {
        client: usize,
        op: u64,
        attempt: u32,
    },
    ClientTimeout {
        client: usize,
        op: u64,
        attempt: u32,
    },
    ClientNext {
        client: usize,
    },
    Nemesis,
    Crash {
        node: NodeId,
        reason: &'static str,
    },
    Restart {
        node: NodeId,
    },
    Resume {
        node: NodeId,
    },
    Heal {
        generation: u64,
    },
    Figure8Abort {
        generation: u64,
    },
    /// A checkpoint of the node's durable state machine (an fsync)
    /// completes.
    CheckpointDone {
        node: NodeId,
        epoch: u32,
    },
    /// The next frame of snapshot stream `stream` reaches node `to`.
    StreamFrame {
        stream: u64,
        to: NodeId,
    },
}

impl Event {
    /// A small code for the trace hash.
    fn code(&self) -> u64 {
        match self {
            Event::Tick { node, .. } => 1 | node << 8,
            Event::Deliver(m) => {
                2 | m.from << 8 | m.to << 16 | msg_code(&m.body) << 24 | m.term << 32
            }
            Event::DiskDone { node, number, .. } => 3 | node << 8 | number << 16,
            Event::Request { node, req } => {
                4 | node << 8 | (req.client as u64) << 16 | req.op << 24
            }
            Event::Reply { client, reply } => 5 | (*client as u64) << 8 | reply.op << 16,
            Event::ClientSend { client, op, .. } => 6 | (*client as u64) << 8 | op << 16,
            Event::ClientTimeout { client, op, .. } => 7 | (*client as u64) << 8 | op << 16,
            Event::ClientNext { client } => 8 | (*client as u64) << 8,
            Event::Nemesis => 9,
            Event::Crash { node, .. } => 10 | node << 8,
            Event::Restart { node } => 11 | node << 8,
            Event::Resume { node } => 12 | node << 8,
            Event::Heal { generation } => 13 | generation << 8,
            Event::Figure8Abort { generation } => 14 | generation << 8,
            Event::CheckpointDone { node, .. } => 15 | node << 8,
            Event::StreamFrame { stream, to } => 16 | to << 8 | stream << 16,
        }
    }

    /// The node whose process must be running (not paused) to handle this.
    fn target_node(&self) -> Option<NodeId> {
        match self {
            Event::Deliver(m) => Some(m.to),
            Event::DiskDone { node, .. }
            | Event::Request { node, .. }
            | Event::CheckpointDone { node, .. } => Some(*node),
            Event::StreamFrame { to, .. } => Some(*to),
            _ => None,
        }
    }
}

fn msg_code(body: &MessageBody) -> u64 {
    match body {
        MessageBody::VoteRequest(r) => 1 + u64::from(r.pre_vote),
        MessageBody::VoteResponse(r) => 3 + u64::from(r.pre_vote) * 2 + u64::from(r.granted),
        MessageBody::AppendRequest(r) => 7 + (r.entries.len() as u64) * 16,
        MessageBody::AppendResponse(_) => 8,
        MessageBody::SnapshotRequest(_) => 9,
        MessageBody::SnapshotResponse(_) => 10,
        MessageBody::TimeoutNow => 11,
        MessageBody::ReadIndexRequest(_) => 12,
        MessageBody::ReadIndexResponse(_) => 13,
    }
}

fn describe_msg(m: &Message) -> String {
    match &m.body {
        MessageBody::VoteRequest(r) => format!(
            "{}(t{}, last {}@t{})",
            if r.pre_vote { "PreVote" } else { "Vote" },
            m.term,
            r.last_log_index,
            r.last_log_term
        ),
        MessageBody::VoteResponse(r) => format!(
            "{}Resp(t{}, {})",
            if r.pre_vote { "PreVote" } else { "Vote" },
            m.term,
            if r.granted { "granted" } else { "refused" }
        ),
        MessageBody::AppendRequest(r) => format!(
            "Append(t{}, prev {}@t{}, {} entries, commit {})",
            m.term,
            r.prev_log_index,
            r.prev_log_term,
            r.entries.len(),
            r.leader_commit
        ),
        other => format!("{}(t{})", other_kind(other), m.term),
    }
}

fn other_kind(body: &MessageBody) -> &'static str {
    match body {
        MessageBody::AppendResponse(_) => "AppendResp",
        MessageBody::SnapshotRequest(_) => "Snapshot",
        MessageBody::SnapshotResponse(_) => "SnapshotResp",
        MessageBody::TimeoutNow => "TimeoutNow",
        MessageBody::ReadIndexRequest(_) => "ReadIndex",
        MessageBody::ReadIndexResponse(_) => "ReadIndexResp",
        _ => "Msg",
    }
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

/// The writes of one Ready, waiting for their fsync.
type PendingWrite = WriteBatch;

#[derive(Clone, Copy, Debug)]
struct Waiter {
    client: usize,
    op: u64,
    attempt: u32,
}

/// A running node process: the host the server runs, over the simulated
/// store, applying to the server's state machine.
struct Running {
    host: SimHost,
    paused: bool,
    missed_ticks: u64,
    /// This pause drops the ticks it misses (tokio's
    /// `MissedTickBehavior::Delay`, what raft-runtime does) instead of
    /// firing them in a burst at resume.
    drop_missed_ticks: bool,
    deferred: Vec<Event>,
    /// Writes waiting for the next fsync (group commit), oldest first.
    queued: Vec<PendingWrite>,
    /// Writes covered by the fsync in flight, if any.
    syncing: Vec<PendingWrite>,
    /// The writes in `syncing` were handed to the store (not yet, while
    /// the disk stalls).
    syncing_issued: bool,
    /// A compaction the host handed out, waiting for the writes handed out
    /// before it to be durable (the contract's order).
    compaction: Option<Snapshot>,
    /// A checkpoint the host handed out is running (its fsync).
    checkpointing: bool,
    /// Peers this node streams a snapshot to (one stream per peer, as the
    /// runtime's driver allows).
    streams_out: BTreeSet<NodeId>,
    /// The snapshot stream this node receives, if any (one at a time).
    receiving: Option<u64>,
    /// A received snapshot handed to the host, waiting to be installed
    /// (when, and the installs counted then): the sink keeps one received
    /// state, so no other stream is taken meanwhile (the driver's rule).
    staged: Option<(Micros, u64)>,
    last_commit: LogIndex,
    last_applied: LogIndex,
    soft: SoftState,
}

/// One snapshot stream of a durable state machine, from a leader to a
/// follower, beside the message stream (the runtime's snapshot
/// connection). Frames travel in order, each after a network delay; a lost
/// frame, a cut link or either end going down breaks the connection, and
/// the stream just ends (the leader's engine resends later).
struct Stream {
    from: NodeId,
    to: NodeId,
    /// The ends' epochs when it started: a restart breaks the connection.
    from_epoch: u32,
    to_epoch: u32,
    /// The chunks still to deliver, then `end`.
    chunks: std::collections::VecDeque<Bytes>,
    /// The snapshot message that ends the stream, its metadata set to what
    /// the chunks cover.
    end: Option<Message>,
    /// The receiver's sink, once the first frame arrived and was taken.
    sink: Option<Box<dyn SnapshotSink>>,
}

/// What a node that is down starts from.
enum Down {
    /// Its durable `MemStorage`.
    Mem(MemStorage),
    /// Its store: `Some` when just bootstrapped, `None` to recover it from
    /// the node's disk.
    Disk(Option<Box<Store<SimDisk>>>),
}

struct Node {
    id: NodeId,
    run: Option<Box<Running>>,
    /// Durable state while the node is down.
    down: Option<Down>,
    /// The node's simulated disk (`--storage disk`); it outlives crashes.
    disk: Option<SimDisk>,
    /// What the node acknowledged as durable (`--storage disk`).
    acked: Acked,
    epoch: u32,
    shadow: ShadowLog,
    /// `--storage mem`: the next fsync fails.
    disk_fail_next: bool,
    /// `--storage disk`: a write or sync fault is armed on the disk.
    disk_fault_armed: bool,
    /// Highest commit index made durable (hard state), across restarts.
    durable_commit: LogIndex,
    /// Highest match index this node acknowledged to a leader (for the
    /// crash-after-acknowledging fault).
    last_ack_match: LogIndex,
    /// Highest term in which this node was seen leading (checked).
    led_term: Term,
    /// Highest term in which this node was seen committing as leader.
    committed_as_leader_term: Term,
    tick_us: Micros,
    /// Rate of this node's clock against virtual time (its skew: a node
    /// whose ticks run fast has a clock that runs fast too, as both come
    /// from one oscillator).
    clock_rate: f64,
    /// Forward jumps of this node's clock so far (a suspended VM's
    /// monotonic clock, a stolen CPU): added to its reading.
    clock_jump_us: Micros,
    /// The disk stalls until this time: an fsync started earlier completes
    /// no sooner (a device hiccup).
    disk_stall_until: Micros,
    /// Messages this node sends before this time take
    /// `slow_out_extra_us` longer (a congested outgoing link).
    slow_out_until: Micros,
    slow_out_extra_us: Micros,
    /// Durable state machine: the durable applied index of the last
    /// completed checkpoint or installed snapshot (across restarts). A
    /// reopened state machine must be at least there.
    durable_applied: LogIndex,
    /// Durable state machine: the state's digest at each index made
    /// durable at or above `durable_applied` (checkpoints, installed
    /// snapshots): a reopened state machine at index `i` must hold this
    /// node's state at `i`.
    durable_digests: BTreeMap<LogIndex, u64>,
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

struct ClientOp {
    op: u64,
    hist: OpId,
    input: KvInput<u64, u64>,
    kind: ReqKind,
    attempt: u32,
}

struct Client {
    id: u64,
    /// The node the current attempt goes to.
    guess: NodeId,
    /// The node tried before `guess` (a hint back to it is a ping-pong
    /// between two stale nodes, not news).
    prev_guess: NodeId,
    /// Leader hints followed in a row without success; after
    /// [`HINTS_FOLLOWED_MAX`] the client stops trusting hints for one
    /// attempt and tries a random node.
    hints_followed: u32,
    /// Bit `n - 1` set: node `n` has not been tried yet in this sweep. A
    /// client with no leader hint goes to a random untried node, so it
    /// reaches every node within one sweep (a random walk could keep
    /// missing the few nodes still in the configuration; seed 112502).
    untried: u64,
    seq: u64,
    current: Option<ClientOp>,
    /// Last value this client saw per key (to aim compare-and-swaps).
    known: BTreeMap<u64, Option<u64>>,
    counter: u64,
    /// Key of the last completed write (the next op may read it back).
    last_write: Option<u64>,
}

fn key_bytes(k: u64) -> Bytes {
    Bytes::from(format!("k{k}"))
}

fn value_bytes(v: u64) -> Bytes {
    Bytes::from(v.to_string())
}

fn parse_value(b: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("value {b:?} was never written by any client"))
}

/// What the client's operation returned, in the model's terms.
fn output_of(input: &KvInput<u64, u64>, resp: &Response) -> Result<KvOutput<u64>, String> {
    Ok(match (input, resp) {
        (KvInput::Put { .. }, Response::Put(_)) => KvOutput::Put,
        (KvInput::Delete { .. }, Response::Delete(d)) => KvOutput::Delete { existed: d.deleted },
        (KvInput::Cas { .. }, Response::CompareAndSwap(c)) => {
            if c.succeeded {
                KvOutput::Cas { succeeded: true }
            } else {
                KvOutput::CasMismatch {
                    current: match &c.current {
                        Some(kv) => Some(parse_value(&kv.value)?),
                        None => None,
                    },
                }
            }
        }
        (KvInput::Get { .. }, Response::Get(g)) => KvOutput::Get(match &g.kv {
            Some(kv) => Some(parse_value(&kv.value)?),
            None => None,
        }),
        (input, resp) => return Err(format!("{input:?} answered with {resp:?}")),
    })
}

// ---------------------------------------------------------------------------
// The simulation
// ---------------------------------------------------------------------------

/// The scripted Figure 8 schedule of the Raft paper (a targeted nemesis,
/// only in the `figure8` profile): an entry stranded on an old leader, a
/// conflicting entry stranded on the next one, a third leader that
/// re-replicates the first entry and crashes right after its first commit,
/// then the second leader back. With the current-term commit rule nothing
/// committed is lost; without it, the first entry is committed by counting
/// and then overwritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Figure8 {
    Idle,
    /// Leader `a` of `term` is cut off right after appending an entry.
    OldEntryStranded {
        a: NodeId,
        term: Term,
    },
    /// Leader `b` of a later `term` is cut off right after its election,
    /// with the voters in the bit set `others`.
    ConflictStranded {
        b: NodeId,
        term: Term,
        others: u32,
    },
    /// Leader `c` of a yet later `term` will crash after its first commit
    /// (`committed`) once `b` knows its term.
    Committer {
        c: NodeId,
        term: Term,
        b: NodeId,
        committed: bool,
    },
}

/// A Figure 8 schedule that has not finished within this long is abandoned
/// (and the network healed).
const FIGURE8_STEP_TIMEOUT_US: Micros = 15 * ELECTION_TIMEOUT_US;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Faults,
    Liveness,
    Done,
}

struct Sim {
    cfg: SimConfig,
    params: Params,
    rng: Rng,
    now: Micros,
    queue: EventQueue<Event>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    history: KvHistory,
    /// Directed links cut: `cut[from * stride + to]`.
    cut: Vec<bool>,
    stride: usize,
    partition_gen: u64,
    /// Where the Figure 8 schedule stands.
    figure8: Figure8,
    /// Bumped when the schedule starts or ends (stale aborts are ignored).
    figure8_gen: u64,
    /// The nemesis holds its fire until then (after a Figure 8 schedule).
    nemesis_quiet_until: Micros,
    next_op: u64,
    phase: Phase,
    checker: Checker,
    trace: Trace,
    stats: Stats,
    kv_config: KvConfig,
    store_config: StoreConfig,
    /// Snapshot streams in flight, by id (ids count up: deterministic).
    streams: BTreeMap<u64, Stream>,
    next_stream: u64,
}

impl Sim {
    fn new(cfg: SimConfig) -> Sim {
        let mut rng = Rng::new(cfg.seed);
        let params = Params::draw(&mut rng.fork(), &cfg);
        let total = cfg.nodes + params.spares;
        let stride = total + 1;
        let voters = Membership::new_voters(1..=cfg.nodes as u64);
        let mut trace = Trace::new(cfg.record_trace);
        if trace.recording() {
            trace.push(
                0,
                TraceKind::Start {
                    description: format!(
                        "seed {}, {} voters + {} spares, {} steps, faults {}; {}; params {}",
                        cfg.seed,
                        cfg.nodes,
                        params.spares,
                        cfg.steps,
                        cfg.faults,
                        stand_ins(cfg.storage, cfg.state),
                        serde_json::to_string(&params).unwrap_or_default()
                    ),
                },
            );
        }
        let mut sim = Sim {
            rng,
            now: 0,
            queue: EventQueue::default(),
            nodes: Vec::with_capacity(total),
            clients: Vec::new(),
            history: History::new(),
            cut: vec![false; stride * stride],
            stride,
            partition_gen: 0,
            figure8: Figure8::Idle,
            figure8_gen: 0,
            nemesis_quiet_until: 0,
            next_op: 1,
            phase: Phase::Faults,
            checker: Checker::default(),
            trace,
            stats: Stats::default(),
            kv_config: KvConfig::default(),
            streams: BTreeMap::new(),
            next_stream: 1,
            store_config: StoreConfig {
                segment_bytes_max: params.segment_bytes_max,
                cache_bytes_max: params.cache_bytes_max,
                ..StoreConfig::default()
            },
            params,
            cfg,
        };
        for id in 1..=total as u64 {
            let membership = if id as usize <= sim.cfg.nodes {
                voters.clone()
            } else {
                Membership::default()
            };
            let durable_state = sim.cfg.state == StateKind::Durable;
            let disk_seed = Rng::new(sim.cfg.seed ^ id.wrapping_mul(0x9E37_79B9)).next_u64();
            let (down, disk) = match sim.cfg.storage {
                StorageKind::Mem => {
                    // The durable state machine still needs a disk.
                    let disk = if durable_state {
                        match bootstrapped_disk(id, None, membership.clone(), disk_seed, true) {
                            Ok(d) => Some(d),
                            Err(e) => {
                                sim.violation("storage", format!("n{id}: bootstrap failed: {e}"));
                                return sim;
                            }
                        }
                    } else {
                        None
                    };
                    (Down::Mem(MemStorage::new_with_membership(membership)), disk)
                }
                StorageKind::Disk => {
                    let founders = if id as usize <= sim.cfg.nodes {
                        sim.cfg.nodes
                    } else {
                        0
                    };
                    match bootstrapped_disk(
                        id,
                        Some(founders),
                        membership,
                        disk_seed,
                        durable_state,
                    )
                    .and_then(|disk| {
                        Store::open(
                            disk.clone(),
                            node_dir(id),
                            SIM_CLUSTER_ID,
                            id,
                            sim.store_config.clone(),
                        )
                        .map(|store| (store, disk))
                        .map_err(|e| e.to_string())
                    }) {
                        Ok((store, disk)) => (Down::Disk(Some(Box::new(store))), Some(disk)),
                        Err(e) => {
                            sim.violation("storage", format!("n{id}: bootstrap failed: {e}"));
                            return sim;
                        }
                    }
                }
            };
            let tick_us = ((TICK_US as f64) / sim.params.tick_skew[id as usize - 1]) as Micros;
            sim.nodes.push(Node {
                id,
                run: None,
                down: Some(down),
                disk,
                acked: Acked::default(),
                epoch: 0,
                shadow: ShadowLog::default(),
                disk_fail_next: false,
                disk_fault_armed: false,
                durable_commit: 0,
                last_ack_match: 0,
                led_term: 0,
                committed_as_leader_term: 0,
                tick_us: tick_us.max(1),
                clock_rate: sim.params.tick_skew[id as usize - 1],
                clock_jump_us: 0,
                disk_stall_until: 0,
                slow_out_until: 0,
                slow_out_extra_us: 0,
                durable_applied: 0,
                durable_digests: BTreeMap::new(),
            });
            sim.start_node(id);
        }
        for c in 0..sim.params.clients {
            let guess = sim.rng.range(1, total as u64 + 1);
            sim.clients.push(Client {
                id: c as u64 + 1,
                guess,
                prev_guess: guess,
                hints_followed: 0,
                untried: 0,
                seq: 0,
                current: None,
                known: BTreeMap::new(),
                counter: 0,
                last_write: None,
            });
            let at = sim.rng.range(0, 5 * TICK_US);
            sim.schedule(at, Event::ClientNext { client: c });
        }
        let first = sim.rng.range(
            sim.params.nemesis_interval_us / 2,
            sim.params.nemesis_interval_us * 2,
        );
        sim.schedule(first, Event::Nemesis);
        sim
    }

    fn total_nodes(&self) -> usize {
        self.nodes.len()
    }

    fn schedule(&mut self, delay: Micros, event: Event) {
        self.queue.push(self.now + delay, event);
    }

    fn node(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    fn violation(&mut self, check: &'static str, message: String) {
        if self.checker.violation.is_none() {
            self.trace.push(
                self.now,
                TraceKind::Violation {
                    check: check.into(),
                    message: message.clone(),
                },
            );
            self.checker.violation = Some(Violation {
                check,
                message,
                time_us: self.now,
            });
        }
    }

    fn failed(&self) -> bool {
        self.checker.violation.is_some()
    }

    // ------------------------------------------------------------------
    // Main loop
    // ------------------------------------------------------------------

    fn run(&mut self) {
        let mut steps = 0;
        while steps < self.cfg.steps && !self.failed() {
            if !self.step_event() {
                break;
            }
            steps += 1;
        }
        if self.cfg.liveness && !self.failed() {
            self.enter_liveness();
            let deadline = self.now + LIVENESS_ELECTION_TIMEOUTS * ELECTION_TIMEOUT_US;
            loop {
                if self.failed() {
                    break;
                }
                if self.live_and_quiet() {
                    break;
                }
                let next_time = self.queue.peek_time();
                if next_time.is_none_or(|t| t > deadline) {
                    self.now = deadline;
                    let pending: Vec<String> = self
                        .clients
                        .iter()
                        .filter_map(|c| {
                            c.current
                                .as_ref()
                                .map(|op| format!("c{} op#{} {:?}", c.id, op.op, op.input))
                        })
                        .collect();
                    let leaders: Vec<String> = self
                        .nodes
                        .iter()
                        .filter_map(|n| {
                            n.run.as_ref().map(|r| {
                                format!(
                                    "n{}:{}@t{}",
                                    n.id,
                                    r.host.raft().role(),
                                    r.host.raft().term()
                                )
                            })
                        })
                        .collect();
                    self.violation(
                        "liveness",
                        format!(
                            "{} election timeouts after faults stopped: leader elected: {}; pending ops: [{}]; nodes: [{}]",
                            LIVENESS_ELECTION_TIMEOUTS,
                            self.current_leader().is_some(),
                            pending.join(", "),
                            leaders.join(", ")
                        ),
                    );
                    break;
                }
                self.step_event();
            }
        }
        self.phase = Phase::Done;
    }

    /// Processes the next event; false if the queue is empty.
    fn step_event(&mut self) -> bool {
        let Some((time, event)) = self.queue.pop() else {
            return false;
        };
        debug_assert!(time >= self.now);
        self.now = time;
        self.stats.events += 1;
        self.trace.mix(&[time, event.code()]);
        let res = panic::catch_unwind(AssertUnwindSafe(|| self.handle(event)));
        if let Err(payload) = res {
            let msg = crate::panics::message(payload);
            self.violation("panic", msg);
        }
        true
    }

    fn handle(&mut self, event: Event) {
        // A paused process handles nothing; its events wait for it.
        if let Some(id) = event.target_node() {
            let clock = self.clock_nanos(id);
            if let Some(run) = self.node(id).run.as_mut() {
                if run.paused {
                    run.deferred.push(event);
                    return;
                }
                // As the driver does at the top of each turn.
                run.host.observe_clock(clock);
            }
        }
        match event {
            Event::Tick { node, epoch } => self.on_tick(node, epoch),
            Event::Deliver(m) => self.on_deliver(m),
            Event::DiskDone {
                node,
                epoch,
                number,
            } => self.on_disk_done(node, epoch, number),
            Event::Request { node, req } => self.on_request(node, *req),
            Event::Reply { client, reply } => self.on_reply(client, *reply),
            Event::ClientSend {
                client,
                op,
                attempt,
            } => {
                if self.clients[client]
                    .current
                    .as_ref()
                    .is_some_and(|c| c.op == op && c.attempt == attempt)
                {
                    self.client_send(client);
                }
            }
            Event::ClientTimeout {
                client,
                op,
                attempt,
            } => self.on_client_timeout(client, op, attempt),
            Event::ClientNext { client } => self.client_next(client),
            Event::Nemesis => self.nemesis(),
            Event::Crash { node, reason } => self.crash(node, reason),
            Event::Restart { node } => self.start_node(node),
            Event::Resume { node } => self.resume(node),
            Event::Heal { generation } => {
                if generation == self.partition_gen {
                    self.heal();
                }
            }
            Event::Figure8Abort { generation } => {
                if generation == self.figure8_gen && self.figure8 != Figure8::Idle {
                    self.figure8_end("figure 8 schedule abandoned (timeout): heal");
                }
            }
            Event::CheckpointDone { node, epoch } => self.on_checkpoint_done(node, epoch),
            Event::StreamFrame { stream, .. } => self.on_stream_frame(stream),
        }
    }

    fn enter_liveness(&mut self) {
        self.phase = Phase::Liveness;
        self.trace.push(
            self.now,
            TraceKind::Phase {
                name: "liveness: faults stopped, network healed, every node restarted/resumed"
                    .into(),
            },
        );
        self.figure8 = Figure8::Idle;
        self.heal();
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            let node = self.node(id);
            node.disk_fail_next = false;
            node.disk_fault_armed = false;
            if let Some(disk) = &node.disk {
                disk.fail_next_writes(0, FaultKind::Io);
                disk.fail_next_syncs(0, FaultKind::Io);
            }
            if node.run.is_none() {
                self.start_node(id);
            } else if node.run.as_ref().is_some_and(|r| r.paused) {
                self.resume(id);
            }
        }
    }

    fn live_and_quiet(&self) -> bool {
        self.clients.iter().all(|c| c.current.is_none()) && self.current_leader().is_some()
    }

    /// Node `id`'s monotonic clock, as its driver would read it: virtual
    /// time at the node's clock rate plus its forward jumps. It runs while
    /// the node is paused.
    pub(crate) fn clock_nanos(&self, id: NodeId) -> Nanos {
        let node = &self.nodes[id as usize - 1];
        let local_us = (self.now as f64 * node.clock_rate) as Micros + node.clock_jump_us;
        local_us * 1_000
    }

    /// The running leader with the highest term, if it is a voter.
    fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|n| n.run.as_ref().map(|r| (n.id, r)))
            .filter(|(_, r)| !r.paused && r.host.raft().role() == Role::Leader)
            .max_by_key(|(_, r)| r.host.raft().term())
            .filter(|(id, r)| r.host.raft().membership().is_voter(*id))
            .map(|(id, _)| id)
    }

    // ------------------------------------------------------------------
    // Node lifecycle
    // ------------------------------------------------------------------

    /// The host's configuration: the engine's, plus the server's limits
    /// and snapshot policy scaled to short runs.
    fn host_config(&mut self, id: NodeId) -> HostConfig {
        let mut c = HostConfig::new(id);
        c.raft = self.engine_config(id);
        c.pending_proposals_max = 1024;
        c.pending_reads_max = 1024;
        c.inflight_writes_max = 16;
        c.snapshot_trigger_entries = self.params.compact_every_entries;
        c.snapshot_trigger_bytes = 0;
        c.snapshot_keep_entries = self.params.snapshot_keep_entries;
        c.snapshot_keep_ticks_max = 5 * u64::from(ELECTION_TIMEOUT_TICKS);
        // A fresh first read context per start, as the runtime draws one.
        // Derived rather than drawn from `self.rng`, so that every other
        // choice of a seed stays as it was.
        let epoch = u64::from(self.nodes[id as usize - 1].epoch);
        c.read_ctx_start = Rng::new(self.cfg.seed ^ (id << 48) ^ (epoch << 32)).next_u64();
        c
    }

    fn engine_config(&mut self, id: NodeId) -> Config {
        let mut c = Config::new(id);
        c.election_timeout_ticks = ELECTION_TIMEOUT_TICKS;
        c.heartbeat_interval_ticks = HEARTBEAT_INTERVAL_TICKS;
        c.rng_seed = self.rng.next_u64();
        // One tick is TICK_US on the node's own clock (see `clock_nanos`).
        c.tick_interval_nanos = TICK_US * 1_000;
        // Small limits so that batching, flow control and chunked snapshots
        // are exercised by short runs.
        c.max_append_bytes = 2048;
        c.max_inflight_msgs = self.params.max_inflight_msgs;
        c.max_inflight_bytes = 64 << 10;
        c.max_uncommitted_bytes = 256 << 10;
        c.snapshot_chunk_bytes = self.params.snapshot_chunk_bytes;
        c.max_pending_reads = 256;
        c
    }

    /// Starts (or restarts) node `id` from its durable state. With
    /// `--storage disk` a restart recovers the store from the node's disk:
    /// recovery must succeed and hold everything the node acknowledged.
    fn start_node(&mut self, id: NodeId) {
        let store = match self.node(id).down.take() {
            None => return,
            Some(Down::Mem(m)) => SimStore::Mem(m),
            Some(Down::Disk(Some(store))) => {
                let node = self.node(id);
                node.acked = Acked {
                    log: ShadowLog::from_store(&*store),
                    hard_state: store.hard_state(),
                    replaced_from: None,
                };
                SimStore::Disk(*store)
            }
            Some(Down::Disk(None)) => {
                let Some(disk) = self.node(id).disk.clone() else {
                    return self.violation("storage", format!("n{id}: no disk to recover"));
                };
                let store = match Store::open(
                    disk,
                    node_dir(id),
                    SIM_CLUSTER_ID,
                    id,
                    self.store_config.clone(),
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        let msg = format!("n{id}: the store does not recover after a crash: {e}");
                        return self.violation("recovery", msg);
                    }
                };
                let recovered = ShadowLog::from_store(&store);
                let hs = store.hard_state();
                if let Err(msg) = self.node(id).acked.check_recovered(&recovered, hs) {
                    return self.violation("durability", format!("n{id}: {msg}"));
                }
                // What survived the crash is on disk now: the new baseline.
                self.node(id).acked = Acked {
                    log: recovered,
                    hard_state: hs,
                    replaced_from: None,
                };
                SimStore::Disk(store)
            }
        };
        // The store's log starts right after its snapshot.
        let snapshot_index = store.first_index().saturating_sub(1);
        let shadow = ShadowLog::from_store(&store);
        let durable_commit = store.hard_state().commit.max(snapshot_index);
        let server = match self.open_state_machine(id) {
            Some(server) => server,
            None => return,
        };
        let cfg = self.host_config(id);
        // What the server's driver does at start: restore the state machine
        // from the stored snapshot and open the engine after it.
        #[allow(unused_mut)]
        let mut host = match SimHost::open(cfg, store, server) {
            Ok(h) => h,
            Err(e) => {
                return self.violation("restart", format!("n{id}: NodeHost::open failed: {e}"))
            }
        };
        #[cfg(feature = "planted-bugs")]
        if let Some(b) = self.cfg.bug {
            if b.node.is_none_or(|n| n == id) {
                match b.bug {
                    BugKind::Core(bug) => host.plant_core_bug(bug),
                    BugKind::Host(bug) => host.plant_host_bug(bug),
                }
            }
        }
        let restarted = self.node(id).epoch > 0;
        let commit = host.raft().commit_index();
        let node = self.node(id);
        if commit < node.durable_commit.max(durable_commit) {
            let was = node.durable_commit;
            return self.violation(
                "monotonic",
                format!("n{id} restarted with commit {commit} below its durable commit {was}"),
            );
        }
        node.durable_commit = node.durable_commit.max(durable_commit);
        node.epoch += 1;
        node.shadow = shadow;
        let epoch = node.epoch;
        let tick_us = node.tick_us;
        let soft = host.soft_state();
        let term = soft.term;
        let last_applied = host.applied_index();
        node.run = Some(Box::new(Running {
            paused: false,
            drop_missed_ticks: false,
            missed_ticks: 0,
            deferred: Vec::new(),
            queued: Vec::new(),
            syncing: Vec::new(),
            syncing_issued: false,
            compaction: None,
            checkpointing: false,
            streams_out: BTreeSet::new(),
            receiving: None,
            staged: None,
            last_commit: commit,
            last_applied,
            soft,
            host,
        }));
        // The snapshot restored at open must be the one the cluster agreed.
        self.check_state_machine(id, false);
        if self.failed() {
            return;
        }
        if restarted {
            self.stats.restarts += 1;
            self.trace.push(
                self.now,
                TraceKind::Restart {
                    node: id,
                    term,
                    commit,
                    snapshot: snapshot_index,
                },
            );
        }
        let first_tick = self.rng.range(1, tick_us + 1);
        self.schedule(first_tick, Event::Tick { node: id, epoch });
        self.drive(id);
    }

    /// Opens node `id`'s state machine as the server does at start: the
    /// in-memory engine empty (the host restores it from the log store's
    /// snapshot), or the durable engine from the node's disk, as of what
    /// was durable. A reopened durable state must hold this node's state at
    /// its reopened index (the digest recorded when that index was made
    /// durable) and be at least at the durable applied index of its last
    /// checkpoint (or installed snapshot). `None` after a violation.
    fn open_state_machine(&mut self, id: NodeId) -> Option<Checked> {
        let kv_config = self.kv_config.clone();
        if self.cfg.state == StateKind::Memory {
            return match ServerState::new(kv_config) {
                Ok((server, _address_book)) => Some(Checked::new(server)),
                Err(e) => {
                    self.violation("config", format!("KvConfig refused: {e}"));
                    None
                }
            };
        }
        let Some(disk) = self.node(id).disk.clone() else {
            self.violation("storage", format!("n{id}: no disk for the state machine"));
            return None;
        };
        let opened = MvccStore::open_on_disk(disk, state_file(id), kv_config, state_options())
            .map_err(|e| e.to_string())
            .and_then(|store| ServerState::from_durable(store).map_err(|e| e.to_string()));
        let server = match opened {
            Ok((server, _address_book)) => Checked::new(server),
            Err(e) => {
                let msg = format!("n{id}: the durable state machine does not reopen: {e}");
                self.violation("recovery", msg);
                return None;
            }
        };
        let applied = server.applied_index();
        let digest = match server.digest() {
            Ok(d) => d,
            Err(e) => {
                let msg = format!("n{id}: the reopened state machine cannot be read: {e}");
                self.violation("recovery", msg);
                return None;
            }
        };
        let node = &self.nodes[id as usize - 1];
        if applied < node.durable_applied {
            let msg = format!(
                "n{id}: the state machine reopened at applied index {applied}, below the \
                 durable applied index {} its last checkpoint reported",
                node.durable_applied
            );
            self.violation("state-durability", msg);
            return None;
        }
        if applied > 0 {
            match node.durable_digests.get(&applied) {
                Some(&d) if d == digest => {}
                Some(&d) => {
                    let msg = format!(
                        "n{id}: the state machine reopened at {applied} with digest {digest:#x}, \
                         but its state there was {d:#x}"
                    );
                    self.violation("state-durability", msg);
                    return None;
                }
                None => {
                    let msg = format!(
                        "n{id}: the state machine reopened at {applied}, an index it never \
                         made durable (made durable at or above {}: {:?})",
                        node.durable_applied,
                        node.durable_digests.keys().collect::<Vec<_>>()
                    );
                    self.violation("state-durability", msg);
                    return None;
                }
            }
            // And the state every replica agreed on at that index.
            if let Err(msg) = self.checker.snapshot_digest(applied, digest, id) {
                self.violation("state-machine-safety", msg);
                return None;
            }
        }
        Some(server)
    }

    /// Node `id`'s durable state machine made the state at `index` (with
    /// `digest`) durable: a checkpoint completed or a received snapshot was
    /// installed. A later reopen must be at or above it.
    fn note_durable_state(&mut self, id: NodeId, index: LogIndex, digest: u64) {
        let node = self.node(id);
        node.durable_applied = node.durable_applied.max(index);
        node.durable_digests.insert(index, digest);
        // What lies below the floor can no longer be reopened.
        let floor = node.durable_applied;
        node.durable_digests = node.durable_digests.split_off(&floor);
    }

    /// Stops node `id`: everything not durable is lost, except a random
    /// prefix of the writes its fsync in flight covered that reached the
    /// disk anyway (the last one torn). Writes not yet handed to the disk
    /// are lost.
    fn crash(&mut self, id: NodeId, reason: &'static str) {
        let Some(run) = self.node(id).run.take() else {
            return;
        };
        let Running {
            host,
            syncing,
            queued,
            ..
        } = *run;
        let lost = syncing.len() + queued.len();
        let stalled = self.nodes[id as usize - 1].disk_stall_until > self.now;
        let mem = match host.store() {
            SimStore::Mem(m) => Some(m.clone()),
            SimStore::Disk(_) => None,
        };
        // The power goes first: what the process's destructors would write
        // (the durable engine closing its file) must not reach the disk.
        let node = self.node(id);
        if let Some(disk) = &node.disk {
            // A fault armed but not hit dies with the process.
            disk.fail_next_writes(0, FaultKind::Io);
            disk.fail_next_syncs(0, FaultKind::Io);
            disk.crash();
        }
        node.disk_fault_armed = false;
        // The process is gone: its store, state machine and open files with
        // it, and the snapshot streams it sent or received.
        drop(host);
        self.end_streams_of(id);
        let down = match mem {
            None => Down::Disk(None),
            Some(mut store) => {
                let mut land = self.rng.range(0, syncing.len() as u64 + 1) as usize;
                let mut tear = self.rng.chance(0.5);
                if stalled {
                    // A stalled device wrote nothing of its queue.
                    (land, tear) = (0, false);
                }
                let mut durable_commit = 0;
                for (k, w) in syncing.into_iter().enumerate() {
                    if k < land {
                        if let Some(s) = w.snapshot {
                            store.apply_snapshot(s);
                        }
                        if let Err(e) = store.append(&w.entries) {
                            return self.violation(
                                "contract",
                                format!("n{id}: unsynced write does not fit the log: {e}"),
                            );
                        }
                        if let Some(hs) = w.hard_state {
                            store.set_hard_state(hs);
                            durable_commit = hs.commit;
                        }
                    } else if k == land && tear && w.snapshot.is_none() && !w.entries.is_empty() {
                        // The write was torn: only some of its entries landed.
                        let n = self.rng.range(0, w.entries.len() as u64) as usize;
                        if let Err(e) = store.append(&w.entries[..n]) {
                            return self.violation(
                                "contract",
                                format!("n{id}: torn write does not fit the log: {e}"),
                            );
                        }
                    }
                }
                let node = self.node(id);
                node.durable_commit = node.durable_commit.max(durable_commit);
                node.shadow = ShadowLog::from_store(&store);
                Down::Mem(store)
            }
        };
        let node = self.node(id);
        node.disk_stall_until = 0;
        node.down = Some(down);
        node.epoch += 1;
        self.stats.crashes += 1;
        self.trace.push(
            self.now,
            TraceKind::Crash {
                node: id,
                lost_writes: lost,
                reason: reason.into(),
            },
        );
    }

    fn resume(&mut self, id: NodeId) {
        let Some(run) = self.node(id).run.as_mut() else {
            return;
        };
        if !run.paused {
            return;
        }
        run.paused = false;
        // The process's timers fire for the time it missed (as a runtime's
        // interval timer bursts after a stall), before it reads anything;
        // or the missed ticks are dropped (raft-runtime's interval delays
        // instead). The clock kept running either way, and the node reads
        // it first.
        let missed = std::mem::take(&mut run.missed_ticks);
        let missed = if run.drop_missed_ticks { 0 } else { missed };
        let deferred = std::mem::take(&mut run.deferred);
        let clock = self.clock_nanos(id);
        if let Some(run) = self.node(id).run.as_mut() {
            run.host.observe_clock(clock);
        }
        for _ in 0..missed {
            if let Some(run) = self.node(id).run.as_mut() {
                run.host.handle_tick();
            }
            self.drive(id);
        }
        self.trace.push(self.now, TraceKind::Resume { node: id });
        for (k, ev) in deferred.into_iter().enumerate() {
            self.schedule(k as Micros, ev);
        }
    }

    // ------------------------------------------------------------------
    // Event handlers
    // ------------------------------------------------------------------

    fn on_tick(&mut self, id: NodeId, epoch: u32) {
        let node = self.node(id);
        if node.epoch != epoch {
            return;
        }
        let tick_us = node.tick_us;
        let Some(run) = node.run.as_mut() else {
            return;
        };
        let ready = if run.paused {
            run.missed_ticks += 1;
            false
        } else {
            run.host.handle_tick();
            run.host.raft().has_ready()
        };
        self.schedule(tick_us, Event::Tick { node: id, epoch });
        // Most ticks only advance timers and produce nothing: the checks
        // run after the next input that does (or that produces output).
        if ready {
            self.drive(id);
        }
    }

    /// Delivers a message (left in its box until the engine takes it: a
    /// dropped message is never copied).
    fn on_deliver(&mut self, m: Box<Message>) {
        let to = m.to;
        let from = m.from;
        if to == 0 || to as usize > self.total_nodes() {
            return;
        }
        if self.phase == Phase::Faults && self.cut[from as usize * self.stride + to as usize] {
            self.stats.dropped += 1;
            if self.trace.recording() {
                let msg = describe_msg(&m);
                self.trace.push(
                    self.now,
                    TraceKind::Drop {
                        from,
                        to,
                        msg,
                        reason: "partition".into(),
                    },
                );
            }
            return;
        }
        if self.node(to).run.is_none() {
            self.stats.dropped += 1;
            return;
        }
        self.stats.deliveries += 1;
        let Some(run) = self.node(to).run.as_mut() else {
            return;
        };
        // Bad messages are dropped and counted by the engine.
        if let Err(e) = run.host.handle_message(*m) {
            return self.host_failed(to, format!("storage error: {e}"));
        }
        self.drive(to);
    }

    fn on_disk_done(&mut self, id: NodeId, epoch: u32, number: u64) {
        let now = self.now;
        let node = self.node(id);
        if node.epoch != epoch || node.run.is_none() {
            return;
        }
        if node.disk_stall_until > now {
            // The device stalled while this fsync ran: it completes later.
            let wait = node.disk_stall_until - now;
            self.schedule(
                wait,
                Event::DiskDone {
                    node: id,
                    epoch,
                    number,
                },
            );
            return;
        }
        if node.disk_fail_next {
            node.disk_fail_next = false;
            // The fsync failed: the node must stop without acknowledging
            // anything of this write. Restart it later.
            self.stats.storage_failures += 1;
            self.crash(id, "fsync failed (EIO)");
            let after = self.rng.range(5 * TICK_US, 50 * TICK_US);
            self.schedule(after, Event::Restart { node: id });
            return;
        }
        if self.cfg.storage == StorageKind::Disk {
            // Writes held back by a stall go to the disk now, then the sync.
            if !self.issue_writes(id) {
                return;
            }
            let synced = match node_store(&self.nodes[id as usize - 1]) {
                Some(_) if self.cfg.skip_sync => Ok(()),
                Some(store) => store.sync(),
                None => return,
            };
            if let Err(e) = synced {
                return self.storage_failed(id, "sync", e);
            }
        }
        let mut durable_commit = None;
        let node = &mut self.nodes[id as usize - 1];
        {
            let run = node.run.as_mut().expect("checked above");
            // Drained in place: the vector's memory serves the next fsync.
            let mut syncing = std::mem::take(&mut run.syncing);
            for w in syncing.drain(..) {
                debug_assert!(w.number <= number);
                if let Some(hs) = w.hard_state {
                    durable_commit = Some(hs.commit);
                }
                match run.host.store_mut() {
                    SimStore::Mem(store) => {
                        if let Some(s) = w.snapshot {
                            store.apply_snapshot(s);
                        }
                        if let Err(e) = store.append(&w.entries) {
                            let msg =
                                format!("n{id}: Ready entries do not fit the durable log: {e}");
                            return self.violation("contract", msg);
                        }
                        if let Some(hs) = w.hard_state {
                            store.set_hard_state(hs);
                        }
                    }
                    SimStore::Disk(_) => {
                        node.acked
                            .synced(w.snapshot.as_ref(), &w.entries, w.hard_state);
                    }
                }
            }
            run.syncing = syncing;
            node.acked.replaced_from = None;
            if let Some(c) = durable_commit {
                node.durable_commit = node.durable_commit.max(c);
            }
            run.syncing_issued = false;
            // What the server's writer reports: every write up to `number`
            // is durable. The host installs the snapshots they carried and
            // releases the messages that promised them.
            if let Err(e) = run.host.handle_durable(number) {
                return self.host_failed(id, format!("handle_durable failed: {e}"));
            }
        }
        self.start_fsync(id);
        self.drive(id);
    }

    /// Starts an fsync covering every queued write of node `id`, unless one
    /// is running (then they wait for the next: group commit). With
    /// `--storage disk` the writes go to the store now (unless the disk
    /// stalls) and the sync completes after the fsync latency.
    fn start_fsync(&mut self, id: NodeId) {
        let node = self.node(id);
        let epoch = node.epoch;
        let Some(run) = node.run.as_mut() else { return };
        if !run.syncing.is_empty() || run.queued.is_empty() {
            return;
        }
        // `syncing` is empty: the queued writes become the fsync's, and the
        // empty vector takes the next ones.
        std::mem::swap(&mut run.syncing, &mut run.queued);
        let number = run.syncing.last().map_or(0, |w| w.number);
        let latency = self
            .rng
            .range(self.params.fsync_min_us, self.params.fsync_max_us + 1);
        self.schedule(
            latency,
            Event::DiskDone {
                node: id,
                epoch,
                number,
            },
        );
        if self.nodes[id as usize - 1].disk_stall_until <= self.now {
            self.issue_writes(id);
        }
    }

    /// `--storage disk`: hands the writes of the fsync in flight to the
    /// store (they are durable only once it syncs). False if the node
    /// stopped (or the run failed).
    fn issue_writes(&mut self, id: NodeId) -> bool {
        if self.cfg.storage != StorageKind::Disk {
            return true;
        }
        let node = &mut self.nodes[id as usize - 1];
        let Some(run) = node.run.as_mut() else {
            return false;
        };
        if run.syncing_issued {
            return true;
        }
        run.syncing_issued = true;
        let SimStore::Disk(store) = run.host.store() else {
            return true;
        };
        let mut failed = None;
        for w in &run.syncing {
            node.acked.issued(w.snapshot.as_ref(), &w.entries);
            if let Err(e) = store.write(w.snapshot.as_ref(), &w.entries, w.hard_state) {
                failed = Some(e);
                break;
            }
        }
        match failed {
            None => true,
            Some(e) => {
                self.storage_failed(id, "write", e);
                false
            }
        }
    }

    /// The store of node `id` refused an operation. An I/O failure (only
    /// injected ones are expected) stops the node, as the runtime does:
    /// nothing of the failed write is acknowledged, and after a restart its
    /// disk must still hold everything acknowledged before. Any other
    /// refusal means the engine asked for an impossible write.
    fn storage_failed(&mut self, id: NodeId, op: &'static str, e: WriteError) {
        let armed = self.nodes[id as usize - 1].disk_fault_armed;
        if !e.is_fatal() {
            return self.violation(
                "storage-refused",
                format!("n{id}: store refused a {op}: {e}"),
            );
        }
        if !armed {
            return self.violation(
                "storage",
                format!("n{id}: store failed a {op} without an injected fault: {e}"),
            );
        }
        self.stats.storage_failures += 1;
        self.trace.push(
            self.now,
            TraceKind::StorageFailed {
                node: id,
                error: format!("{op}: {e}"),
            },
        );
        self.crash(id, "storage failed: the node stops");
        let after = self.rng.range(5 * TICK_US, 50 * TICK_US);
        self.schedule(after, Event::Restart { node: id });
    }

    // ------------------------------------------------------------------
    // The Ready loop
    // ------------------------------------------------------------------

    /// Has node `id`'s host process what its inputs produced, carries out
    /// the outputs as the server's driver does (answers, messages, writes
    /// to the simulated disk, compactions), then checks the node.
    fn drive(&mut self, id: NodeId) {
        let Some(run) = self.node(id).run.as_mut() else {
            return;
        };
        if run.paused {
            return;
        }
        if let Err(e) = run.host.process() {
            return self.host_failed(id, format!("host failed: {e}"));
        }
        self.check_state_machine(id, true);
        if self.failed() {
            return;
        }
        // Events first: a new leader's role change comes before its first
        // write goes to the disk (the Figure 8 schedule may stall it).
        while let Some(ev) = self.node(id).run.as_mut().and_then(|r| r.host.poll_event()) {
            self.on_host_event(id, ev);
            if self.failed() {
                return;
            }
        }
        loop {
            let Some(run) = self.node(id).run.as_mut() else {
                return;
            };
            let Some(m) = run.host.poll_transmit() else {
                break;
            };
            self.send(m);
        }
        while let Some(m) = self
            .node(id)
            .run
            .as_mut()
            .and_then(|r| r.host.poll_snapshot_send())
        {
            self.start_stream(id, m);
        }
        loop {
            let Some(run) = self.node(id).run.as_mut() else {
                return;
            };
            let Some(op) = run.host.poll_write() else {
                break;
            };
            match op {
                WriteOp::Write(b) => {
                    self.queue_write(id, b);
                    if self.failed() {
                        return;
                    }
                }
                WriteOp::Compact(snapshot) => {
                    let run = self.node(id).run.as_mut().expect("checked above");
                    run.compaction = Some(snapshot);
                }
                // The runtime runs it off the driver (under the read
                // lock, applying nothing until it reports): here, an fsync
                // that completes after a simulated latency.
                WriteOp::Checkpoint => {
                    if self.cfg.state == StateKind::Memory {
                        let msg = format!("n{id}: an in-memory state machine was checkpointed");
                        return self.violation("contract", msg);
                    }
                    let run = self.node(id).run.as_mut().expect("checked above");
                    run.checkpointing = true;
                    let epoch = self.node(id).epoch;
                    let latency = self
                        .rng
                        .range(self.params.fsync_min_us, self.params.fsync_max_us + 1);
                    self.schedule(latency, Event::CheckpointDone { node: id, epoch });
                }
            }
        }
        self.maybe_compact(id);
        if self.failed() {
            return;
        }
        self.observe(id);
        if matches!(
            self.figure8,
            Figure8::Committer {
                committed: true,
                ..
            }
        ) {
            self.figure8_maybe_crash();
        }
    }

    /// One answer or notice from node `id`'s host.
    fn on_host_event(
        &mut self,
        id: NodeId,
        ev: HostEvent<ServerResponse, ProposalCaller, ReadCaller>,
    ) {
        match ev {
            HostEvent::SoftState(ss) => {
                if let Some(run) = self.node(id).run.as_mut() {
                    run.soft = ss;
                }
                if ss.role == Role::Leader {
                    self.figure8_elected(id, ss.term);
                }
                if self.trace.recording() {
                    self.trace.push(
                        self.now,
                        TraceKind::Role {
                            node: id,
                            role: ss.role.to_string(),
                            term: ss.term,
                            leader: ss.leader,
                        },
                    );
                }
            }
            HostEvent::Applied {
                caller,
                index,
                term,
                response,
            } => {
                let ProposalCaller::Client(w) = caller else {
                    return;
                };
                let response = match response {
                    ServerResponse::Kv(r) => r,
                    other => {
                        let msg = format!("n{id}: a client command at {index} answered {other:?}");
                        return self.violation("state-machine", msg);
                    }
                };
                self.reply(
                    id,
                    w,
                    ReplyResult::Applied {
                        response,
                        index,
                        term,
                    },
                );
            }
            HostEvent::ProposalFailed { caller, error } => {
                let ProposalCaller::Client(w) = caller else {
                    return;
                };
                // Certainly not applied: the client may retry at once. Any
                // other failure (`Indeterminate`: a snapshot covered it) may
                // have applied: the client hears nothing and its attempt
                // times out, an unknown outcome in the history.
                if error == ProposeError::Dropped {
                    self.reply(id, w, ReplyResult::Lost);
                }
            }
            HostEvent::ReadReady { caller, index } => {
                if index < caller.floor {
                    // Linearizable reads see every write committed before
                    // they began (thesis §6.4).
                    let msg = format!(
                        "n{id} served a read (client c{} op#{}) at index {index}, but entry {} was already committed when the read arrived",
                        caller.waiter.client + 1,
                        caller.waiter.op,
                        caller.floor
                    );
                    return self.violation("read-index", msg);
                }
                let Some(run) = self.node(id).run.as_ref() else {
                    return;
                };
                let value = {
                    let sm = run
                        .host
                        .state_machine()
                        .read()
                        .unwrap_or_else(|e| e.into_inner());
                    sm.inner.kv().get(&key_bytes(caller.key))
                };
                match value {
                    Ok(v) => self.reply(id, caller.waiter, ReplyResult::Read(v.map(|kv| kv.value))),
                    // The engine failing a read answers nothing (the
                    // client retries); the node stops at its next apply.
                    Err(_) => self.reply(id, caller.waiter, ReplyResult::Retry("read failed")),
                }
            }
            HostEvent::ReadFailed { caller, .. } => {
                self.reply(id, caller.waiter, ReplyResult::Retry("read dropped"));
            }
        }
    }

    /// A write handed out by node `id`'s host goes to its simulated disk
    /// (group commit: it joins the next fsync).
    fn queue_write(&mut self, id: NodeId, w: PendingWrite) {
        // The shadow log follows what the node was told to write.
        if let Some(s) = &w.snapshot {
            self.node(id)
                .shadow
                .install_snapshot(s.meta.last_index, s.meta.last_term);
        }
        if !w.entries.is_empty() {
            self.shadow_append(id, &w.entries);
            if self.failed() {
                return;
            }
        }
        let run = self.node(id).run.as_mut().expect("driving a running node");
        run.queued.push(w);
        self.start_fsync(id);
    }

    /// Drains what node `id`'s state machine recorded: every applied entry
    /// goes to the state-machine-safety check, every restored snapshot to
    /// the digest check.
    /// `count_installs`: false at open (the restore from the node's own
    /// disk is not an install from the leader).
    fn check_state_machine(&mut self, id: NodeId, count_installs: bool) {
        let Some(run) = self.node(id).run.as_mut() else {
            return;
        };
        let (applied, snapshots, out_of_turn) = {
            let mut sm = run
                .host
                .state_machine()
                .write()
                .unwrap_or_else(|e| e.into_inner());
            (
                std::mem::take(&mut sm.applied),
                std::mem::take(&mut sm.snapshots),
                sm.out_of_turn.take(),
            )
        };
        if let Some(msg) = out_of_turn {
            return self.violation("contract", format!("n{id}: {msg}"));
        }
        for (index, term, hash) in applied {
            if let Err(msg) = self.checker.applied(index, term, hash, id) {
                return self.violation("state-machine-safety", msg);
            }
        }
        for snap in snapshots {
            if snap.restored && count_installs {
                self.stats.snapshots_installed += 1;
                self.trace.push(
                    self.now,
                    TraceKind::InstallSnapshot {
                        node: id,
                        index: snap.index,
                    },
                );
            }
            if let Err(msg) = self.checker.snapshot_digest(snap.index, snap.digest, id) {
                return self.violation("state-machine-safety", msg);
            }
            if snap.restored && self.cfg.state == StateKind::Durable {
                // Installing switched the engine file (a durable rename).
                self.note_durable_state(id, snap.index, snap.digest);
            }
        }
    }

    /// Carries out node `id`'s pending compaction once every write handed
    /// out before it is durable (the contract's order; the server's writer
    /// thread compacts after the sync of its batch).
    fn maybe_compact(&mut self, id: NodeId) {
        let state = self.cfg.state;
        let Some(run) = self.node(id).run.as_mut() else {
            return;
        };
        if !run.queued.is_empty() || !run.syncing.is_empty() {
            return;
        }
        let Some(snapshot) = run.compaction.take() else {
            return;
        };
        let index = snapshot.meta.last_index;
        // A durable state machine's compaction carries no data: the state
        // is the engine's, checked at its checkpoint.
        let digest = match state {
            StateKind::Durable => None,
            StateKind::Memory => match hosted::snapshot_digest(&snapshot.data) {
                Ok((at, d)) if at == index => Some(d),
                Ok((at, _)) => {
                    let msg = format!("n{id}: snapshot for {index} holds the state at {at}");
                    return self.violation("snapshot", msg);
                }
                Err(e) => {
                    let msg = format!("n{id}: snapshot at {index} does not restore: {e}");
                    return self.violation("snapshot", msg);
                }
            },
        };
        match run.host.store_mut() {
            SimStore::Mem(store) => {
                if let Err(e) = store.compact(snapshot) {
                    return self.violation(
                        "contract",
                        format!("n{id}: compaction at {index} refused: {e}"),
                    );
                }
            }
            SimStore::Disk(store) => {
                // Writes the snapshot file and syncs, before dropping the
                // log it covers.
                if let Err(e) = store.compact(&snapshot) {
                    return self.storage_failed(id, "compaction", e);
                }
                self.node(id).acked.log.compact(index);
            }
        }
        if let Some(run) = self.node(id).run.as_mut() {
            run.host.handle_compacted(index);
        }
        self.node(id).shadow.compact(index);
        self.stats.compactions += 1;
        self.trace
            .push(self.now, TraceKind::Compact { node: id, index });
        if let Some(digest) = digest {
            if let Err(msg) = self.checker.snapshot_digest(index, digest, id) {
                self.violation("state-machine-safety", msg);
            }
        }
    }

    fn shadow_append(&mut self, id: NodeId, entries: &[Entry]) {
        let node = &mut self.nodes[id as usize - 1];
        let first = entries[0].index;
        let prev_term = if first == 0 {
            None
        } else {
            node.shadow.term(first - 1)
        };
        let replaced = node.shadow.append(entries);
        let mut prev = prev_term;
        for e in entries {
            if e.index <= node.shadow.snap_index {
                prev = Some(e.term);
                continue;
            }
            let hash = payload_hash(&e.payload);
            if let Some(p) = prev {
                if let Err(msg) = self.checker.log_entry(e.index, e.term, hash, p, id) {
                    return self.violation("log-matching", msg);
                }
            }
            prev = Some(e.term);
        }
        // The term of the leader whose append replaced them: the node took
        // it in its current term (each input is driven on its own).
        let by_term = node
            .run
            .as_ref()
            .map_or(Term::MAX, |r| r.host.raft().term());
        for (index, term, hash) in replaced {
            if let Err(msg) = self.checker.overwritten(index, term, hash, by_term, id) {
                return self.violation("state-machine-safety", msg);
            }
        }
    }

    /// Runs the continuous checks on node `id` after it handled an input.
    fn observe(&mut self, id: NodeId) {
        let node = &mut self.nodes[id as usize - 1];
        let Some(run) = node.run.as_mut() else {
            return;
        };
        if let Err(e) = run.host.validate() {
            return self.violation("validate", format!("n{id}: {e}"));
        }
        let raft = run.host.raft();
        // The commit as of the last Ready the host took: the writes behind
        // it (and so the shadow log) may lag the engine's own commit while
        // the host holds Readies back at its in-flight limit.
        let commit = run.host.committed();
        let applied = raft.applied_index();
        let role = raft.role();
        let term = raft.term();
        let sm_applied = run
            .host
            .state_machine()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .applied_index();
        if commit < run.last_commit {
            let msg = format!(
                "n{id}: commit index went back from {} to {commit}",
                run.last_commit
            );
            return self.violation("monotonic", msg);
        }
        if applied < run.last_applied {
            let msg = format!(
                "n{id}: applied index went back from {} to {applied}",
                run.last_applied
            );
            return self.violation("monotonic", msg);
        }
        if applied != sm_applied {
            let msg = format!(
                "n{id}: engine says applied {applied} but the state machine is at {sm_applied}"
            );
            return self.violation("contract", msg);
        }
        run.last_applied = applied;
        let old_commit = run.last_commit;
        run.last_commit = commit;
        let is_leader = role == Role::Leader;
        let led_term = node.led_term;
        if commit > old_commit {
            let commit_term = if is_leader { Some(term) } else { None };
            for index in old_commit + 1..=commit {
                let Some((t, h)) = node.shadow.get(index) else {
                    // Applied and compacted within the same input: the
                    // checker knows it from `applied`.
                    if let Some(ct) = commit_term {
                        self.checker.committed_compacted(index, ct);
                    }
                    continue;
                };
                if let Err(msg) = self.checker.committed(index, t, h, commit_term, id) {
                    return self.violation("state-machine-safety", msg);
                }
            }
            if let (Some(_), true) = (commit_term, self.trace.recording()) {
                let m = run.host.raft().membership();
                let config = format!(
                    "voters {:?} outgoing {:?} learners {:?}",
                    m.voters, m.voters_outgoing, m.learners
                );
                self.trace.push(
                    self.now,
                    TraceKind::Commit {
                        node: id,
                        index: commit,
                        config,
                    },
                );
            }
            if let Some(ct) = commit_term {
                // Every leader of a later term must hold what was committed.
                let lo = old_commit + 1;
                for other in &self.nodes {
                    let Some(r) = other.run.as_ref() else {
                        continue;
                    };
                    let raft = r.host.raft();
                    if other.id == id || raft.role() != Role::Leader || raft.term() <= ct {
                        continue;
                    }
                    if let Err(msg) =
                        self.checker
                            .leader_holds(&other.shadow, other.id, raft.term(), lo..=commit)
                    {
                        return self.violation("leader-completeness", msg);
                    }
                }
            }
        }
        if is_leader
            && commit > old_commit
            && term > self.nodes[id as usize - 1].committed_as_leader_term
        {
            self.nodes[id as usize - 1].committed_as_leader_term = term;
            self.figure8_first_commit(id, term);
        }
        if is_leader && term > led_term {
            self.nodes[id as usize - 1].led_term = term;
            self.maybe_deafen_old_leader(id, term);
            self.stats.leaders += 1;
            if self.phase == Phase::Faults && self.rng.chance(self.params.crash_after_elected_prob)
            {
                // A leader that dies before replicating its first entry
                // leaves a stranded entry of a high term (Figure 8).
                let at = self.rng.range(0, 3 * TICK_US);
                self.schedule(
                    at,
                    Event::Crash {
                        node: id,
                        reason: "crash right after being elected",
                    },
                );
                let back = at
                    + self
                        .rng
                        .range(self.params.restart_min_us, self.params.restart_max_us);
                self.schedule(back, Event::Restart { node: id });
            }
            if let Err(msg) = self.checker.leader_elected(term, id) {
                return self.violation("election-safety", msg);
            }
            let node = &self.nodes[id as usize - 1];
            if let Err(msg) = self
                .checker
                .leader_holds(&node.shadow, id, term, 1..=LogIndex::MAX)
            {
                self.violation("leader-completeness", msg);
            }
        }
    }

    // ------------------------------------------------------------------
    // Network
    // ------------------------------------------------------------------

    fn send(&mut self, m: Message) {
        if let MessageBody::VoteResponse(r) = &m.body {
            // Elections are where a forgotten vote hurts: sometimes crash a
            // node right after it granted one, before anything else happens.
            if !r.pre_vote
                && r.granted
                && self.phase == Phase::Faults
                && self.rng.chance(self.params.crash_after_vote_prob)
            {
                self.schedule(
                    0,
                    Event::Crash {
                        node: m.from,
                        reason: "crash right after voting",
                    },
                );
                let after = self.rng.range(200, 3 * TICK_US);
                self.schedule(after, Event::Restart { node: m.from });
            }
        }
        if let MessageBody::AppendResponse(AppendResponse {
            outcome: AppendOutcome::Success { match_index },
            ..
        }) = &m.body
        {
            // Likewise for acknowledgements: sometimes crash a follower right
            // after it acknowledged new entries (a host that acknowledged
            // before its fsync loses them, and the leader counted them).
            let node = self.node(m.from);
            if *match_index > node.last_ack_match {
                node.last_ack_match = *match_index;
                if self.phase == Phase::Faults && self.rng.chance(self.params.crash_after_ack_prob)
                {
                    self.schedule(
                        0,
                        Event::Crash {
                            node: m.from,
                            reason: "crash right after acknowledging entries",
                        },
                    );
                    let after = self.rng.range(200, 3 * TICK_US);
                    self.schedule(after, Event::Restart { node: m.from });
                }
            }
        }
        let faults = self.phase == Phase::Faults;
        if faults && self.rng.chance(self.params.drop_prob) {
            self.stats.dropped += 1;
            if self.trace.recording() {
                let msg = describe_msg(&m);
                self.trace.push(
                    self.now,
                    TraceKind::Drop {
                        from: m.from,
                        to: m.to,
                        msg,
                        reason: "lost".into(),
                    },
                );
            }
            return;
        }
        if faults && self.rng.chance(self.params.dup_prob) {
            self.stats.duplicated += 1;
            if self.trace.recording() {
                let msg = describe_msg(&m);
                self.trace.push(
                    self.now,
                    TraceKind::Duplicate {
                        from: m.from,
                        to: m.to,
                        msg,
                    },
                );
            }
            let d = self.net_delay() + self.slow_link_us(m.from);
            self.schedule(d, Event::Deliver(Box::new(m.clone())));
        }
        let d = self.net_delay() + self.slow_link_us(m.from);
        self.schedule(d, Event::Deliver(Box::new(m)));
    }

    /// Extra delay of messages sent by `from` now (a congested link).
    fn slow_link_us(&self, from: NodeId) -> Micros {
        match self.nodes.get(from as usize - 1) {
            Some(n) if n.slow_out_until > self.now => n.slow_out_extra_us,
            _ => 0,
        }
    }

    fn net_delay(&mut self) -> Micros {
        if self.phase == Phase::Faults && self.rng.chance(self.params.long_delay_prob) {
            self.rng
                .range(self.params.delay_max_us, self.params.long_delay_max_us)
        } else {
            self.rng
                .range(self.params.delay_min_us, self.params.delay_max_us + 1)
        }
    }

    fn heal(&mut self) {
        if self.cut.iter().any(|&c| c) {
            self.cut.iter_mut().for_each(|c| *c = false);
            self.trace.push(self.now, TraceKind::Heal);
        }
    }

    // ------------------------------------------------------------------
    // The end
    // ------------------------------------------------------------------

    fn final_checks(&mut self) {
        // Replicas that applied the same prefix hold the same state.
        let mut by_applied: BTreeMap<LogIndex, (NodeId, u64)> = BTreeMap::new();
        for n in &self.nodes {
            let Some(run) = n.run.as_ref() else { continue };
            let sm = run
                .host
                .state_machine()
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let kv = sm.inner.kv();
            let digest = kv
                .validate()
                .and_then(|()| kv.digest().map_err(|e| e.to_string()));
            let digest = match digest {
                Ok(d) => d,
                Err(e) => {
                    let msg = format!("n{}: KvStore invariant broken: {e}", n.id);
                    self.checker.set(Violation {
                        check: "state-machine",
                        message: msg,
                        time_us: self.now,
                    });
                    return;
                }
            };
            let applied = kv.applied_index();
            drop(sm);
            match by_applied.get(&applied) {
                Some(&(other, d)) if d != digest => {
                    let msg = format!(
                        "n{other} and n{} applied up to {applied} but their state digests differ",
                        n.id
                    );
                    self.checker.set(Violation {
                        check: "state-machine-safety",
                        message: msg,
                        time_us: self.now,
                    });
                    return;
                }
                _ => {
                    by_applied.insert(applied, (n.id, digest));
                }
            }
        }
        // Every acknowledged write survives in the final leader's log.
        if self.cfg.liveness {
            if let Some(l) = self.current_leader() {
                let node = &self.nodes[l as usize - 1];
                if let Err(msg) = self.checker.acked_in(&node.shadow, l) {
                    self.checker.set(Violation {
                        check: "lost-write",
                        message: msg,
                        time_us: self.now,
                    });
                }
            }
        }
    }

    fn finish(mut self) -> SeedOutcome {
        if !self.failed() {
            self.final_checks();
        }
        let mut lin = LinVerdict::Skipped;
        if !self.failed() {
            let opts = CheckOptions {
                steps_per_partition_max: 5_000_000,
                ..CheckOptions::default()
            };
            lin = match linearizability::check(&KvModel::new(), &self.history, &opts) {
                CheckResult::Ok => LinVerdict::Ok,
                CheckResult::Unknown { .. } => LinVerdict::Unknown,
                CheckResult::Illegal(v) => {
                    let msg = v.explain(&self.history);
                    self.violation("linearizability", msg);
                    LinVerdict::Illegal
                }
            };
        }
        self.stats.ops_unknown = self
            .history
            .ops()
            .iter()
            .filter(|o| matches!(o.outcome, linearizability::Outcome::Unknown))
            .count() as u64;
        self.stats.virtual_time_us = self.now;
        self.trace.mix(&[
            self.stats.events,
            self.stats.deliveries,
            self.stats.ops_completed,
        ]);
        self.trace
            .push(self.now, TraceKind::Phase { name: "end".into() });
        SeedOutcome {
            violation: self.checker.violation.take(),
            stats: self.stats,
            linearizability: lin,
            trace_hash: self.trace.hash(),
            trace: self.trace.into_events(),
            history: self.history,
            config: self.cfg,
            params: self.params,
        }
    }
}

/// The data directory of node `id` on its simulated disk.
fn node_dir(id: NodeId) -> PathBuf {
    PathBuf::from(format!("/n{id}"))
}

/// The `Store` of a running node with `--storage disk`.
fn node_store(node: &Node) -> Option<&Store<SimDisk>> {
    match node.run.as_ref()?.host.store() {
        SimStore::Disk(store) => Some(store),
        SimStore::Mem(_) => None,
    }
}

/// The cluster id in every simulated node's store (one cluster per run).
const SIM_CLUSTER_ID: u64 = 0x5151_C1A5_7E12;

/// The durable state machine's engine file on node `id`'s disk (beside
/// the log store's files, as the server keeps it in its data directory).
fn state_file(id: NodeId) -> PathBuf {
    node_dir(id).join("kv").join("state.redb")
}

/// The durable engine's options in the simulator: the smallest page cache
/// (the simulated states are tiny; redb's cache is per open store).
fn state_options() -> MvccOptions {
    MvccOptions {
        cache_bytes: raftkv_mvcc::CACHE_BYTES_MIN,
        verify_on_open: false,
    }
}

/// Bootstrapped disks, by (node id, founding voters: 0 for a spare, `None`
/// for no log store, with a durable state file).
type DiskKey = (NodeId, Option<usize>, bool);

thread_local! {
    /// Freshly bootstrapped disks: bootstrapping writes and fsyncs several
    /// files, so each run starts from a copy of one made earlier on this
    /// thread.
    static BOOTSTRAPPED: std::cell::RefCell<BTreeMap<DiskKey, SimDisk>> =
        const { std::cell::RefCell::new(BTreeMap::new()) };
}

/// A disk on which node `id`'s store was bootstrapped with `membership`
/// (the voters `1..=founders`, or none for a spare; no store at all with
/// `founders` `None`) and, with `durable_state`, an empty durable state
/// machine created; its random choices (crash tears, short writes) come
/// from `seed`.
fn bootstrapped_disk(
    id: NodeId,
    founders: Option<usize>,
    membership: Membership,
    seed: u64,
    durable_state: bool,
) -> Result<SimDisk, String> {
    BOOTSTRAPPED.with(|cache| {
        let mut cache = cache.borrow_mut();
        let key = (id, founders, durable_state);
        let template = match cache.get(&key) {
            Some(d) => d.clone(),
            None => {
                let d = SimDisk::new(0);
                if founders.is_some() {
                    Store::bootstrap(
                        d.clone(),
                        node_dir(id),
                        SIM_CLUSTER_ID,
                        id,
                        membership,
                        StoreConfig::default(),
                    )
                    .map_err(|e| e.to_string())?;
                }
                if durable_state {
                    let file = state_file(id);
                    if let Some(dir) = file.parent() {
                        raft_storage::Disk::create_dir_all(&d, dir).map_err(|e| e.to_string())?;
                    }
                    MvccStore::open_on_disk(d.clone(), &file, KvConfig::default(), state_options())
                        .map_err(|e| e.to_string())?;
                }
                cache.insert(key, d.clone());
                d
            }
        };
        // Everything a bootstrap writes is synced: the copy is exact.
        Ok(template.crashed_copy(seed))
    })
}
