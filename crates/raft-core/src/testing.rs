//! A small in-process multi-node harness: nodes over [`MemStorage`],
//! messages passed through an in-memory network that can drop, reorder,
//! partition and crash. Used by this crate's tests and benchmark, and handy
//! for anyone experimenting with the engine. Deterministic: all randomness
//! comes from the seed given to [`Cluster::new`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::message::Message;
use crate::node::RawNode;
use crate::ready::ReadState;
use crate::rng::SplitMix64;
use crate::storage::{LogStore, MemStorage};
use crate::types::{
    Entry, EntryPayload, LogIndex, Membership, Nanos, NodeId, Role, Snapshot, SnapshotMeta, Term,
};

/// Most message deliveries per `deliver_all`, so a livelock in a test shows
/// up as a failure instead of a hang.
const DELIVERIES_MAX: usize = 1_000_000;

/// A cluster of engines wired together by an in-memory network.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, RawNode<MemStorage>>,
    /// Storage of crashed nodes, kept for restart.
    crashed: BTreeMap<NodeId, MemStorage>,
    /// Messages in flight, in send order.
    pub network: VecDeque<Message>,
    /// Entries each node applied, in order (the "state machine").
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Read states each node produced.
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// Reads each node dropped.
    pub dropped_reads: BTreeMap<NodeId, Vec<Bytes>>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Probability (per million) that a message is dropped.
    pub drop_ppm: u32,
    /// Deliver messages in a random order instead of send order.
    pub reorder: bool,
    rng: SplitMix64,
    make_config: fn(NodeId) -> Config,
    pub delivered: u64,
    /// The one clock every node reads (no drift), advanced by
    /// `tick_interval_nanos` per [`Cluster::tick`] and by
    /// [`Cluster::advance_clock`].
    pub clock_nanos: Nanos,
    tick_interval_nanos: Nanos,
}

/// The default test configuration: elections after 10..20 ticks,
/// heartbeat every tick.
pub fn test_config(id: NodeId) -> Config {
    Config::new(id)
}

impl Cluster {
    /// A cluster of voters `1..=n` with [`test_config`].
    pub fn new(n: u64, seed: u64) -> Self {
        Self::with_config(n, seed, test_config)
    }

    pub fn with_config(n: u64, seed: u64, make_config: fn(NodeId) -> Config) -> Self {
        let membership = Membership::new_voters(1..=n);
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            crashed: BTreeMap::new(),
            network: VecDeque::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            dropped_reads: BTreeMap::new(),
            cut: BTreeSet::new(),
            drop_ppm: 0,
            reorder: false,
            rng: SplitMix64::new(seed),
            make_config,
            delivered: 0,
            clock_nanos: 0,
            tick_interval_nanos: make_config(1).tick_interval_nanos,
        };
        for id in 1..=n {
            let mut cfg = make_config(id);
            cfg.rng_seed = seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let node = RawNode::new(cfg, MemStorage::new_with_membership(membership.clone()))
                .expect("valid test config");
            c.nodes.insert(id, node);
            c.applied.insert(id, Vec::new());
        }
        c
    }

    /// Adds a fresh node with an empty configuration (to be added as a
    /// learner or voter by a membership change).
    pub fn add_empty_node(&mut self, id: NodeId) {
        let mut cfg = (self.make_config)(id);
        cfg.rng_seed ^= self.rng.next_u64();
        let node = RawNode::new(cfg, MemStorage::new_with_membership(Membership::default()))
            .expect("valid test config");
        self.nodes.insert(id, node);
        self.applied.insert(id, Vec::new());
    }

    pub fn node(&self, id: NodeId) -> &RawNode<MemStorage> {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
        self.nodes.get_mut(&id).expect("node exists")
    }

    /// Handles every Ready of node `id` as a driver would, synchronously:
    /// write, acknowledge, send, apply.
    pub fn process(&mut self, id: NodeId) {
        loop {
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            if !node.has_ready() {
                return;
            }
            let rd = node.ready().expect("MemStorage never fails");
            self.network.extend(rd.messages);
            let store = node.store_mut();
            if let Some(s) = rd.snapshot {
                let applied = self.applied.get_mut(&id).expect("node has applied log");
                // "Restore the state machine": the applied log becomes the
                // snapshot's prefix, which we model by the snapshot marker.
                applied.retain(|e| e.index <= s.meta.last_index);
                store.apply_snapshot(s);
            }
            store.append(&rd.entries).expect("contiguous entries");
            if let Some(hs) = rd.hard_state {
                store.set_hard_state(hs);
            }
            node.on_persisted(rd.number)
                .expect("MemStorage never fails");
            self.network.extend(rd.persisted_messages);
            if let Some(last) = rd.committed_entries.last().map(|e| e.index) {
                self.applied
                    .get_mut(&id)
                    .expect("node has applied log")
                    .extend(rd.committed_entries);
                node.on_applied(last);
            }
            self.reads.entry(id).or_default().extend(rd.read_states);
            self.dropped_reads
                .entry(id)
                .or_default()
                .extend(rd.dropped_reads);
        }
    }

    pub fn process_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.process(id);
        }
    }

    /// Delivers one message (if any); returns false when the network is empty.
    pub fn deliver_one(&mut self) -> bool {
        self.process_all();
        let msg = if self.reorder && self.network.len() > 1 {
            let i = (self.rng.next_u64() % self.network.len() as u64) as usize;
            self.network.remove(i)
        } else {
            self.network.pop_front()
        };
        let Some(m) = msg else {
            return false;
        };
        if self.cut.contains(&(m.from, m.to)) {
            return true;
        }
        if self.drop_ppm > 0 && (self.rng.next_u64() % 1_000_000) < u64::from(self.drop_ppm) {
            return true;
        }
        let to = m.to;
        if let Some(node) = self.nodes.get_mut(&to) {
            self.delivered += 1;
            node.observe_clock(self.clock_nanos);
            // Malformed or misrouted messages are dropped by the engine; a
            // storage error cannot happen with MemStorage.
            let _ = node.step(m);
            self.process(to);
        }
        true
    }

    /// Delivers messages until the network is quiet.
    pub fn deliver_all(&mut self) {
        for _ in 0..DELIVERIES_MAX {
            if !self.deliver_one() {
                return;
            }
        }
        panic!("network did not quiesce after {DELIVERIES_MAX} deliveries");
    }

    /// Advances the clock by one tick's worth, ticks every live node once
    /// and delivers the resulting traffic.
    pub fn tick(&mut self) {
        self.clock_nanos += self.tick_interval_nanos;
        let now = self.clock_nanos;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.node_mut(id);
            node.observe_clock(now);
            node.tick();
        }
        self.deliver_all();
    }

    /// Advances the clock by `nanos` without ticking anyone: every process
    /// was stopped (or starved) that long. Nodes see the new time at their
    /// next input.
    pub fn advance_clock(&mut self, nanos: Nanos) {
        self.clock_nanos += nanos;
    }

    pub fn ticks(&mut self, n: u32) {
        for _ in 0..n {
            self.tick();
        }
    }

    /// Ticks until some node leads (at most `max_ticks`).
    pub fn run_until_leader(&mut self, max_ticks: u32) -> Option<NodeId> {
        for _ in 0..max_ticks {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            self.tick();
        }
        self.leader()
    }

    /// Makes `id` campaign now and delivers everything.
    pub fn elect(&mut self, id: NodeId) {
        self.node_mut(id)
            .campaign()
            .expect("MemStorage never fails");
        self.deliver_all();
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    /// Leaders by term, over live nodes (for "one leader per term").
    pub fn leaders_by_term(&self) -> BTreeMap<Term, Vec<NodeId>> {
        let mut out: BTreeMap<Term, Vec<NodeId>> = BTreeMap::new();
        for n in self.nodes.values() {
            if n.role() == Role::Leader {
                out.entry(n.term()).or_default().push(n.id());
            }
        }
        out
    }

    /// Proposes `data` at `id` and delivers everything.
    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> crate::ProposalId {
        let p = self
            .node_mut(id)
            .propose(Bytes::copy_from_slice(data))
            .expect("proposal accepted");
        self.deliver_all();
        p
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts `id` off from every other node.
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.all_ids().into_iter().filter(|&o| o != id).collect();
        for o in others {
            self.cut(id, o);
        }
    }

    /// Splits the cluster into the given groups.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for &x in a.iter() {
                    for &y in b.iter() {
                        self.cut(x, y);
                    }
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    fn all_ids(&self) -> Vec<NodeId> {
        self.nodes
            .keys()
            .chain(self.crashed.keys())
            .copied()
            .collect()
    }

    /// Stops a node; its durable storage survives, in-flight messages to it
    /// are lost.
    pub fn crash(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            self.crashed.insert(id, node.store().clone());
            self.network.retain(|m| m.to != id && m.from != id);
        }
    }

    /// Restarts a crashed node from its storage. The state machine is
    /// rebuilt from the snapshot and by replaying the log.
    pub fn restart(&mut self, id: NodeId) {
        let store = self.crashed.remove(&id).expect("node was crashed");
        let mut cfg = (self.make_config)(id);
        cfg.rng_seed ^= self.rng.next_u64();
        let snap_index = store.first_index() - 1;
        cfg.applied = snap_index;
        let applied = self.applied.get_mut(&id).expect("node has applied log");
        applied.retain(|e| e.index <= snap_index);
        let node = RawNode::new(cfg, store).expect("valid stored state");
        self.nodes.insert(id, node);
    }

    /// Compacts node `id`'s log up to its applied index, as the
    /// application would after taking a snapshot.
    pub fn compact(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        let index = node.applied_index();
        let term = node.store().term(index).expect("applied entry is stored");
        let membership = node.membership().clone();
        node.store_mut()
            .compact(Snapshot {
                meta: SnapshotMeta {
                    last_index: index,
                    last_term: term,
                    membership,
                },
                data: Bytes::from(format!("snapshot@{index}")),
            })
            .expect("compaction within the log");
    }

    /// Application payloads applied by `id`, in order.
    pub fn applied_data(&self, id: NodeId) -> Vec<Bytes> {
        self.applied[&id]
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Normal(d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }

    /// Asserts state machine safety: no two nodes applied different entries
    /// at the same index.
    pub fn check_applied_consistent(&self) {
        let mut by_index: BTreeMap<LogIndex, (NodeId, &Entry)> = BTreeMap::new();
        for (&id, entries) in &self.applied {
            for e in entries {
                if let Some((other, prev)) = by_index.get(&e.index) {
                    assert_eq!(
                        (prev.term, &prev.payload),
                        (e.term, &e.payload),
                        "nodes {other} and {id} applied different entries at {}",
                        e.index
                    );
                } else {
                    by_index.insert(e.index, (id, e));
                }
            }
        }
    }
}
