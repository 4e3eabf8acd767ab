//! Crash-ordering: nodes crash between persisting and sending, and between
//! sending and persisting. A checker on every outgoing message verifies, at
//! the moment it is sent, that any promise it makes (a granted vote, a vote
//! request, an append or snapshot acknowledgement) is backed by what is
//! *durable* (synced) in the sender's storage. After restarts from durable
//! state only, nothing acknowledged to a client is lost.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use raft_core::{
    AppendOutcome, Entry, HardState, LogIndex, LogStore, MemStorage, Membership, Message,
    MessageBody, NodeId, Snapshot, SnapshotResponse, StorageError, Term,
};
use raft_runtime::local::{LocalNetwork, LocalTransport};
use raft_runtime::{
    start, Metrics, ProposeError, RaftHandle, RaftStorage, StorageFailure, Transport, WriteParts,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrashPoint {
    /// The writes reached the store but the process dies before the fsync:
    /// they are lost (crash between sending and persisting).
    BeforeSync,
    /// The fsync completes, then the process dies before it acknowledges
    /// (crash between persisting and sending).
    AfterSync,
}

/// Storage with a volatile view (what the running engine reads) and a
/// durable view (what survives a crash: the state at the last sync).
struct CrashStore {
    volatile: Mutex<MemStorage>,
    durable: Mutex<MemStorage>,
    armed: Mutex<Option<CrashPoint>>,
    crashed: AtomicBool,
}

impl CrashStore {
    fn new(s: MemStorage) -> Self {
        CrashStore {
            volatile: Mutex::new(s.clone()),
            durable: Mutex::new(s),
            armed: Mutex::new(None),
            crashed: AtomicBool::new(false),
        }
    }
    fn arm(&self, p: CrashPoint) {
        *self.armed.lock().unwrap() = Some(p);
    }
    fn durable(&self) -> MemStorage {
        self.durable.lock().unwrap().clone()
    }
    fn check_alive(&self) -> Result<(), StorageFailure> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(StorageFailure("crashed".into()));
        }
        Ok(())
    }
}

impl RaftStorage for CrashStore {
    fn write(&self, parts: WriteParts<'_>) -> Result<(), StorageFailure> {
        self.check_alive()?;
        let mut v = self.volatile.lock().unwrap();
        if let Some(s) = parts.snapshot {
            v.apply_snapshot(s.clone());
        }
        v.append(parts.entries)?;
        if let Some(hs) = parts.hard_state {
            v.set_hard_state(hs);
        }
        Ok(())
    }
    fn sync(&self) -> Result<(), StorageFailure> {
        self.check_alive()?;
        match self.armed.lock().unwrap().take() {
            Some(CrashPoint::BeforeSync) => {
                self.crashed.store(true, Ordering::SeqCst);
                Err(StorageFailure("simulated crash before fsync".into()))
            }
            Some(CrashPoint::AfterSync) => {
                *self.durable.lock().unwrap() = self.volatile.lock().unwrap().clone();
                self.crashed.store(true, Ordering::SeqCst);
                Err(StorageFailure("simulated crash after fsync".into()))
            }
            None => {
                *self.durable.lock().unwrap() = self.volatile.lock().unwrap().clone();
                Ok(())
            }
        }
    }
    fn compact(&self, snapshot: Snapshot) -> Result<(), StorageFailure> {
        self.check_alive()?;
        let mut v = self.volatile.lock().unwrap();
        v.compact(snapshot)?;
        *self.durable.lock().unwrap() = v.clone();
        Ok(())
    }
}

impl LogStore for CrashStore {
    fn initial_state(&self) -> Result<raft_core::InitialState, StorageError> {
        self.volatile.lock().unwrap().initial_state()
    }
    fn first_index(&self) -> LogIndex {
        self.volatile.lock().unwrap().first_index()
    }
    fn last_index(&self) -> LogIndex {
        self.volatile.lock().unwrap().last_index()
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.volatile.lock().unwrap().term(index)
    }
    fn entries(&self, lo: LogIndex, hi: LogIndex, max: u64) -> Result<Vec<Entry>, StorageError> {
        self.volatile.lock().unwrap().entries(lo, hi, max)
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.volatile.lock().unwrap().snapshot()
    }
}

/// Returns why `msg` promises something `durable` does not back, if it does.
fn broken_promise(msg: &Message, durable: &MemStorage) -> Option<String> {
    let hs: HardState = durable.hard_state();
    let voted =
        |term: Term, for_: NodeId| hs.term > term || (hs.term == term && hs.vote == Some(for_));
    match &msg.body {
        MessageBody::VoteResponse(v) if v.granted && !v.pre_vote && !voted(msg.term, msg.to) => {
            Some(format!(
                "granted vote to {} in term {} but durable {hs:?}",
                msg.to, msg.term
            ))
        }
        MessageBody::VoteRequest(v) if !v.pre_vote && !voted(msg.term, msg.from) => Some(format!(
            "asked for votes in term {} but durable {hs:?}",
            msg.term
        )),
        MessageBody::AppendResponse(r) => match r.outcome {
            AppendOutcome::Success { match_index } if durable.last_index() < match_index => {
                Some(format!(
                    "acknowledged entries up to {match_index} but durable last index is {}",
                    durable.last_index()
                ))
            }
            _ => None,
        },
        MessageBody::SnapshotResponse(SnapshotResponse::Installed { last_index })
            if durable.last_index() < *last_index =>
        {
            Some(format!(
                "acknowledged a snapshot at {last_index} but durable last index is {}",
                durable.last_index()
            ))
        }
        _ => None,
    }
}

/// Checks every outgoing message against the sender's durable state.
struct CheckedTransport {
    inner: LocalTransport,
    store: Arc<CrashStore>,
    violations: Arc<Mutex<Vec<String>>>,
    checked: Arc<Mutex<u64>>,
}

impl Transport for CheckedTransport {
    fn send(&mut self, msg: Message) {
        if let Some(v) = broken_promise(&msg, &self.store.durable.lock().unwrap()) {
            self.violations
                .lock()
                .unwrap()
                .push(format!("node {}: {v}", msg.from));
        }
        *self.checked.lock().unwrap() += 1;
        self.inner.send(msg);
    }
    fn shutdown(&mut self) {
        self.inner.shutdown();
    }
}

struct Harness {
    net: LocalNetwork,
    stores: Vec<Arc<CrashStore>>,
    handles: Vec<Option<RaftHandle<ListSm>>>,
    violations: Arc<Mutex<Vec<String>>>,
    checked: Arc<Mutex<u64>>,
}

impl Harness {
    fn new(n: u64) -> Self {
        let m = Membership::new_voters(1..=n);
        let mut h = Harness {
            net: LocalNetwork::new(),
            stores: Vec::new(),
            handles: Vec::new(),
            violations: Arc::default(),
            checked: Arc::default(),
        };
        for id in 1..=n {
            h.stores
                .push(Arc::new(CrashStore::new(MemStorage::new_with_membership(
                    m.clone(),
                ))));
            h.handles.push(None);
            h.boot(id);
        }
        h
    }

    /// Starts node `id` from its store's durable state.
    fn boot(&mut self, id: NodeId) {
        let i = (id - 1) as usize;
        let store = Arc::new(CrashStore::new(self.stores[i].durable()));
        self.stores[i] = store.clone();
        let metrics = Metrics::new();
        let cfg = test_config(id);
        let (t, inbound) = self.net.join(id, cfg.inbound_queue_max, metrics.clone());
        let t = CheckedTransport {
            inner: t,
            store: store.clone(),
            violations: self.violations.clone(),
            checked: self.checked.clone(),
        };
        self.handles[i] = Some(start(cfg, store, ListSm::default(), t, inbound, metrics).unwrap());
    }

    fn running(&self) -> Vec<&RaftHandle<ListSm>> {
        self.handles.iter().flatten().collect()
    }

    async fn leader(&self) -> NodeId {
        let r = self.running();
        wait_for(Duration::from_secs(10), "a leader", || agreed_leader(&r)).await
    }

    fn assert_no_violations(&self) {
        let v = self.violations.lock().unwrap().clone();
        assert!(v.is_empty(), "broken promises: {v:#?}");
    }

    /// Waits for the node to stop on its simulated crash.
    async fn wait_crashed(&mut self, id: NodeId) {
        let h = self.handles[(id - 1) as usize].take().unwrap();
        // `stopped` resolves with the fatal reason, without polling.
        let reason = tokio::time::timeout(Duration::from_secs(10), h.stopped())
            .await
            .expect("the crash within 10 s")
            .expect("a fatal reason");
        assert!(reason.contains("simulated crash"), "{reason}");
        assert_eq!(h.fatal_error().as_deref(), Some(reason.as_str()));
        assert!(h.is_stopped());
        assert_eq!(h.current_leader(), None, "a stopped node knows no leader");
        assert!(matches!(
            h.propose(Bytes::from_static(b"z")).await,
            Err(ProposeError::Fatal(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_around_fsync_break_no_promise_and_lose_nothing_acknowledged() {
    init_tracing();
    let mut h = Harness::new(3);
    let mut acked: Vec<Bytes> = Vec::new();
    let leader = h.leader().await;
    for i in 0..20u32 {
        let d = Bytes::from(format!("a{i}"));
        propose_anywhere(&h.running(), d.clone()).await;
        acked.push(d);
    }

    // 1. A follower crashes right after an fsync, before acknowledging.
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    h.stores[(follower - 1) as usize].arm(CrashPoint::AfterSync);
    for i in 0..10u32 {
        let d = Bytes::from(format!("b{i}"));
        propose_anywhere(&h.running(), d.clone()).await;
        acked.push(d);
    }
    h.wait_crashed(follower).await;
    h.assert_no_violations();
    h.boot(follower);

    // 2. The leader crashes before its fsync: its AppendEntries already
    // left, its own write is lost.
    let leader = h.leader().await;
    h.stores[(leader - 1) as usize].arm(CrashPoint::BeforeSync);
    let lh = h.handles[(leader - 1) as usize].clone().unwrap();
    let mut in_doubt = Vec::new();
    for i in 0..5u32 {
        let d = Bytes::from(format!("c{i}"));
        match lh.propose(d.clone()).await {
            Ok(_) => acked.push(d),
            Err(ProposeError::Fatal(_)) | Err(ProposeError::ShuttingDown) => in_doubt.push(d),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    h.wait_crashed(leader).await;
    h.assert_no_violations();
    h.boot(leader);

    // 3. A voter crashes before the fsync of whatever it writes next
    // (likely a vote or term during the coming election).
    let other = (1..=3).find(|&i| i != leader && i != follower).unwrap();
    h.stores[(other - 1) as usize].arm(CrashPoint::BeforeSync);
    let _ = h.leader().await;
    for i in 0..10u32 {
        let d = Bytes::from(format!("d{i}"));
        propose_anywhere(&h.running(), d.clone()).await;
        acked.push(d);
    }
    if h.handles[(other - 1) as usize]
        .as_ref()
        .is_some_and(|x| x.fatal_error().is_some())
    {
        h.wait_crashed(other).await;
        h.boot(other);
    }

    h.assert_no_violations();
    // Everyone converges; every acknowledged command is there, in order.
    let last = propose_anywhere(&h.running(), Bytes::from_static(b"end")).await;
    acked.push(Bytes::from_static(b"end"));
    for x in h.running() {
        wait_for(Duration::from_secs(10), "convergence", || async {
            (applied(x) >= last).then_some(())
        })
        .await;
    }
    let all = items(h.running()[0]);
    for x in h.running() {
        assert_eq!(items(x), all);
    }
    let mut pos = 0;
    for a in &acked {
        let at = all[pos..]
            .iter()
            .position(|x| x == a)
            .unwrap_or_else(|| panic!("acknowledged {a:?} lost"));
        pos += at + 1;
    }
    // In-doubt commands appear at most once.
    for d in &in_doubt {
        assert!(all.iter().filter(|x| *x == d).count() <= 1);
    }
    let v = h.violations.lock().unwrap().clone();
    assert!(v.is_empty(), "broken promises: {v:#?}");
    assert!(*h.checked.lock().unwrap() > 100);
}

/// The checker itself catches an acknowledgement of something not synced.
#[test]
fn checker_flags_undurable_promises() {
    let m = Membership::new_voters([1, 2, 3]);
    let store = CrashStore::new(MemStorage::new_with_membership(m));
    store
        .write(WriteParts {
            snapshot: None,
            entries: &[],
            hard_state: Some(HardState {
                term: 5,
                vote: Some(2),
                commit: 0,
            }),
        })
        .unwrap();
    let vote = Message {
        from: 1,
        to: 2,
        term: 5,
        body: MessageBody::VoteResponse(raft_core::VoteResponse {
            pre_vote: false,
            granted: true,
        }),
    };
    assert!(broken_promise(&vote, &store.durable()).is_some());
    store.sync().unwrap();
    assert!(broken_promise(&vote, &store.durable()).is_none());
    let ack = Message {
        from: 1,
        to: 2,
        term: 5,
        body: MessageBody::AppendResponse(raft_core::AppendResponse {
            outcome: AppendOutcome::Success { match_index: 1 },
            round: 0,
        }),
    };
    assert!(broken_promise(&ack, &store.durable()).is_some());
}
