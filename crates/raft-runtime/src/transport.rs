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
}

/// The driver's inbound queue.
pub type Inbound = mpsc::Receiver<Message>;

/// A bounded inbound queue: the transport keeps the sender and uses
/// `try_send`, dropping (and counting) messages when the driver lags.
pub fn inbound_channel(capacity: usize) -> (mpsc::Sender<Message>, Inbound) {
    mpsc::channel(capacity.max(1))
}
