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
