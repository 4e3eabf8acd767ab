//! Seeds on which the simulator found a bug, one test per seed. A seed
//! replays only with the simulator version that found it, so each test also
//! says what the seed showed; an `#[ignore]`d one waits for a fix.

use raft_sim::{run, SimConfig};

fn seed_passes(seed: u64, nodes: usize) {
    let out = run(&SimConfig::new(seed, nodes));
    if let Some(v) = out.violation {
        panic!(
            "seed {seed} ({nodes} nodes) violated {}: {}\nreplay: {}",
            v.check,
            v.message,
            out.config.replay_command()
        );
    }
}

/// Lease safety broken by an abandoned leadership transfer: n3 starts a
/// transfer to n2, the transfer times out after an election timeout and n3
/// serves lease reads again, but n2 has already received TimeoutNow and wins
/// an election whose votes bypass the followers' leases (transfer votes are
/// exempt). n3 then serves a lease read in term 1 after n2 was elected in
/// term 2. Found by `raft-sim run --seeds 0..40000 --nodes 3`; also seeds
/// 36346 and 36441. Fixed in raft-core: once a leader sends TimeoutNow it
/// serves no lease reads for the rest of its term.
#[test]
fn seed_18210_3_nodes_lease_read_after_abandoned_transfer() {
    seed_passes(18210, 3);
}

#[test]
fn seed_36346_3_nodes_lease_read_after_abandoned_transfer() {
    seed_passes(36346, 3);
}

#[test]
fn seed_36441_3_nodes_lease_read_after_abandoned_transfer() {
    seed_passes(36441, 3);
}

/// Durability-check false positive (a simulator bug, fixed in the checker):
/// a follower acknowledged entry 15@t7, then installed the leader's snapshot
/// at 15@t9; the install reached the disk but was not yet synced when the
/// node crashed. The recovered snapshot legitimately replaces the
/// acknowledged but uncommitted entry. Found by the 120,000-seed batch
/// (`raft-sim run --seeds 0..40000 --nodes 3`); also seeds 25901 and 29936
/// on 5 nodes.
#[test]
fn seed_32080_3_nodes_unsynced_snapshot_replaces_acknowledged_entry() {
    seed_passes(32080, 3);
}

#[test]
fn seed_25901_5_nodes_unsynced_snapshot_replaces_acknowledged_entry() {
    seed_passes(25901, 5);
}

#[test]
fn seed_29936_5_nodes_unsynced_snapshot_replaces_acknowledged_entry() {
    seed_passes(29936, 5);
}

/// Lease safety broken by a term learned from a refused pre-vote (raft-core
/// bug, reported to the lead; ignored until fixed). Profile `leases`, 3
/// nodes. n1 leads term 3 and is isolated; n3 becomes a candidate in term 4
/// (n2 granted its pre-vote). The partition changes to a single broken link
/// n1<->n3: n2, a pre-candidate in term 3, hears n1's heartbeat (241.075 ms),
/// follows it again and acknowledges it, which renews n1's lease. At
/// 241.294 ms n3's refusal of n2's own pre-vote arrives carrying term 4:
/// n2 adopts term 4 with no leader, so the lease guard no longer applies,
/// and it grants n3's vote request (241.491 ms). n3 leads term 4 at
/// 243.689 ms while n1 still serves lease reads on the lease n2 renewed.
/// The lease guard only covered vote requests; any other message with a
/// higher term cleared `leader` and with it the guard. Found by
/// `raft-sim run --seeds 40000..80000 --nodes 3`; fixed in raft-core by
/// keeping the guard's start (`leader_contact_tick`) across term changes.
#[test]
fn seed_40639_3_nodes_lease_read_after_term_from_refused_pre_vote() {
    seed_passes(40639, 3);
}

/// Liveness: after the faults, the configuration was down to {n3, n7} and n3
/// led, but client c3 drew only removed nodes (which never learn a leader)
/// for 20 election timeouts. The simulated client now tries every node once
/// per sweep when it has no leader hint (`a_client_without_hints_tries_every_
/// node_within_one_sweep` in `sim/clients.rs`). Found by
/// `raft-sim run --seeds 60000..400000 --nodes 7`.
#[test]
fn seed_112502_7_nodes_client_stuck_on_removed_nodes() {
    seed_passes(112502, 7);
}

/// State machine safety: learner n5 crashed while writing entries of term 4
/// together with the hard state that raised its term to 4; the torn write
/// kept the entries (committed 15@t4 among them) and lost the hard state. It
/// restarted at term 3 and took a delayed append from n2, deposed leader of
/// term 3, over 15@t4. raft-core now raises the term to the last entry's on
/// restart (and `validate()` checks term >= last log term). Found by
/// `raft-sim run --seeds 200000..500000 --nodes 3`.
#[test]
fn seed_252186_3_nodes_torn_write_kept_entries_of_a_lost_term() {
    seed_passes(252186, 3);
}

/// Linearizability (read-index): n3 sent a ReadIndex request, crashed, and
/// restarted; its host numbered read contexts from 1 again, so the leader's
/// delayed answer to the old request (read point 10) matched a new read
/// that arrived after entry 11 committed, and was served at 10. Read
/// contexts now start at a fresh random value per start
/// (`HostConfig::read_ctx_start`). Found by `raft-sim run --seeds
/// 100000..434000 --nodes 3` once the simulator ran the host layer.
#[test]
fn seed_128431_3_nodes_read_context_reused_after_restart() {
    seed_passes(128431, 3);
}

/// Not a protocol bug: the checker was too strict. n4, candidate of term 3,
/// was paused, woke up leading term 3 (its votes came before term 4 began)
/// and overwrote entry 10@t2, which n6 had committed in term 4, on n5: a
/// removed node still in term 3 that never learned of the commit. Leader
/// Completeness binds only leaders of later terms, and neither n4 nor n5
/// can apply the entry they hold there. The checker now flags an overwrite
/// only by a leader of the commit term or later. Found by `raft-sim run
/// --seeds 100000..434000 --nodes 5`.
#[test]
fn seed_222476_5_nodes_deposed_leader_overwrites_on_a_removed_node() {
    seed_passes(222476, 5);
}

/// Found when the simulated nodes started running the durable state
/// machine (issue 11): a follower received a streamed snapshot, the host
/// handed out the write that records it in the log store, and the node
/// crashed before that write's fsync completed; the crash image kept the
/// snapshot record, but the state machine had not switched to the
/// received state (it does on `handle_durable`), and the received file was
/// removed when the engine reopened, so `NodeHost::open` could not restore
/// ("no received snapshot to install at 25"). Fixed by keeping a finished
/// transfer as `<file>.received` across a restart (raftkv-mvcc's
/// `take_received`), which `ServerState::restore` installs from.
#[test]
fn seed_3_nodes_6047() {
    let out = run(&SimConfig::new(6047, 3));
    assert!(out.violation.is_none(), "{:?}", out.violation);
}
