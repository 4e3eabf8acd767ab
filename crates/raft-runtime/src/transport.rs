//! The transport seam. The driver hands every outgoing message to
//! [`Transport::send`], which must never block and never fail loudly: a
//! message that cannot be delivered is dropped (and counted), and Raft
//! retransmits. Incoming messages reach the driver through a bounded
//! `tokio::sync::mpsc` channel whose sender the transport owns (see
//! [`inbound_channel`]).

use raft_core::{Message, NodeId};
use tokio::sync::mpsc;

use crate::addr::PeerAddr;

/// Outgoing side of a transport, owned by the driver task.
pub trait Transport: Send + 'static {
    /// Queues `msg` for `msg.to`. Never blocks: drops when the peer's queue
    /// is full or the peer is unknown.
    fn send(&mut self, msg: Message);

    /// Sets (`Some`) or forgets (`None`) the address of a peer, e.g. after a
    /// membership change. Transports without addresses ignore it.
    fn set_peer_addr(&mut self, _id: NodeId, _addr: Option<PeerAddr>) {}

    /// Stops every connection and background task.
    fn shutdown(&mut self) {}

    /// Resolves once what [`shutdown`](Self::shutdown) stopped is gone
    /// (e.g. the listening socket is closed, so a restarted node can bind
    /// the same port). The driver awaits it before it reports itself
    /// stopped. Transports with nothing to wait for keep the default.
    fn closed(&mut self) -> impl std::future::Future<Output = ()> + Send + '_ {
        std::future::ready(())
    }

    // The snapshot side (durable state machines stream their snapshots
    // beside the message stream, so megabytes of state never sit in front
    // of a heartbeat). A transport that cannot stream keeps the defaults;
    // a node with a durable state machine then cannot catch a follower up
    // by snapshot (the driver logs it and the leader keeps retrying).

    /// Streams `frames` to `to`. Returns at once; the stream ends with its
    /// last frame, or early if the peer cannot be reached (the frames are
    /// dropped and the producer sees its channel closed).
    fn send_snapshot(&mut self, to: NodeId, frames: mpsc::Receiver<SnapshotFrame>) {
        let _ = (to, frames);
    }

    /// The streams arriving from peers; taken once, by the driver.
    fn take_incoming_snapshots(&mut self) -> Option<mpsc::Receiver<IncomingSnapshot>> {
        None
    }

    /// True if this transport streams snapshots.
    fn streams_snapshots(&self) -> bool {
        false
    }
}

/// The driver's inbound queue.
pub type Inbound = mpsc::Receiver<Message>;

/// A bounded inbound queue: the transport keeps the sender and uses
/// `try_send`, dropping (and counting) messages when the driver lags.
pub fn inbound_channel(capacity: usize) -> (mpsc::Sender<Message>, Inbound) {
    mpsc::channel(capacity.max(1))
}

/// One frame of a streamed snapshot (durable state machines): the chunks
/// of the state machine's snapshot stream, then the leader's snapshot
/// message, its metadata set to what the chunks cover.
#[derive(Debug)]
pub enum SnapshotFrame {
    Chunk(bytes::Bytes),
    End(Message),
}

/// A snapshot stream arriving from a peer.
#[derive(Debug)]
pub struct IncomingSnapshot {
    pub from: NodeId,
    pub frames: mpsc::Receiver<SnapshotFrame>,
}

/// Frames queued in each direction of one snapshot stream: the reader of
/// the state machine runs at most this far ahead of the network.
pub const SNAPSHOT_FRAMES_QUEUED_MAX: usize = 4;

/// Snapshot streams queued for the driver before it takes them; more are
/// refused (the leader retries).
pub const INCOMING_SNAPSHOTS_QUEUED_MAX: usize = 2;
