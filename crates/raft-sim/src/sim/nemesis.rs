//! The nemesis: the faults of a seed (crashes, partitions, pauses, disk
//! errors, membership changes, leadership transfers) and the Figure 8
//! schedule.

use super::*;

impl Sim {
    pub(super) fn nemesis(&mut self) {
        if self.phase != Phase::Faults {
            return;
        }
        let next = self.rng.range(
            self.params.nemesis_interval_us / 2,
            self.params.nemesis_interval_us * 3 / 2 + 1,
        );
        self.schedule(next, Event::Nemesis);
        if self.figure8 != Figure8::Idle || self.now < self.nemesis_quiet_until {
            return; // The scripted schedule owns the network meanwhile.
        }
        let w = self.params.weights;
        let total: u32 = w.iter().sum();
        if total == 0 {
            return;
        }
        let mut roll = self.rng.range(0, u64::from(total)) as u32;
        let mut action = 0;
        for (i, &wi) in w.iter().enumerate() {
            if roll < wi {
                action = i;
                break;
            }
            roll -= wi;
        }
        match action {
            0 => self.nemesis_crash(),
            1 => self.nemesis_partition(),
            2 => self.nemesis_pause(),
            3 => self.nemesis_disk(),
            4 => self.nemesis_membership(),
            _ => self.nemesis_transfer(),
        }
    }

    pub(super) fn running_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.run.as_ref().is_some_and(|r| !r.paused))
            .map(|n| n.id)
            .collect()
    }

    pub(super) fn nemesis_crash(&mut self) {
        let up = self.running_ids();
        // Keep a majority of processes around most of the time, so that
        // histories have progress worth checking.
        if up.len() * 2 <= self.total_nodes() && self.rng.chance(0.8) {
            return;
        }
        let target = match self.current_leader() {
            Some(l) if self.rng.chance(self.params.crash_leader_bias) => l,
            _ => match self.rng.pick(&up) {
                Some(&id) => id,
                None => return,
            },
        };
        self.crash(target, "nemesis");
        let after = self
            .rng
            .range(self.params.restart_min_us, self.params.restart_max_us);
        self.schedule(after, Event::Restart { node: target });
    }

    pub(super) fn nemesis_partition(&mut self) {
        let n = self.total_nodes() as u64;
        let mut ids: Vec<NodeId> = (1..=n).collect();
        // Shuffle (Fisher-Yates) so that groups are random.
        for i in (1..ids.len()).rev() {
            let j = self.rng.range(0, i as u64 + 1) as usize;
            ids.swap(i, j);
        }
        if let Some(l) = self.current_leader() {
            if self.rng.chance(self.params.partition_leader_bias) {
                // Centre the partition on the leader.
                let at = ids.iter().position(|&x| x == l).unwrap_or(0);
                ids.swap(0, at);
            }
        }
        self.cut.iter_mut().for_each(|c| *c = false);
        let kind = if self.rng.chance(self.params.link_cut_share) {
            6
        } else {
            self.rng.range(0, 7)
        };
        let mut cut = Vec::new();
        let name;
        match kind {
            0 => {
                name = "isolate one node";
                for &o in &ids[1..] {
                    cut.push((ids[0], o));
                    cut.push((o, ids[0]));
                }
            }
            1 => {
                name = "minority/majority split";
                let k = self.rng.range(1, n / 2 + 1) as usize;
                for &a in &ids[..k] {
                    for &b in &ids[k..] {
                        cut.push((a, b));
                        cut.push((b, a));
                    }
                }
            }
            2 => {
                name = "asymmetric: one node deaf or mute";
                let mute = self.rng.chance(0.5);
                for &o in &ids[1..] {
                    cut.push(if mute { (ids[0], o) } else { (o, ids[0]) });
                }
            }
            3 => {
                name = "bridge: two halves joined by some nodes";
                // ids[0] (often the leader) sits in the first half, the
                // last node bridges; the halves cannot talk directly.
                let bridges = self.rng.range(1, (n as usize / 2).max(1) as u64 + 1) as usize;
                let rest = &ids[..ids.len() - bridges];
                let k = rest.len().div_ceil(2);
                for &a in &rest[..k] {
                    for &b in &rest[k..] {
                        cut.push((a, b));
                        cut.push((b, a));
                    }
                }
            }
            4 => {
                name = "one node cannot reach some peers";
                for &o in &ids[1..] {
                    if self.rng.chance(0.5) {
                        cut.push((ids[0], o));
                    }
                }
            }
            6 => {
                // A single broken link: the node cut off from the leader
                // still reaches everyone else, who still hear the leader
                // (their leases must hold off its elections).
                name = "cut the link between two nodes";
                // The other end is a voter of the first one's configuration
                // if it has one (the first one is often the leader).
                let voters: Vec<NodeId> = self.nodes[ids[0] as usize - 1]
                    .run
                    .as_ref()
                    .map(|r| r.host.raft().membership().voters.iter().copied().collect())
                    .unwrap_or_default();
                let others: Vec<NodeId> = voters.into_iter().filter(|&v| v != ids[0]).collect();
                let other = self.rng.pick(&others).copied().unwrap_or(ids[1]);
                cut.push((ids[0], other));
                cut.push((other, ids[0]));
            }
            _ => {
                name = "random directed links";
                for &a in &ids {
                    for &b in &ids {
                        if a != b && self.rng.chance(0.3) {
                            cut.push((a, b));
                        }
                    }
                }
            }
        }
        self.cut_links(name, cut);
        let heal = if kind == 6 {
            // A broken link lasts long enough for the cut-off node to time
            // out and campaign.
            self.rng
                .range(2 * ELECTION_TIMEOUT_US, 5 * ELECTION_TIMEOUT_US)
        } else {
            self.rng
                .range(self.params.heal_min_us, self.params.heal_max_us)
        };
        let generation = self.partition_gen;
        self.schedule(heal, Event::Heal { generation });
    }

    /// Cuts the directed links `cut` (on top of those already cut), starts a
    /// new partition generation and records it in the trace.
    fn cut_links(&mut self, name: &str, mut cut: Vec<(NodeId, NodeId)>) {
        for &(a, b) in &cut {
            self.cut[a as usize * self.stride + b as usize] = true;
        }
        self.stats.partitions += 1;
        self.partition_gen += 1;
        cut.sort_unstable();
        self.trace.push(
            self.now,
            TraceKind::Partition {
                kind: name.into(),
                cut,
            },
        );
    }

    /// Cuts every link to and from `id` (replacing any partition in force)
    /// and schedules the heal.
    pub(super) fn isolate(&mut self, id: NodeId, why: &'static str, heal: bool) {
        self.cut.iter_mut().for_each(|c| *c = false);
        let mut cut = Vec::new();
        for o in 1..=self.total_nodes() as NodeId {
            if o != id {
                cut.push((id, o));
                cut.push((o, id));
            }
        }
        self.cut_links(why, cut);
        if heal {
            let after = self
                .rng
                .range(self.params.heal_min_us, self.params.heal_max_us);
            let generation = self.partition_gen;
            self.schedule(after, Event::Heal { generation });
        }
    }

    /// A leader of `term` was just elected while another node still leads
    /// an older term: sometimes make that old leader deaf (it can still
    /// send, and clients still reach it), so that it learns of the new term
    /// only once the partition heals. It may serve lease reads only while
    /// its lease lasts, and a correct lease has expired by now.
    pub(super) fn maybe_deafen_old_leader(&mut self, id: NodeId, term: Term) {
        if self.phase != Phase::Faults || self.params.deafen_old_leader_prob <= 0.0 {
            return;
        }
        let old = self.nodes.iter().find(|n| {
            n.id != id
                && n.run.as_ref().is_some_and(|r| {
                    r.host.raft().role() == Role::Leader && r.host.raft().term() < term
                })
        });
        let Some(old) = old.map(|n| n.id) else {
            return;
        };
        if !self.rng.chance(self.params.deafen_old_leader_prob) {
            return;
        }
        self.cut.iter_mut().for_each(|c| *c = false);
        let mut cut = Vec::new();
        for o in 1..=self.total_nodes() as NodeId {
            if o != old {
                self.cut[o as usize * self.stride + old as usize] = true;
                cut.push((o, old));
            }
        }
        self.stats.partitions += 1;
        self.partition_gen += 1;
        self.trace.push(
            self.now,
            TraceKind::Partition {
                kind: "the old leader goes deaf right after a new leader is elected".into(),
                cut,
            },
        );
        let after = self
            .rng
            .range(self.params.heal_min_us, self.params.heal_max_us);
        let generation = self.partition_gen;
        self.schedule(after, Event::Heal { generation });
    }

    // ------------------------------------------------------------------
    // The Figure 8 schedule
    // ------------------------------------------------------------------

    /// Step 1: a leader just appended an entry. Sometimes cut it off before
    /// the entry leaves, so the entry is stranded on it alone.
    pub(super) fn figure8_appended(&mut self, id: NodeId, term: Term) {
        if self.phase != Phase::Faults
            || self.figure8 != Figure8::Idle
            || !self.rng.chance(self.params.figure8_prob)
        {
            return;
        }
        self.isolate(
            id,
            "figure 8 (1/5): isolate the leader right after it appended",
            false,
        );
        self.figure8 = Figure8::OldEntryStranded { a: id, term };
        self.figure8_gen += 1;
        let generation = self.figure8_gen;
        self.schedule(FIGURE8_STEP_TIMEOUT_US, Event::Figure8Abort { generation });
    }

    /// Steps 2 and 3: a leader was elected.
    pub(super) fn figure8_elected(&mut self, id: NodeId, term: Term) {
        if self.phase != Phase::Faults {
            return;
        }
        match self.figure8 {
            Figure8::OldEntryStranded { a, term: t } if term > t && id != a => {
                self.figure8_second_leader(a, id, term);
            }
            Figure8::ConflictStranded { b, term: t, others } if term > t && id != b => {
                self.figure8_third_leader(id, term, b, others);
            }
            _ => {}
        }
    }

    /// Step 2: a leader `b` of a later term that lacks the stranded entry
    /// (it was elected without `a`). Cut it off at once, with just enough
    /// other voters (`others`) that the rest is a bare majority with `a` in
    /// it: `b`'s no-op (at the stranded entry's index) stays on a minority,
    /// and only `a`, whose log is the most up to date there, can win next.
    pub(super) fn figure8_second_leader(&mut self, a: NodeId, b: NodeId, term: Term) {
        let Some(run) = self.node(b).run.as_ref() else {
            return;
        };
        let m = run.host.raft().membership();
        let mut pool: Vec<NodeId> = m
            .voters
            .iter()
            .copied()
            .filter(|&v| v != a && v != b)
            .collect();
        let n = m.voters.len();
        let majority = n / 2 + 1;
        let mut others = 0u32;
        for _ in 0..n.saturating_sub(majority + 1).min(pool.len()) {
            let k = self.rng.range(0, pool.len() as u64) as usize;
            others |= 1 << pool.swap_remove(k);
        }
        let group = others | 1 << b;
        self.cut.iter_mut().for_each(|x| *x = false);
        let mut cut = Vec::new();
        let total = self.total_nodes() as NodeId;
        for x in 1..=total {
            for y in 1..=total {
                if (group >> x & 1) != (group >> y & 1) {
                    self.cut[x as usize * self.stride + y as usize] = true;
                    cut.push((x, y));
                }
            }
        }
        self.partition_gen += 1;
        self.stats.partitions += 1;
        self.trace.push(
            self.now,
            TraceKind::Partition {
                kind: "figure 8 (2/5): cut the next leader off right after its election, \
                       with a few voters, leaving a bare majority around the first"
                    .into(),
                cut,
            },
        );
        self.figure8 = Figure8::ConflictStranded { b, term, others };
    }

    /// Step 3: a third leader `c` (normally the first leader again): it
    /// re-replicates the stranded entry. It cannot reach the second leader
    /// and its group (whose entry thus survives), but they can talk to it:
    /// their pre-votes, refused with this term, teach them the term, so
    /// they can run the moment this leader is gone. And this leader's disk
    /// stalls, so its followers acknowledge its entries before its own
    /// no-op is durable.
    pub(super) fn figure8_third_leader(&mut self, c: NodeId, term: Term, b: NodeId, others: u32) {
        let mut cut = vec![(c, b)];
        for x in 1..=self.total_nodes() as NodeId {
            if others >> x & 1 == 1 && x != c {
                cut.push((c, x));
            }
        }
        self.cut.iter_mut().for_each(|x| *x = false);
        for &(x, y) in &cut {
            self.cut[x as usize * self.stride + y as usize] = true;
        }
        self.partition_gen += 1;
        self.trace.push(
            self.now,
            TraceKind::Partition {
                kind: "figure 8 (3/5): the third leader cannot reach the second and a few others"
                    .into(),
                cut,
            },
        );
        // The stall ends with the crash of step 4 (at the latest after 4
        // election timeouts, by then the second leader has run).
        self.node(c).disk_stall_until = self.now + 4 * ELECTION_TIMEOUT_US;
        self.figure8 = Figure8::Committer {
            c,
            term,
            b,
            committed: false,
        };
    }

    /// Step 4: the third leader committed for the first time (sound only if
    /// that commit covers an entry of its own term).
    pub(super) fn figure8_first_commit(&mut self, id: NodeId, term: Term) {
        let Figure8::Committer { c, term: t, b, .. } = self.figure8 else {
            return;
        };
        if c != id || t != term || self.phase != Phase::Faults {
            return;
        }
        self.figure8 = Figure8::Committer {
            c,
            term,
            b,
            committed: true,
        };
        self.figure8_maybe_crash();
    }

    /// Step 4 continued: once the third leader has committed and the second
    /// leader knows its term (or the third leader's disk stall is about to
    /// end), crash the third leader, so that its unsynced no-op is lost,
    /// bring it back soon (its vote counts), and heal.
    pub(super) fn figure8_maybe_crash(&mut self) {
        let Figure8::Committer {
            c,
            term,
            b,
            committed: true,
        } = self.figure8
        else {
            return;
        };
        let b_term = self.nodes[b as usize - 1]
            .run
            .as_ref()
            .map_or(0, |r| r.host.raft().term());
        let stall_ends = self.nodes[c as usize - 1].disk_stall_until <= self.now + TICK_US;
        if b_term < term && !stall_ends {
            return;
        }
        self.crash(c, "figure 8 (4/5): crash the leader after its first commit");
        let back = self.rng.range(TICK_US / 2, 5 * TICK_US);
        self.schedule(back, Event::Restart { node: c });
        // Heal once the crashed leader's last messages have arrived (or been
        // dropped by the cut): they must not reach the second leader.
        self.figure8 = Figure8::Idle;
        self.figure8_gen += 1;
        self.nemesis_quiet_until = self.now + 3 * ELECTION_TIMEOUT_US;
        let generation = self.partition_gen;
        let after = self.params.delay_max_us + 1;
        self.schedule(after, Event::Heal { generation });
    }

    /// Abandons the schedule: heals the network.
    pub(super) fn figure8_end(&mut self, why: &'static str) {
        self.figure8 = Figure8::Idle;
        self.figure8_gen += 1;
        self.partition_gen += 1;
        if self.cut.iter().any(|&c| c) {
            self.cut.iter_mut().for_each(|c| *c = false);
            self.trace
                .push(self.now, TraceKind::Phase { name: why.into() });
        }
    }

    /// A process stops while time goes on: a long GC pause, SIGSTOP, a
    /// VM descheduled. Its clock keeps running. When it resumes, either its
    /// interval timer fires the missed ticks in a burst, or it drops them
    /// (as raft-runtime's does): then its tick count says little time
    /// passed and only the clock tells the truth. Or, without a pause, its
    /// monotonic clock jumps forward (a suspended VM's, say).
    pub(super) fn nemesis_pause(&mut self) {
        let up = self.running_ids();
        let Some(&picked) = self.rng.pick(&up) else {
            return;
        };
        let d = self.rng.range(2 * TICK_US, 4 * ELECTION_TIMEOUT_US);
        // The kind of pause and the leader bias come from a generator of
        // their own, so the rest of a seed's schedule is drawn as it was
        // before these kinds existed.
        let mut how = Rng::new(
            self.cfg.seed
                ^ (self.stats.pauses + self.stats.clock_jumps + 1)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        // The leader is the interesting one to stop: its lease and its
        // CheckQuorum must see the time it lost.
        let id = match self.current_leader() {
            Some(l) if how.chance(0.5) => l,
            _ => picked,
        };
        let kind = how.range(0, 4);
        if kind == 3 {
            self.node(id).clock_jump_us += d;
            self.stats.clock_jumps += 1;
            self.trace
                .push(self.now, TraceKind::ClockJump { node: id, by_us: d });
            return;
        }
        self.stats.pauses += 1;
        let drop_missed_ticks = kind != 0;
        if drop_missed_ticks {
            self.stats.pauses_dropping_ticks += 1;
        }
        if let Some(run) = self.node(id).run.as_mut() {
            run.paused = true;
            run.drop_missed_ticks = drop_missed_ticks;
        }
        self.trace.push(
            self.now,
            TraceKind::Pause {
                node: id,
                until_us: self.now + d,
                drops_ticks: drop_missed_ticks,
            },
        );
        self.schedule(d, Event::Resume { node: id });
    }

    pub(super) fn nemesis_disk(&mut self) {
        let up = self.running_ids();
        let Some(&id) = self.rng.pick(&up) else {
            return;
        };
        let fault = match self.cfg.storage {
            StorageKind::Mem => {
                self.node(id).disk_fail_next = true;
                "the next fsync fails (EIO)"
            }
            StorageKind::Disk => {
                let kind = if self.rng.chance(0.5) {
                    FaultKind::NoSpace
                } else {
                    FaultKind::Io
                };
                let sync = self.rng.chance(0.5);
                let node = self.node(id);
                node.disk_fault_armed = true;
                let Some(disk) = &node.disk else { return };
                if sync {
                    disk.fail_next_syncs(1, kind);
                } else {
                    disk.fail_next_writes(1, kind);
                }
                match (sync, kind) {
                    (true, FaultKind::NoSpace) => "the next sync fails (ENOSPC)",
                    (true, FaultKind::Io) => "the next sync fails (EIO)",
                    (false, FaultKind::NoSpace) => "the next write fails (ENOSPC)",
                    (false, FaultKind::Io) => "the next write fails (EIO)",
                }
            }
        };
        self.stats.disk_faults += 1;
        self.trace.push(
            self.now,
            TraceKind::DiskFault {
                node: id,
                fault: fault.into(),
            },
        );
    }

    pub(super) fn nemesis_membership(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let total = self.total_nodes() as u64;
        let Some(run) = self.node(leader).run.as_ref() else {
            return;
        };
        let m = run.host.raft().membership().clone();
        let outsiders: Vec<NodeId> = (1..=total).filter(|id| !m.contains(*id)).collect();
        let learners: Vec<NodeId> = m.learners.iter().copied().collect();
        let voters: Vec<NodeId> = m.voters.iter().copied().collect();
        let mut options = Vec::new();
        if let Some(&x) = self.rng.pick(&outsiders) {
            options.push(MembershipChange::AddLearner(x));
            if self.rng.chance(0.2) {
                options.push(MembershipChange::AddVoter(x));
            }
        }
        if let Some(&l) = self.rng.pick(&learners) {
            options.push(MembershipChange::AddVoter(l));
            options.push(MembershipChange::AddVoter(l));
            options.push(MembershipChange::Remove(l));
        }
        if voters.len() > 2 {
            if let Some(&v) = self.rng.pick(&voters) {
                options.push(MembershipChange::Remove(v));
            }
        }
        let mut changes: Vec<MembershipChange> = match self.rng.pick(&options) {
            Some(&c) => vec![c],
            None => return,
        };
        if self.rng.chance(self.params.swap_prob) && !learners.is_empty() && voters.len() >= 3 {
            // Replace several voters at once: the old and new majorities can
            // be disjoint, so only joint consensus keeps this safe.
            changes.clear();
            let k = self
                .rng
                .range(1, learners.len().min(voters.len() - 1) as u64 + 1)
                as usize;
            for &l in learners.iter().take(k) {
                changes.push(MembershipChange::AddVoter(l));
            }
            for &v in voters.iter().rev().take(k) {
                changes.push(MembershipChange::Remove(v));
            }
        }
        let change = changes.clone();
        let run = self.node(leader).run.as_mut().expect("leader is running");
        let result = run
            .host
            .handle_change_membership(&changes, ProposalCaller::Nemesis)
            .map_err(|(_, e)| e);
        let new_voters: Vec<NodeId> = run
            .host
            .raft()
            .membership()
            .voters
            .iter()
            .copied()
            .collect();
        if result.is_ok() {
            self.stats.membership_changes += 1;
            if self.rng.chance(self.params.split_after_membership_prob) {
                self.split_reconfiguration(leader, &voters, &new_voters);
            }
            if self.rng.chance(self.params.crash_after_membership_prob) {
                let at = self.rng.range(200, 5 * TICK_US);
                self.schedule(
                    at,
                    Event::Crash {
                        node: leader,
                        reason: "leader crash during reconfiguration",
                    },
                );
                let back = at
                    + self
                        .rng
                        .range(self.params.restart_min_us, self.params.restart_max_us);
                self.schedule(back, Event::Restart { node: leader });
            }
        }
        self.trace.push(
            self.now,
            TraceKind::Membership {
                leader,
                change: format!("{change:?}"),
                result: match result {
                    Ok(p) => format!("proposed at {}", p.index),
                    Err(e) => format!("refused: {e}"),
                },
            },
        );
        self.drive(leader);
    }

    /// Right after `leader` proposed a change from `old` voters to `new`
    /// ones, partitions the cluster so that the leader's side holds a
    /// majority of the new configuration but not of the old one, and the
    /// other side a majority of the old one (possible when several voters
    /// are replaced). Only joint consensus keeps the two sides from both
    /// making progress.
    pub(super) fn split_reconfiguration(&mut self, leader: NodeId, old: &[NodeId], new: &[NodeId]) {
        let majority = |set: &[NodeId]| set.len() / 2 + 1;
        let count =
            |side: &[NodeId], set: &[NodeId]| side.iter().filter(|x| set.contains(x)).count();
        let mut side = vec![leader];
        // Newcomers first, then voters of both configurations, until the
        // side has a majority of the new configuration.
        let mut candidates: Vec<NodeId> =
            new.iter().copied().filter(|x| !old.contains(x)).collect();
        candidates.extend(
            new.iter()
                .copied()
                .filter(|x| old.contains(x) && *x != leader),
        );
        for x in candidates {
            if count(&side, new) >= majority(new) {
                break;
            }
            if x != leader {
                side.push(x);
            }
        }
        let total = self.total_nodes() as NodeId;
        let rest: Vec<NodeId> = (1..=total).filter(|x| !side.contains(x)).collect();
        if count(&side, new) < majority(new)
            || count(&side, old) >= majority(old)
            || count(&rest, old) < majority(old)
        {
            return; // Not a change that can be split this way.
        }
        self.cut.iter_mut().for_each(|c| *c = false);
        let mut cut = Vec::new();
        for &a in &side {
            for &b in &rest {
                cut.push((a, b));
                cut.push((b, a));
            }
        }
        for &(a, b) in &cut {
            self.cut[a as usize * self.stride + b as usize] = true;
        }
        cut.sort_unstable();
        self.stats.partitions += 1;
        self.partition_gen += 1;
        self.trace.push(
            self.now,
            TraceKind::Partition {
                kind: "reconfiguration split: the leader with a majority of the new voters, \
                       the rest with a majority of the old"
                    .into(),
                cut,
            },
        );
        let after = self
            .rng
            .range(2 * ELECTION_TIMEOUT_US, 5 * ELECTION_TIMEOUT_US);
        let generation = self.partition_gen;
        self.schedule(after, Event::Heal { generation });
    }

    pub(super) fn nemesis_transfer(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let Some(run) = self.node(leader).run.as_ref() else {
            return;
        };
        let voters: Vec<NodeId> = run
            .host
            .raft()
            .membership()
            .voters
            .iter()
            .copied()
            .filter(|&v| v != leader)
            .collect();
        let Some(&to) = self.rng.pick(&voters) else {
            return;
        };
        let run = self.node(leader).run.as_mut().expect("leader is running");
        let result = run.host.handle_transfer(to);
        self.stats.transfers += 1;
        self.trace.push(
            self.now,
            TraceKind::Transfer {
                leader,
                to,
                result: match result {
                    Ok(()) => "started".into(),
                    Err(e) => format!("refused: {e}"),
                },
            },
        );
        self.drive(leader);
    }
}
