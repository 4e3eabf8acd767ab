//! What the runtime's driver does for a durable state machine, as
//! simulated events: checkpoints (an fsync of the engine's file, off the
//! driver) and snapshot streams (from the leader's state machine, beside
//! the message stream, into the follower's sink), and a node's stop when
//! its state machine's disk fails.

use std::collections::VecDeque;

use super::*;

/// How long a received snapshot handed to the host keeps the node from
/// taking another stream if it is not installed (the engine refused it):
/// the runtime's `STAGED_SNAPSHOT_WAIT` (10 s), scaled like the election
/// timeout (1 s in a default server, 10 ms here).
const STAGED_SNAPSHOT_WAIT_US: Micros = 10 * ELECTION_TIMEOUT_US;

impl Sim {
    /// Node `id`'s host failed (it refuses every input from now on). With
    /// a disk fault armed on the node, that is the fault hitting the state
    /// machine's file (applying, checkpointing or installing a snapshot on
    /// the same disk as the log): the node stops, as the server does, and
    /// restarts later. Without one, something broke the contract.
    pub(super) fn host_failed(&mut self, id: NodeId, msg: String) {
        let node = &self.nodes[id as usize - 1];
        let injected = node.disk_fault_armed || node.disk_fail_next;
        if !injected || self.cfg.state == StateKind::Memory {
            return self.violation("contract", format!("n{id}: {msg}"));
        }
        self.node(id).disk_fail_next = false;
        self.stats.storage_failures += 1;
        self.trace.push(
            self.now,
            TraceKind::StorageFailed {
                node: id,
                error: msg,
            },
        );
        self.crash(id, "state machine storage failed: the node stops");
        let after = self.rng.range(5 * TICK_US, 50 * TICK_US);
        self.schedule(after, Event::Restart { node: id });
    }

    /// The checkpoint of node `id` completes: the state machine makes what
    /// it applied durable (its fsync may hit an injected fault: a fatal
    /// checkpoint failure), and the host resumes applying.
    pub(super) fn on_checkpoint_done(&mut self, id: NodeId, epoch: u32) {
        let now = self.now;
        let node = &self.nodes[id as usize - 1];
        if node.epoch != epoch || node.run.is_none() {
            return;
        }
        if node.disk_stall_until > now {
            // The device stalled while the fsync ran: it completes later.
            let wait = node.disk_stall_until - now;
            self.schedule(wait, Event::CheckpointDone { node: id, epoch });
            return;
        }
        // `--storage mem` arms its disk faults on the next fsync: this one
        // fails (`host_failed` disarms it).
        let failed_fsync = node.disk_fail_next;
        let skip_checkpoint = self.cfg.skip_checkpoint;
        let run = self.node(id).run.as_mut().expect("checked above");
        run.checkpointing = false;
        let (result, records) = {
            let sm = run
                .host
                .state_machine()
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let result = if failed_fsync {
                Err("fsync failed (EIO)".to_string())
            } else if skip_checkpoint {
                // The broken driver of the simulator's own test: reports
                // the applied state durable without making it so.
                let index = sm.applied_index();
                let record = sm.digest().map(|d| (index, d));
                sm.checkpoints
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(record);
                Ok(index)
            } else {
                sm.checkpoint().map_err(|e| e.to_string())
            };
            let records =
                std::mem::take(&mut *sm.checkpoints.lock().unwrap_or_else(|e| e.into_inner()));
            (result, records)
        };
        // A failed one: the host hears of it below.
        for (index, digest) in records.into_iter().flatten() {
            self.note_durable_state(id, index, digest);
            self.trace
                .push(self.now, TraceKind::Checkpoint { node: id, index });
            self.stats.checkpoints += 1;
            if let Err(msg) = self.checker.snapshot_digest(index, digest, id) {
                return self.violation("state-machine-safety", msg);
            }
        }
        let Some(run) = self.node(id).run.as_mut() else {
            return;
        };
        if let Err(e) = run.host.handle_checkpointed(result) {
            return self.host_failed(id, format!("checkpoint failed: {e}"));
        }
        self.drive(id);
    }

    /// Leader `from`'s host wants snapshot message `m` streamed to `m.to`
    /// (the driver's `start_snapshot_stream`): unless a stream to that
    /// peer runs, read the state machine's consistent view now and send it
    /// chunk by chunk, the message last, its metadata set to what the
    /// chunks cover (raft-runtime's `stream::send`).
    pub(super) fn start_stream(&mut self, from: NodeId, mut m: Message) {
        let to = m.to;
        if to == 0 || to as usize > self.total_nodes() || to == from {
            return;
        }
        let Some(run) = self.node(from).run.as_mut() else {
            return;
        };
        if run.streams_out.contains(&to) {
            return; // the engine's resend while a stream runs
        }
        let read = {
            let sm = run
                .host
                .state_machine()
                .read()
                .unwrap_or_else(|e| e.into_inner());
            sm.snapshot_source().and_then(|mut source| {
                let covers = source.meta();
                let mut chunks = VecDeque::new();
                while let Some(chunk) = source.next_chunk()? {
                    chunks.push_back(chunk);
                }
                Ok((covers, chunks))
            })
        };
        let (covers, chunks) = match read {
            Ok(r) => r,
            Err(e) => {
                // A failed read only ends this transfer (the leader retries).
                self.trace_stream(from, to, format!("could not be read: {e}"));
                return;
            }
        };
        if raft_host::stream::end_of_stream(&mut m, &covers).is_err() {
            return self.violation(
                "contract",
                format!("n{from}: a message that is not a snapshot handed out for streaming"),
            );
        }
        run.streams_out.insert(to);
        let id = self.next_stream;
        self.next_stream += 1;
        let (from_epoch, to_epoch) = (self.node(from).epoch, self.node(to).epoch);
        if self.trace.recording() {
            let bytes: usize = chunks.iter().map(|c| c.len()).sum();
            let what = format!(
                "#{id} started: state at {}@t{}, {} chunks, {bytes} bytes",
                covers.last_index,
                covers.last_term,
                chunks.len()
            );
            self.trace_stream(from, to, what);
        }
        self.streams.insert(
            id,
            Stream {
                from,
                to,
                from_epoch,
                to_epoch,
                chunks,
                end: Some(m),
                sink: None,
            },
        );
        let d = self.net_delay() + self.slow_link_us(from);
        self.schedule(d, Event::StreamFrame { stream: id, to });
    }

    /// The next frame of stream `id` reaches its receiver: the first one
    /// opens a sink (if the receiver takes the stream: one at a time, none
    /// while a received one waits), chunks go into it, the last one
    /// finishes it and hands the snapshot message, its data the sink's
    /// descriptor, to the receiver's host.
    pub(super) fn on_stream_frame(&mut self, id: u64) {
        let Some(stream) = self.streams.get(&id) else {
            return;
        };
        let (from, to) = (stream.from, stream.to);
        let up = |n: &Node, epoch: u32| n.epoch == epoch && n.run.is_some();
        if !up(&self.nodes[from as usize - 1], stream.from_epoch)
            || !up(&self.nodes[to as usize - 1], stream.to_epoch)
        {
            return self.end_stream(id, "broken: an end went down");
        }
        if self.phase == Phase::Faults {
            if self.cut[from as usize * self.stride + to as usize] {
                return self.end_stream(id, "broken: partition");
            }
            if self.rng.chance(self.params.drop_prob) {
                return self.end_stream(id, "broken: connection lost");
            }
        }
        let now = self.now;
        let first = stream.sink.is_none();
        if first {
            let run = self.node(to).run.as_mut().expect("checked above");
            let installs = run.host.counters().snapshots_installed;
            if run
                .staged
                .is_some_and(|(at, n)| installs > n || now >= at + STAGED_SNAPSHOT_WAIT_US)
            {
                run.staged = None;
            }
            if run.receiving.is_some() || run.staged.is_some() {
                return self.end_stream(id, "refused: one is in progress");
            }
            let sink = run
                .host
                .state_machine()
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .snapshot_sink();
            match sink {
                Ok(sink) => {
                    run.receiving = Some(id);
                    let stream = self.streams.get_mut(&id).expect("looked up above");
                    stream.sink = Some(sink);
                }
                Err(e) => {
                    self.trace_stream(from, to, format!("#{id}: no sink: {e}"));
                    return self.end_stream(id, "refused: no sink");
                }
            }
        }
        let stream = self.streams.get_mut(&id).expect("looked up above");
        let sink = stream.sink.as_mut().expect("opened above");
        if let Some(chunk) = stream.chunks.pop_front() {
            if let Err(e) = sink.push(&chunk) {
                self.trace_stream(from, to, format!("#{id}: chunk refused: {e}"));
                return self.end_stream(id, "broken: the sink refused a chunk");
            }
            let d = self.net_delay() + self.slow_link_us(from);
            self.schedule(d, Event::StreamFrame { stream: id, to });
            return;
        }
        // The end: what `stream::receive` does with the last frame.
        let Some(mut stream) = self.streams.remove(&id) else {
            return;
        };
        let (Some(sink), Some(mut m)) = (stream.sink.take(), stream.end.take()) else {
            return;
        };
        if let Some(run) = self.node(from).run.as_mut() {
            run.streams_out.remove(&to);
        }
        let run = self.node(to).run.as_mut().expect("checked above");
        run.receiving = None;
        let (covers, descriptor) = match sink.finish() {
            Ok(r) => r,
            Err(e) => {
                self.trace_stream(from, to, format!("#{id}: the sink failed: {e}"));
                return;
            }
        };
        if let Err(e) = raft_host::stream::received(&mut m, &covers, descriptor) {
            return self.violation("snapshot", format!("stream #{id} n{from}->n{to}: {e}"));
        }
        run.staged = Some((now, run.host.counters().snapshots_installed));
        self.stats.snapshot_streams += 1;
        self.trace_stream(from, to, format!("#{id} received at {}", covers.last_index));
        self.stats.deliveries += 1;
        let run = self.node(to).run.as_mut().expect("checked above");
        if let Err(e) = run.host.handle_snapshot_received(m) {
            return self.host_failed(to, format!("storage error: {e}"));
        }
        self.drive(to);
    }

    /// Stream `id` ends before its last frame: the sender may stream to
    /// that peer again, the receiver may take another stream, and the
    /// partial state is discarded (the sink dropped).
    pub(super) fn end_stream(&mut self, id: u64, why: &str) {
        let Some(stream) = self.streams.remove(&id) else {
            return;
        };
        let (from, to) = (stream.from, stream.to);
        let node = &mut self.nodes[from as usize - 1];
        if node.epoch == stream.from_epoch {
            if let Some(run) = node.run.as_mut() {
                run.streams_out.remove(&to);
            }
        }
        let node = &mut self.nodes[to as usize - 1];
        if node.epoch == stream.to_epoch {
            if let Some(run) = node.run.as_mut() {
                if run.receiving == Some(id) {
                    run.receiving = None;
                }
            }
        }
        self.stats.streams_broken += 1;
        if self.trace.recording() {
            self.trace_stream(from, to, format!("#{id} {why}"));
        }
        // Dropping the sink removes its partial file. After a crash of the
        // receiver that runs on the crashed disk, before the restart: what
        // the reopened engine would remove anyway.
        drop(stream);
    }

    /// Ends every stream node `id` sends or receives (it went down).
    pub(super) fn end_streams_of(&mut self, id: NodeId) {
        let ids: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.from == id || s.to == id)
            .map(|(&k, _)| k)
            .collect();
        for k in ids {
            self.end_stream(k, "broken: an end went down");
        }
    }

    fn trace_stream(&mut self, from: NodeId, to: NodeId, what: String) {
        self.trace
            .push(self.now, TraceKind::SnapshotStream { from, to, what });
    }
}
