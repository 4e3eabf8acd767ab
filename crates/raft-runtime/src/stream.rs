//! Snapshot streaming for durable state machines (see raft-core's
//! `state_machine` docs): the tasks that read a snapshot from the state
//! machine's consistent view into a transport stream, and that build a
//! received stream into the state machine's sink. Both run on tokio's
//! blocking pool, never on the driver: a multi-gigabyte state moves while
//! the driver goes on replicating, applying and answering.
//!
//! The driver allows one outgoing stream per peer and one incoming stream
//! at a time, and hears of each end through its event queue.

use std::sync::{Arc, RwLock};

use raft_core::{Message, StateMachine};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::driver::WriterEvent;
use crate::transport::{IncomingSnapshot, SnapshotFrame, SNAPSHOT_FRAMES_QUEUED_MAX};

/// Starts streaming the state machine's snapshot to `m.to`. `m` is the
/// engine's snapshot message; it leaves last, its metadata set to what the
/// stream covers. Returns the receiving end of the frames for the
/// transport. Reports `SnapshotSent` when done (or failed).
pub(crate) fn spawn_sender<SM>(
    sm: Arc<RwLock<SM>>,
    m: Message,
    events: mpsc::UnboundedSender<WriterEvent>,
) -> mpsc::Receiver<SnapshotFrame>
where
    SM: StateMachine + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel(SNAPSHOT_FRAMES_QUEUED_MAX);
    let to = m.to;
    tokio::task::spawn_blocking(move || {
        // A panicking source still frees the peer's stream slot.
        let guard = EndGuard(Some((
            events,
            WriterEvent::SnapshotSent {
                to,
                complete: false,
            },
        )));
        let result = send(&sm, m, &tx);
        match &result {
            Ok((index, bytes)) => info!(peer = to, index, bytes, "snapshot streamed"),
            Err(e) => warn!(peer = to, error = %e, "snapshot stream failed"),
        }
        guard.finish(WriterEvent::SnapshotSent {
            to,
            complete: result.is_ok(),
        });
    });
    rx
}

/// Reads the source into `tx`; returns the index and bytes sent.
fn send<SM: StateMachine>(
    sm: &RwLock<SM>,
    mut m: Message,
    tx: &mpsc::Sender<SnapshotFrame>,
) -> Result<(u64, u64), String> {
    // The read lock only while the view opens: the source reads its own
    // consistent view while the driver keeps applying.
    let mut source = sm
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .snapshot_source()?;
    let covers = source.meta();
    let mut bytes = 0u64;
    while let Some(chunk) = source.next_chunk()? {
        bytes += chunk.len() as u64;
        tx.blocking_send(SnapshotFrame::Chunk(chunk))
            .map_err(|_| "the peer's stream closed".to_string())?;
    }
    raft_host::stream::end_of_stream(&mut m, &covers).map_err(|e| e.to_string())?;
    tx.blocking_send(SnapshotFrame::End(m))
        .map_err(|_| "the peer's stream closed".to_string())?;
    Ok((covers.last_index, bytes))
}

/// Builds an incoming stream into the state machine's sink. Reports
/// `SnapshotReceived(message)` (its data the sink's descriptor) when the
/// whole stream is durable beside the live state, or `ReceiveEnded` if the
/// stream broke off or was refused.
pub(crate) fn spawn_receiver<SM>(
    sm: Arc<RwLock<SM>>,
    incoming: IncomingSnapshot,
    events: mpsc::UnboundedSender<WriterEvent>,
) where
    SM: StateMachine + Send + Sync + 'static,
{
    let from = incoming.from;
    tokio::task::spawn_blocking(move || {
        // Reports the end even if the sink panics, so the driver never
        // waits for a receive that is gone.
        let guard = EndGuard(Some((events, WriterEvent::ReceiveEnded)));
        match receive(&sm, incoming) {
            Ok(m) => guard.finish(WriterEvent::SnapshotReceived(m)),
            Err(e) => warn!(peer = from, error = %e, "snapshot receive failed"),
        }
    });
}

/// Sends its event when dropped (the task's end, however it ends), or the
/// one given to `finish`.
struct EndGuard(Option<(mpsc::UnboundedSender<WriterEvent>, WriterEvent)>);

impl EndGuard {
    fn finish(mut self, ev: WriterEvent) {
        if let Some((tx, _)) = self.0.take() {
            let _ = tx.send(ev);
        }
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if let Some((tx, ev)) = self.0.take() {
            let _ = tx.send(ev);
        }
    }
}

fn receive<SM: StateMachine>(
    sm: &RwLock<SM>,
    mut incoming: IncomingSnapshot,
) -> Result<Message, String> {
    let mut sink = sm
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .snapshot_sink()?;
    let mut bytes = 0u64;
    loop {
        match incoming.frames.blocking_recv() {
            Some(SnapshotFrame::Chunk(c)) => {
                bytes += c.len() as u64;
                sink.push(&c)?;
            }
            Some(SnapshotFrame::End(mut m)) => {
                let (covers, descriptor) = sink.finish()?;
                if m.from != incoming.from {
                    return Err(format!(
                        "stream from {} ended with a message from {}",
                        incoming.from, m.from
                    ));
                }
                raft_host::stream::received(&mut m, &covers, descriptor)
                    .map_err(|e| e.to_string())?;
                info!(
                    peer = incoming.from,
                    index = covers.last_index,
                    bytes,
                    "snapshot received"
                );
                return Ok(m);
            }
            None => return Err(format!("stream broke off after {bytes} bytes")),
        }
    }
}
