//! Tests of the linearizability checker: hand-written good and bad histories,
//! randomized histories that are linearizable by construction (and mutated
//! into impossible ones), a differential test against a brute-force oracle,
//! and step-count bounds that show memoization at work.

use super::generate::SplitMix64;
use super::*;

type Input = KvInput<u64, u64>;
type Output = KvOutput<u64>;
type Hist = History<Input, Output>;
type KvResult = CheckResult<u64, Option<u64>>;

const K: u64 = 7;

fn done(h: &mut Hist, client: u64, input: Input, call: Time, ret: Time, output: Output) -> OpId {
    let id = h.invoke(client, input, call).unwrap();
    h.complete(id, ret, output).unwrap();
    id
}

fn put(h: &mut Hist, client: u64, value: u64, call: Time, ret: Time) -> OpId {
    done(
        h,
        client,
        KvInput::Put { key: K, value },
        call,
        ret,
        KvOutput::Put,
    )
}

fn get(h: &mut Hist, client: u64, read: Option<u64>, call: Time, ret: Time) -> OpId {
    done(
        h,
        client,
        KvInput::Get { key: K },
        call,
        ret,
        KvOutput::Get(read),
    )
}

fn del(h: &mut Hist, client: u64, existed: bool, call: Time, ret: Time) -> OpId {
    done(
        h,
        client,
        KvInput::Delete { key: K },
        call,
        ret,
        KvOutput::Delete { existed },
    )
}

#[allow(clippy::too_many_arguments)]
fn cas(
    h: &mut Hist,
    client: u64,
    expected: Option<u64>,
    new: Option<u64>,
    succeeded: bool,
    call: Time,
    ret: Time,
) -> OpId {
    done(
        h,
        client,
        KvInput::Cas {
            key: K,
            expected,
            new,
        },
        call,
        ret,
        KvOutput::Cas { succeeded },
    )
}

fn unknown(h: &mut Hist, client: u64, input: Input, call: Time) -> OpId {
    h.invoke(client, input, call).unwrap()
}

fn run(h: &Hist) -> (KvResult, CheckStats) {
    let (result, stats) = check_with_stats(&KvModel::new(), h, &CheckOptions::default());
    if let CheckResult::Illegal(v) = &result {
        assert_violation_consistent(h, v);
    }
    (result, stats)
}

fn assert_ok(h: &Hist) {
    let (result, _) = run(h);
    assert_eq!(result, CheckResult::Ok, "expected linearizable:\n{h:#?}");
}

fn assert_illegal(h: &Hist) -> Violation<u64, Option<u64>> {
    match run(h).0 {
        CheckResult::Illegal(v) => *v,
        other => panic!("expected a violation, got {other:?}\n{h:#?}"),
    }
}

/// A violation must be an honest explanation: the prefix is a legal
/// sequential run in real-time order ending in `state`; every pending op
/// (the blocked one included) had been called before the blocked op
/// returned, and none of them can take effect in `state`.
fn assert_violation_consistent(h: &Hist, v: &Violation<u64, Option<u64>>) {
    let model = KvModel::<u64, u64>::new();
    let mut state = model.init();
    for &id in &v.prefix {
        let op = h.get(id).unwrap();
        assert_eq!(model.partition(&op.input), v.partition);
        state = match &op.outcome {
            Outcome::Returned { output, .. } => model
                .step(&state, &op.input, output)
                .unwrap_or_else(|| panic!("prefix op {id} does not fit {state:?}")),
            Outcome::Unknown => model.step_unknown(&state, &op.input),
        };
    }
    assert_eq!(state, v.state, "prefix does not lead to the reported state");
    for (i, &a) in v.prefix.iter().enumerate() {
        for &b in &v.prefix[i + 1..] {
            // b placed after a, so b must not have returned before a's call.
            if let Outcome::Returned { time, .. } = h.get(b).unwrap().outcome {
                assert!(
                    time >= h.get(a).unwrap().call_time,
                    "prefix breaks real-time order"
                );
            }
        }
    }
    assert!(v.pending.contains(&v.blocked));
    let blocked_return = match h.get(v.blocked).unwrap().outcome {
        Outcome::Returned { time, .. } => time,
        Outcome::Unknown => panic!("an unknown-outcome op can never block"),
    };
    for &id in &v.pending {
        assert!(!v.prefix.contains(&id));
        let op = h.get(id).unwrap();
        assert!(op.call_time <= blocked_return);
        match &op.outcome {
            Outcome::Returned { output, .. } => {
                assert!(
                    model.step(&v.state, &op.input, output).is_none(),
                    "pending op {id} could go next"
                );
            }
            Outcome::Unknown => panic!("pending unknown op {id} could always go next"),
        }
    }
}

// ---------------------------------------------------------------- good

#[test]
fn empty_history_is_linearizable() {
    assert_ok(&Hist::new());
}

#[test]
fn sequential_history_is_linearizable() {
    let mut h = Hist::new();
    get(&mut h, 0, None, 0, 1);
    put(&mut h, 0, 1, 2, 3);
    get(&mut h, 1, Some(1), 4, 5);
    del(&mut h, 0, true, 6, 7);
    del(&mut h, 1, false, 8, 9);
    get(&mut h, 0, None, 10, 11);
    cas(&mut h, 1, None, Some(2), true, 12, 13);
    cas(&mut h, 0, Some(1), Some(3), false, 14, 15);
    done(
        &mut h,
        1,
        KvInput::Cas {
            key: K,
            expected: None,
            new: Some(9),
        },
        16,
        17,
        KvOutput::CasMismatch { current: Some(2) },
    );
    cas(&mut h, 0, Some(2), None, true, 18, 19);
    get(&mut h, 1, None, 20, 21);
    let (result, stats) = run(&h);
    assert_eq!(result, CheckResult::Ok);
    // Sequential: every step succeeds at once, nothing is backtracked.
    assert_eq!(stats.steps, h.len() as u64);
    assert_eq!(stats.backtracks, 0);
}

#[test]
fn concurrent_overlapping_history_is_linearizable() {
    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 10); // Long write...
    get(&mut h, 1, None, 1, 2); // ...not yet visible,
    get(&mut h, 2, Some(1), 3, 4); // ...then visible.
    put(&mut h, 0, 2, 11, 30); // Another long write...
    get(&mut h, 1, Some(1), 12, 13);
    get(&mut h, 2, Some(2), 14, 15); // ...visible from 14 on,
    get(&mut h, 1, Some(2), 16, 17);
    get(&mut h, 3, Some(2), 31, 32);
    assert_ok(&h);
}

#[test]
fn concurrent_writes_may_land_in_either_order() {
    for last in [1, 2] {
        let mut h = Hist::new();
        put(&mut h, 0, 1, 0, 10);
        put(&mut h, 1, 2, 0, 10);
        get(&mut h, 2, Some(last), 11, 12);
        get(&mut h, 3, Some(last), 13, 14);
        assert_ok(&h);
    }
}

#[test]
fn ops_that_touch_in_time_count_as_concurrent() {
    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 5);
    get(&mut h, 1, None, 5, 6); // Called the instant the put returned.
    assert_ok(&h);
    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 5);
    get(&mut h, 1, None, 6, 7); // Strictly after: must see the put.
    assert_illegal(&h);
}

#[test]
fn unknown_outcome_that_must_have_been_applied() {
    let mut h = Hist::new();
    unknown(&mut h, 0, KvInput::Put { key: K, value: 1 }, 0);
    get(&mut h, 1, Some(1), 5, 6);
    assert_ok(&h);

    // Applied long after the client gave up, after another client's read.
    let mut h = Hist::new();
    unknown(&mut h, 0, KvInput::Put { key: K, value: 1 }, 0);
    get(&mut h, 1, None, 5, 6);
    get(&mut h, 1, Some(1), 100, 101);
    assert_ok(&h);

    // A timed-out compare-and-swap that a later one depends on.
    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 1);
    unknown(
        &mut h,
        0,
        KvInput::Cas {
            key: K,
            expected: Some(1),
            new: Some(2),
        },
        2,
    );
    cas(&mut h, 1, Some(2), Some(3), true, 10, 11);
    get(&mut h, 1, Some(3), 12, 13);
    assert_ok(&h);
}

#[test]
fn unknown_outcome_that_must_not_have_been_applied() {
    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 1);
    unknown(&mut h, 0, KvInput::Put { key: K, value: 2 }, 2);
    get(&mut h, 1, Some(1), 10, 11);
    get(&mut h, 2, Some(1), 20, 21);
    assert_ok(&h);

    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 1);
    unknown(&mut h, 0, KvInput::Delete { key: K }, 2);
    put(&mut h, 0, 2, 3, 4);
    unknown(
        &mut h,
        0,
        KvInput::Cas {
            key: K,
            expected: Some(2),
            new: Some(5),
        },
        5,
    );
    get(&mut h, 1, Some(2), 10, 11);
    del(&mut h, 1, true, 12, 13);
    get(&mut h, 1, None, 14, 15);
    assert_ok(&h);
}

#[test]
fn keys_are_independent() {
    let mut h = Hist::new();
    done(
        &mut h,
        0,
        KvInput::Put { key: 1, value: 5 },
        0,
        1,
        KvOutput::Put,
    );
    // Reads of other keys are unaffected by the put on key 1.
    done(
        &mut h,
        1,
        KvInput::Get { key: 2 },
        2,
        3,
        KvOutput::Get(None),
    );
    done(
        &mut h,
        1,
        KvInput::Get { key: 1 },
        4,
        5,
        KvOutput::Get(Some(5)),
    );
    let (result, stats) = run(&h);
    assert_eq!(result, CheckResult::Ok);
    assert_eq!(stats.partitions, 2);
}

// ---------------------------------------------------------------- bad

#[test]
fn stale_read_after_completed_write_is_illegal() {
    let mut h = Hist::new();
    let p1 = put(&mut h, 0, 1, 0, 1);
    let p2 = put(&mut h, 0, 2, 2, 3);
    let g = get(&mut h, 1, Some(1), 4, 5);
    let v = assert_illegal(&h);
    assert_eq!(v.partition, K);
    assert_eq!(v.prefix, vec![p1, p2]);
    assert_eq!(v.state, Some(2));
    assert_eq!(v.blocked, g);
    assert_eq!(v.pending, vec![g]);
    let text = v.explain(&h);
    assert!(text.contains("not linearizable"), "{text}");
    assert!(text.contains("Some(2)"), "{text}");
    assert!(text.contains("blocked"), "{text}");
}

#[test]
fn lost_write_is_illegal() {
    let mut h = Hist::new();
    let p = put(&mut h, 0, 1, 0, 1);
    let g = get(&mut h, 1, None, 2, 3);
    let v = assert_illegal(&h);
    assert_eq!((v.prefix, v.blocked), (vec![p], g));
}

#[test]
fn read_of_a_value_never_written_is_illegal() {
    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 10);
    put(&mut h, 1, 2, 0, 10);
    let g = get(&mut h, 2, Some(3), 5, 6);
    assert_eq!(assert_illegal(&h).blocked, g);
}

#[test]
fn cas_succeeding_twice_on_the_same_expectation_is_illegal() {
    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 1);
    cas(&mut h, 1, Some(1), Some(2), true, 2, 10);
    cas(&mut h, 2, Some(1), Some(3), true, 3, 11);
    let v = assert_illegal(&h);
    assert_eq!(v.prefix.len(), 2); // The put and one of the swaps.
}

#[test]
fn non_monotonic_reads_across_clients_are_illegal() {
    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 100); // Still in flight during both reads.
    get(&mut h, 1, Some(1), 10, 20); // Client 1 sees the write...
    let late = get(&mut h, 2, None, 30, 40); // ...client 2, later, does not.
    assert_eq!(assert_illegal(&h).blocked, late);

    // The other way round is fine: the write lands between the reads.
    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 100);
    get(&mut h, 1, None, 10, 20);
    get(&mut h, 2, Some(1), 30, 40);
    assert_ok(&h);
}

#[test]
fn delete_of_absent_key_reporting_existed_is_illegal() {
    let mut h = Hist::new();
    del(&mut h, 0, true, 0, 1);
    assert_illegal(&h);
}

#[test]
fn cas_mismatch_must_report_the_real_current_value() {
    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 1);
    done(
        &mut h,
        1,
        KvInput::Cas {
            key: K,
            expected: Some(5),
            new: Some(6),
        },
        2,
        3,
        KvOutput::CasMismatch { current: Some(2) },
    );
    assert_illegal(&h);
    // A mismatch reporting the expected value itself is impossible too.
    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 1);
    done(
        &mut h,
        1,
        KvInput::Cas {
            key: K,
            expected: Some(1),
            new: Some(6),
        },
        2,
        3,
        KvOutput::CasMismatch { current: Some(1) },
    );
    assert_illegal(&h);
}

#[test]
fn unknown_outcome_cannot_take_effect_before_its_call() {
    let mut h = Hist::new();
    put(&mut h, 0, 1, 0, 1);
    get(&mut h, 1, Some(2), 10, 20);
    unknown(&mut h, 0, KvInput::Put { key: K, value: 2 }, 50);
    assert_illegal(&h);
}

#[test]
fn output_of_the_wrong_kind_is_illegal_not_a_panic() {
    let mut h = Hist::new();
    done(&mut h, 0, KvInput::Get { key: K }, 0, 1, KvOutput::Put);
    assert_illegal(&h);
}

#[test]
fn violation_names_the_bad_key_among_good_ones() {
    let mut h = Hist::new();
    for key in 0..5 {
        done(
            &mut h,
            0,
            KvInput::Put {
                key,
                value: key + 1,
            },
            10 * key,
            10 * key + 1,
            KvOutput::Put,
        );
        let read = if key == 3 { Some(99) } else { Some(key + 1) };
        done(
            &mut h,
            1,
            KvInput::Get { key },
            10 * key + 2,
            10 * key + 3,
            KvOutput::Get(read),
        );
    }
    let v = assert_illegal(&h);
    assert_eq!(v.partition, 3);
    assert_eq!(v.state, Some(4));
}

// ---------------------------------------------------------------- history

#[test]
fn history_refuses_malformed_records_and_stays_unchanged() {
    let mut h = Hist::new();
    let id = h.invoke(0, KvInput::Get { key: 1 }, 10).unwrap();
    assert_eq!(
        h.complete(id, 9, KvOutput::Get(None)),
        Err(HistoryError::ReturnBeforeCall {
            call_time: 10,
            return_time: 9
        })
    );
    assert_eq!(h.get(id).unwrap().outcome, Outcome::Unknown);
    h.complete(id, 11, KvOutput::Get(None)).unwrap();
    assert_eq!(
        h.complete(id, 12, KvOutput::Get(Some(1))),
        Err(HistoryError::AlreadyReturned(id))
    );
    assert_eq!(
        h.get(id).unwrap().outcome,
        Outcome::Returned {
            time: 11,
            output: KvOutput::Get(None)
        }
    );
    let missing = OpId(5);
    assert_eq!(
        h.complete(missing, 1, KvOutput::Put),
        Err(HistoryError::NoSuchOperation(missing))
    );
    let bad = Operation {
        client: 0,
        input: KvInput::Get { key: 1 },
        call_time: 5,
        outcome: Outcome::Returned {
            time: 4,
            output: KvOutput::Get(None),
        },
    };
    assert!(h.push(bad).is_err());
    assert_eq!(h.len(), 1);
}

// ---------------------------------------------------------------- budget

/// `n` concurrent puts of distinct values, then a read of a value none of
/// them wrote: the search must try every order before giving up.
fn concurrent_puts_then_impossible_read(n: u64) -> Hist {
    let mut h = Hist::new();
    for value in 1..=n {
        put(&mut h, value, value, 0, 100);
    }
    get(&mut h, 0, Some(n + 1), 200, 201);
    h
}

#[test]
fn memoization_bounds_the_search_on_many_concurrent_ops() {
    // n = 12: without memoization about e * 12! = 1.3e9 partial orders;
    // with it, each (subset, last value) pair once: about
    // n * (n - 1) * 2^(n - 2) = 135,168 steps.
    let h = concurrent_puts_then_impossible_read(12);
    let (result, stats) = run(&h);
    assert!(result.is_illegal());
    assert!(
        stats.steps <= 150_000,
        "memoized search took {} steps",
        stats.steps
    );
    let no_memo = CheckOptions {
        memoize: false,
        steps_per_partition_max: 2_000_000,
        ..CheckOptions::default()
    };
    let (result, stats) = check_with_stats(&KvModel::new(), &h, &no_memo);
    assert_eq!(
        result,
        CheckResult::Unknown {
            partitions: vec![K]
        }
    );
    assert_eq!(stats.steps, 2_000_000);

    // Small enough to finish both ways: memoization must save most steps.
    let h = concurrent_puts_then_impossible_read(7);
    let (with, memo_stats) = run(&h);
    let (without, plain_stats) = check_with_stats(&KvModel::new(), &h, &no_memo);
    assert!(with.is_illegal() && without.is_illegal());
    assert!(
        plain_stats.steps > 10 * memo_stats.steps,
        "plain {} vs memoized {}",
        plain_stats.steps,
        memo_stats.steps
    );
}

#[test]
fn exhausted_budget_is_unknown_and_does_not_hide_a_later_violation() {
    let h = concurrent_puts_then_impossible_read(10);
    let tight = CheckOptions {
        steps_per_partition_max: 100,
        ..CheckOptions::default()
    };
    let (result, stats) = check_with_stats(&KvModel::new(), &h, &tight);
    assert_eq!(
        result,
        CheckResult::Unknown {
            partitions: vec![K]
        }
    );
    assert_eq!(stats.steps, 100);

    // Key K (7) runs out of budget; key 8 is plainly illegal.
    let mut h = concurrent_puts_then_impossible_read(10);
    done(
        &mut h,
        0,
        KvInput::Get { key: 8 },
        0,
        1,
        KvOutput::Get(Some(1)),
    );
    match check(&KvModel::new(), &h, &tight) {
        CheckResult::Illegal(v) => assert_eq!(v.partition, 8),
        other => panic!("expected key 8 to be illegal, got {other:?}"),
    }
}

#[test]
fn cache_memory_budget_is_enforced() {
    let h = concurrent_puts_then_impossible_read(10);
    let small_cache = CheckOptions {
        cache_bytes_per_partition_max: 10_000,
        ..CheckOptions::default()
    };
    let (result, stats) = check_with_stats(&KvModel::new(), &h, &small_cache);
    assert_eq!(
        result,
        CheckResult::Unknown {
            partitions: vec![K]
        }
    );
    assert!(
        stats.cache_entries < 1_000,
        "{} entries",
        stats.cache_entries
    );
}

// ---------------------------------------------------------------- randomized

fn shapes() -> Vec<KvHistoryShape> {
    vec![
        KvHistoryShape::default(),
        // One hot key, heavy overlap, many timeouts.
        KvHistoryShape {
            clients: 8,
            ops: 300,
            keys: 1,
            values: 3,
            duration_max: 40,
            think_max: 2,
            unknown_per_mille: 100,
        },
        // Few clients, mostly sequential.
        KvHistoryShape {
            clients: 2,
            ops: 300,
            keys: 3,
            values: 4,
            duration_max: 5,
            think_max: 20,
            unknown_per_mille: 0,
        },
    ]
}

#[test]
fn generated_linearizable_histories_pass() {
    let seeds: u64 = std::env::var("LIN_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    for shape in shapes() {
        for seed in 0..seeds {
            let h = kv_history(seed, &shape);
            let (result, _) = run(&h);
            assert_eq!(result, CheckResult::Ok, "seed {seed} shape {shape:?}");
        }
    }
}

#[test]
fn generated_histories_are_deterministic_and_so_is_the_check() {
    let shape = KvHistoryShape::default();
    let a = kv_history(42, &shape);
    assert_eq!(a, kv_history(42, &shape));
    assert_ne!(a, kv_history(43, &shape));
    assert_eq!(run(&a), run(&a));
}

#[test]
fn mutated_histories_with_an_impossible_output_fail() {
    let seeds: u64 = std::env::var("LIN_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // Illegal histories cost far more than legal ones: the search must rule
    // out every way to linearize the ops before the bad one, and timed-out
    // writes on a hot key multiply those ways. So: milder shapes than above.
    let shapes = [
        KvHistoryShape::default(),
        KvHistoryShape {
            clients: 6,
            ops: 200,
            keys: 1,
            values: 3,
            duration_max: 40,
            think_max: 2,
            unknown_per_mille: 30,
        },
        shapes()[2].clone(),
    ];
    let mut mutated = 0;
    for shape in shapes {
        let never_written = shape.values + 1;
        for seed in 0..seeds {
            let mut h = kv_history(seed, &shape);
            let mut rng = SplitMix64::new(seed ^ 0xdead_beef);
            // Reads and failed compare-and-swaps that reported a value.
            let targets: Vec<usize> = h
                .ops()
                .iter()
                .enumerate()
                .filter(|(_, op)| {
                    matches!(
                        op.outcome,
                        Outcome::Returned {
                            output: KvOutput::Get(_) | KvOutput::CasMismatch { .. },
                            ..
                        }
                    )
                })
                .map(|(i, _)| i)
                .collect();
            let Some(&target) = targets.get(rng.below(targets.len() as u64) as usize) else {
                continue;
            };
            let key = *h.ops()[target].input.key();
            if let Outcome::Returned { output, .. } = &mut h.ops[target].outcome {
                *output = match output {
                    KvOutput::Get(_) => KvOutput::Get(Some(never_written)),
                    _ => KvOutput::CasMismatch {
                        current: Some(never_written),
                    },
                };
            }
            match run(&h).0 {
                CheckResult::Illegal(v) => {
                    assert_eq!(v.partition, key, "seed {seed}");
                    assert!(
                        v.pending.contains(&OpId(target as u32)),
                        "seed {seed}: {v:?}"
                    );
                }
                other => panic!("seed {seed} shape {shape:?}: mutated history gave {other:?}"),
            }
            mutated += 1;
        }
    }
    assert!(
        mutated >= 3 * seeds as usize - 3,
        "only {mutated} histories mutated"
    );
}

/// Brute force: try every order of operations that respects real time
/// (an op may go next only if no unplaced completed op returned before its
/// call), with unknown-outcome ops optional. Exponential; small inputs only.
fn brute_force_linearizable(h: &Hist) -> bool {
    fn search(h: &Hist, placed: &mut [bool], state: Option<u64>) -> bool {
        let model = KvModel::<u64, u64>::new();
        let ops = h.ops();
        let all_known_placed = ops
            .iter()
            .zip(placed.iter())
            .all(|(op, &p)| p || matches!(op.outcome, Outcome::Unknown));
        if all_known_placed {
            return true;
        }
        for i in 0..ops.len() {
            if placed[i] {
                continue;
            }
            let blocked = ops.iter().enumerate().any(|(j, other)| {
                !placed[j]
                    && j != i
                    && matches!(other.outcome, Outcome::Returned { time, .. } if time < ops[i].call_time)
            });
            if blocked {
                continue;
            }
            let next = match &ops[i].outcome {
                Outcome::Returned { output, .. } => model.step(&state, &ops[i].input, output),
                Outcome::Unknown => Some(model.step_unknown(&state, &ops[i].input)),
            };
            if let Some(next) = next {
                placed[i] = true;
                let found = search(h, placed, next);
                placed[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    search(h, &mut vec![false; h.len()], None)
}

fn random_output(rng: &mut SplitMix64, input: &Input) -> Output {
    let value = |rng: &mut SplitMix64| match rng.below(3) {
        0 => None,
        v => Some(v),
    };
    match input {
        KvInput::Put { .. } => KvOutput::Put,
        KvInput::Get { .. } => KvOutput::Get(value(rng)),
        KvInput::Delete { .. } => KvOutput::Delete {
            existed: rng.below(2) == 0,
        },
        KvInput::Cas { .. } => {
            if rng.below(3) == 0 {
                KvOutput::CasMismatch {
                    current: value(rng),
                }
            } else {
                KvOutput::Cas {
                    succeeded: rng.below(2) == 0,
                }
            }
        }
    }
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let cases: u64 = std::env::var("LIN_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000);
    let shape = KvHistoryShape {
        clients: 3,
        ops: 7,
        keys: 1,
        values: 2,
        duration_max: 12,
        think_max: 3,
        unknown_per_mille: 150,
    };
    let (mut ok, mut illegal) = (0, 0);
    for seed in 0..cases {
        let mut h = kv_history(seed, &shape);
        let mut rng = SplitMix64::new(seed.wrapping_mul(31) + 7);
        // Mutate some outputs at random: some mutations are harmless, some
        // make the history impossible; the brute force decides which.
        for i in 0..h.len() {
            if rng.below(4) == 0 {
                let input = h.ops[i].input.clone();
                if let Outcome::Returned { output, .. } = &mut h.ops[i].outcome {
                    *output = random_output(&mut rng, &input);
                }
            }
        }
        let expected = brute_force_linearizable(&h);
        let (result, _) = run(&h);
        assert!(!matches!(result, CheckResult::Unknown { .. }));
        assert_eq!(
            result.is_ok(),
            expected,
            "seed {seed}: checker {result:?}, brute force {expected}\n{h:#?}"
        );
        if expected {
            ok += 1;
        } else {
            illegal += 1;
        }
    }
    // Both verdicts must be well represented for the comparison to mean much.
    assert!(
        ok * 5 > cases && illegal * 5 > cases,
        "{ok} linearizable, {illegal} not"
    );
}

#[test]
fn thousands_of_ops_on_one_key_are_checked_in_few_steps() {
    let shape = KvHistoryShape {
        clients: 5,
        ops: 3_000,
        keys: 1,
        values: 5,
        duration_max: 20,
        think_max: 10,
        unknown_per_mille: 20,
    };
    for seed in 0..3 {
        let h = kv_history(seed, &shape);
        let (result, stats) = run(&h);
        assert_eq!(result, CheckResult::Ok, "seed {seed}");
        assert_eq!(stats.partitions, 1);
        assert!(stats.steps <= 20 * h.len() as u64, "seed {seed}: {stats:?}");
    }
}
