//! The simulated clients: what each one asks next, where it sends it,
//! retries and timeouts, and how a node answers a request (the server's
//! role in the real system).

use super::*;

impl Sim {
    pub(super) fn client_next(&mut self, c: usize) {
        if self.phase != Phase::Faults || self.clients[c].current.is_some() {
            return;
        }
        let keys = self.params.keys;
        let mut key = self.rng.range(0, keys);
        let mut roll = self.rng.range(0, 100);
        if roll < self.params.write_share_pct {
            roll = self.rng.range(0, 60);
        } else {
            roll = self.rng.range(60, 100);
        }
        if let Some(k) = self.clients[c].last_write.take() {
            // Read your (possibly lost) write: stale reads show up here.
            if self.rng.chance(0.5) {
                key = k;
                roll = 60 + self.rng.range(0, 40);
            }
        }
        let cas_blind = self.rng.chance(0.2);
        let cas_delete = self.rng.chance(0.15);
        let client = &mut self.clients[c];
        client.counter += 1;
        let unique = client.id << 32 | client.counter;
        let (input, kind) = if roll < 25 {
            client.seq += 1;
            let cmd = Command::put(key_bytes(key), value_bytes(unique))
                .with_session(client.id, client.seq);
            (
                KvInput::Put { key, value: unique },
                ReqKind::Propose(ServerCommand::Kv(cmd).encode()),
            )
        } else if roll < 35 {
            client.seq += 1;
            let cmd = Command::delete(key_bytes(key)).with_session(client.id, client.seq);
            (
                KvInput::Delete { key },
                ReqKind::Propose(ServerCommand::Kv(cmd).encode()),
            )
        } else if roll < 60 {
            client.seq += 1;
            let expected = match client.known.get(&key) {
                Some(v) if !cas_blind => *v,
                _ => None,
            };
            let new = if cas_delete { None } else { Some(unique) };
            let condition = match expected {
                None => Condition::Absent,
                Some(v) => Condition::ValueEquals(value_bytes(v)),
            };
            let action = match new {
                None => CasAction::Delete,
                Some(v) => CasAction::Put(value_bytes(v)),
            };
            let cmd =
                Command::cas(key_bytes(key), condition, action).with_session(client.id, client.seq);
            (
                KvInput::Cas { key, expected, new },
                ReqKind::Propose(ServerCommand::Kv(cmd).encode()),
            )
        } else {
            let lease = self.params.lease_read_share;
            let r = self.rng.float(0.0, 1.0);
            let kind = if r < lease {
                ReqKind::LeaseRead(key)
            } else if r < lease + (1.0 - lease) / 2.0 {
                ReqKind::ReadIndex(key)
            } else {
                ReqKind::Propose(ServerCommand::Kv(Command::get(key_bytes(key))).encode())
            };
            (KvInput::Get { key }, kind)
        };
        let client_id = client.id;
        let hist = match self.history.invoke(client_id, input.clone(), self.now) {
            Ok(h) => h,
            Err(e) => return self.violation("history", format!("cannot record invocation: {e}")),
        };
        let op = self.next_op;
        self.next_op += 1;
        self.stats.ops_invoked += 1;
        if self.trace.recording() {
            let what = match &kind {
                ReqKind::Propose(_) => format!("{input:?} via log"),
                ReqKind::ReadIndex(_) => format!("{input:?} via ReadIndex"),
                ReqKind::LeaseRead(_) => format!("{input:?} via lease read"),
            };
            let node = self.clients[c].guess;
            self.trace.push(
                self.now,
                TraceKind::Invoke {
                    client: client_id,
                    op,
                    what,
                    node,
                },
            );
        }
        self.clients[c].current = Some(ClientOp {
            op,
            hist,
            input,
            kind,
            attempt: 0,
        });
        self.client_send(c);
    }

    /// Sends the current attempt of client `c`'s operation to its guess.
    pub(super) fn client_send(&mut self, c: usize) {
        let client = &self.clients[c];
        let Some(op) = client.current.as_ref() else {
            return;
        };
        let req = ClientReq {
            client: c,
            op: op.op,
            attempt: op.attempt,
            kind: op.kind.clone(),
        };
        let node = client.guess;
        let (opid, attempt) = (op.op, op.attempt);
        let timeout = self.params.client_timeout_us;
        self.schedule(
            timeout,
            Event::ClientTimeout {
                client: c,
                op: opid,
                attempt,
            },
        );
        self.client_hop(Event::Request {
            node,
            req: Box::new(req),
        });
    }

    /// Sends a request or a reply between a client and a node: lost with
    /// the seed's drop probability during the fault phase, else delivered
    /// after a network delay.
    fn client_hop(&mut self, event: Event) {
        if self.phase == Phase::Faults && self.rng.chance(self.params.drop_prob) {
            self.stats.dropped += 1;
            return;
        }
        let d = self.net_delay();
        self.schedule(d, event);
    }

    /// Where client `c` sends its next attempt after a refusal, a drop or
    /// a timeout at its current node: never the same node again (it may be
    /// removed, partitioned or stuck in an old term, answering the same
    /// refusal forever), but the hinted leader if there is a fresh hint. A
    /// hint is not followed back to the node tried just before (two stale
    /// nodes pointing at each other), nor more than [`HINTS_FOLLOWED_MAX`]
    /// times in a row; then a random other node is tried, as a real client
    /// round-robins over its node list.
    pub(super) fn rotate(&mut self, c: usize, hint: Option<NodeId>) -> NodeId {
        let total = self.total_nodes() as u64;
        let client = &self.clients[c];
        let (cur, prev, hops) = (client.guess, client.prev_guess, client.hints_followed);
        let next = match hint {
            Some(h) if h != cur && h != prev && hops < HINTS_FOLLOWED_MAX => {
                self.clients[c].hints_followed += 1;
                h
            }
            _ => {
                self.clients[c].hints_followed = 0;
                // Uniform over the untried nodes other than the current one;
                // a new sweep once every node has been tried.
                debug_assert!(total <= 64, "the untried set is a u64");
                let all = if total >= 64 {
                    u64::MAX
                } else {
                    (1 << total) - 1
                };
                let cur_bit = 1u64 << (cur - 1);
                let mut untried = self.clients[c].untried & all & !cur_bit;
                if untried == 0 {
                    untried = all & !cur_bit;
                }
                if untried == 0 {
                    cur // a single node: nowhere else to go
                } else {
                    let k = self.rng.range(0, u64::from(untried.count_ones()));
                    let mut bits = untried;
                    for _ in 0..k {
                        bits &= bits - 1; // drop the lowest set bit
                    }
                    let g = u64::from(bits.trailing_zeros()) + 1;
                    self.clients[c].untried = untried & !(1 << (g - 1));
                    g
                }
            }
        };
        let client = &mut self.clients[c];
        client.prev_guess = cur;
        client.guess = next;
        next
    }

    pub(super) fn on_client_timeout(&mut self, c: usize, op: u64, attempt: u32) {
        if !self.clients[c]
            .current
            .as_ref()
            .is_some_and(|cur| cur.op == op && cur.attempt == attempt)
        {
            return;
        }
        // Try another node than the one that did not answer.
        let guess = self.rotate(c, None);
        let client = &mut self.clients[c];
        let Some(cur) = client.current.as_mut() else {
            return;
        };
        if cur.op != op || cur.attempt != attempt {
            return;
        }
        cur.attempt += 1;
        if self.trace.recording() {
            let id = client.id;
            self.trace.push(
                self.now,
                TraceKind::Retry {
                    client: id,
                    op,
                    node: guess,
                    why: "timeout".into(),
                },
            );
        }
        self.client_send(c);
    }

    pub(super) fn reply(&mut self, _from: NodeId, w: Waiter, result: ReplyResult) {
        let reply = ClientReply {
            op: w.op,
            attempt: w.attempt,
            result,
        };
        self.client_hop(Event::Reply {
            client: w.client,
            reply: Box::new(reply),
        });
    }

    pub(super) fn on_request(&mut self, id: NodeId, req: ClientReq) {
        let waiter = Waiter {
            client: req.client,
            op: req.op,
            attempt: req.attempt,
        };
        let Some(run) = self.node(id).run.as_mut() else {
            return; // Down: the client times out.
        };
        let result = match req.kind {
            ReqKind::Propose(cmd) => match run
                .host
                .handle_propose(cmd, ProposalCaller::Client(waiter))
            {
                Ok(p) => {
                    self.figure8_appended(id, p.term);
                    if self.phase == Phase::Faults
                        && self.rng.chance(self.params.slow_leader_after_propose_prob)
                    {
                        // Everything this leader sends for a while, its new
                        // entry first, arrives late: its followers elect
                        // another leader meanwhile and then receive the old
                        // leader's AppendEntries from a stale term.
                        let window = self.rng.range(ELECTION_TIMEOUT_US, 3 * ELECTION_TIMEOUT_US);
                        let extra = self
                            .rng
                            .range(2 * ELECTION_TIMEOUT_US, 4 * ELECTION_TIMEOUT_US);
                        let now = self.now;
                        let node = self.node(id);
                        node.slow_out_until = now + window;
                        node.slow_out_extra_us = extra;
                        self.trace.push(
                            self.now,
                            TraceKind::SlowLink {
                                node: id,
                                until_us: self.now + window,
                                extra_us: extra,
                            },
                        );
                    }
                    None
                }
                Err((_, ProposeError::NotLeader { leader_hint })) => {
                    Some((waiter, ReplyResult::NotLeader(leader_hint)))
                }
                Err((_, ProposeError::Fatal(e))) => {
                    return self
                        .violation("contract", format!("n{id}: propose hit a fatal error: {e}"));
                }
                Err(_) => Some((waiter, ReplyResult::Retry("proposal refused"))),
            },
            ReqKind::ReadIndex(key) | ReqKind::LeaseRead(key) => {
                let floor = self.checker.highest_committed();
                let clock = self.clock_nanos(id);
                let Some(run) = self.node(id).run.as_mut() else {
                    return;
                };
                let consistency = match req.kind {
                    ReqKind::LeaseRead(_) => ReadConsistency::Lease,
                    _ => ReadConsistency::Linearizable,
                };
                let caller = ReadCaller { waiter, key, floor };
                match run.host.handle_read(consistency, caller, clock) {
                    Ok(path) => {
                        if let ReadPath::Lease { term } = path {
                            if let Err(msg) = self.checker.lease_read(term, id) {
                                return self.violation("lease-safety", msg);
                            }
                        }
                        None
                    }
                    Err((_, ReadError::NotLeader { leader_hint })) => {
                        Some((waiter, ReplyResult::NotLeader(leader_hint)))
                    }
                    Err((_, ReadError::NoLeader)) => Some((waiter, ReplyResult::NotLeader(None))),
                    Err(_) => Some((waiter, ReplyResult::Retry("read refused"))),
                }
            }
        };
        if let Some((w, r)) = result {
            self.reply(id, w, r);
        }
        self.drive(id);
    }

    pub(super) fn on_reply(&mut self, c: usize, reply: ClientReply) {
        let client = &mut self.clients[c];
        let Some(cur) = client.current.as_mut() else {
            return;
        };
        if cur.op != reply.op {
            return;
        }
        let output = match reply.result {
            ReplyResult::Applied {
                response,
                index,
                term,
            } => match output_of(&cur.input, &response) {
                Ok(out) => {
                    if !matches!(cur.input, KvInput::Get { .. }) {
                        if let Err(msg) = self.checker.acked(index, term) {
                            return self.violation("lost-write", msg);
                        }
                    }
                    out
                }
                Err(msg) => return self.violation("client", format!("c{}: {msg}", c + 1)),
            },
            ReplyResult::Read(value) => match value.map(|v| parse_value(&v)).transpose() {
                Ok(v) => KvOutput::Get(v),
                Err(msg) => return self.violation("client", msg),
            },
            other => {
                if reply.attempt != cur.attempt {
                    return; // An answer to an attempt already given up on.
                }
                // Every refusal moves the client on: to the hinted leader if
                // there is one, else to another node (see `rotate`).
                let (hint, backoff, why) = match other {
                    ReplyResult::NotLeader(Some(l)) => (Some(l), TICK_US / 5, "not leader"),
                    ReplyResult::NotLeader(None) => (
                        None,
                        self.rng.range(TICK_US, 3 * TICK_US),
                        "no leader known",
                    ),
                    ReplyResult::Lost => (None, TICK_US / 5, "proposal lost"),
                    ReplyResult::Retry(why) => (None, self.rng.range(TICK_US, 3 * TICK_US), why),
                    _ => (
                        None,
                        self.rng.range(TICK_US, 3 * TICK_US),
                        "unexpected answer",
                    ),
                };
                let guess = self.rotate(c, hint);
                let client = &mut self.clients[c];
                let Some(cur) = client.current.as_mut() else {
                    return;
                };
                cur.attempt += 1;
                let (op, attempt, id) = (cur.op, cur.attempt, client.id);
                if self.trace.recording() {
                    self.trace.push(
                        self.now,
                        TraceKind::Retry {
                            client: id,
                            op,
                            node: guess,
                            why: why.into(),
                        },
                    );
                }
                self.schedule(
                    backoff,
                    Event::ClientSend {
                        client: c,
                        op,
                        attempt,
                    },
                );
                return;
            }
        };
        let Some(cur) = client.current.take() else {
            return;
        };
        // Remember what we saw, to aim later compare-and-swaps.
        let key = *cur.input.key();
        let seen = match (&cur.input, &output) {
            (KvInput::Put { value, .. }, _) => Some(Some(*value)),
            (KvInput::Delete { .. }, _) => Some(None),
            (KvInput::Cas { new, .. }, KvOutput::Cas { succeeded: true }) => Some(*new),
            (_, KvOutput::CasMismatch { current }) => Some(*current),
            (_, KvOutput::Get(v)) => Some(*v),
            _ => None,
        };
        if let Some(v) = seen {
            client.known.insert(key, v);
        }
        if !matches!(cur.input, KvInput::Get { .. }) {
            client.last_write = Some(key);
        }
        let id = client.id;
        if let Err(e) = self.history.complete(cur.hist, self.now, output.clone()) {
            return self.violation("history", format!("cannot record completion: {e}"));
        }
        self.stats.ops_completed += 1;
        if self.trace.recording() {
            self.trace.push(
                self.now,
                TraceKind::Complete {
                    client: id,
                    op: cur.op,
                    result: format!("{output:?}"),
                },
            );
        }
        let think = self.rng.range(0, self.params.think_max_us + 1);
        self.schedule(think, Event::ClientNext { client: c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Seed 112502 (7 nodes) ended in a liveness violation: the two nodes
    /// left in the configuration led on, but a client kept drawing removed
    /// nodes (which never learn a leader) for 20 election timeouts.
    #[test]
    fn a_client_without_hints_tries_every_node_within_one_sweep() {
        let mut sim = Sim::new(SimConfig::new(112502, 7));
        let total = sim.total_nodes() as u64;
        assert!(total >= 7);
        for sweep in 0..5 {
            let start = sim.clients[0].guess;
            let tried: BTreeSet<NodeId> = (1..total).map(|_| sim.rotate(0, None)).collect();
            let others: BTreeSet<NodeId> = (1..=total).filter(|&n| n != start).collect();
            assert_eq!(tried, others, "sweep {sweep} from node {start}");
        }
    }
}
