//! Unit tests of `semantics = "vllm_v1"` (SPEC.md rule by rule), and four of
//! `/work/wt/vllm/checks.py`'s hand-made workloads replayed with their expected decisions,
//! written as literals (from `emulate.py`, which reproduces vLLM 0.33 on 300/300 workloads).
use super::*;
use crate::config::{Named, Semantics};

fn v1(policy: &str, blocks: u64, block_size: u64) -> SchedulerConfig {
    SchedulerConfig {
        semantics: Semantics::VllmV1,
        policy: PolicyKind::parse(policy).unwrap(),
        ..SchedulerConfig::new(blocks, block_size)
    }
}

fn rid(i: u32) -> RequestId {
    RequestId::from(format!("r{i:04}").as_str())
}

fn num(id: &RequestId) -> u32 {
    match id {
        RequestId::Str(s) => s[1..].parse().unwrap(),
        RequestId::Int(n) => *n as u32,
    }
}

/// A harness request: (id, arrival step, prompt tokens, max tokens, priority).
type Spec = (u32, u64, u64, u64, i64);
/// One step: (step, scheduled (id, n, computed before, new blocks), preempted ids, free queue
/// after the update).
type Rec = (
    u64,
    Vec<(u32, u64, u64, Vec<BlockId>)>,
    Vec<u32>,
    Vec<BlockId>,
);

/// The harness protocol (SPEC §11): arrivals, `schedule`, one token for each request that
/// samples (never EOS here), `update`. Steps with nothing live and nothing to report are
/// skipped, as the harness does.
fn replay(cfg: SchedulerConfig, specs: &[Spec], steps: u64) -> Vec<Rec> {
    let mut s = Scheduler::new(cfg).unwrap();
    let mut recs = Vec::new();
    let mut reported = true;
    for step in 0..steps {
        for &(i, at, prompt, max_tokens, priority) in specs.iter().filter(|x| x.1 == step) {
            let mut r =
                NewRequest::new(rid(i), prompt, max_tokens).arrival(at as f64 + 1e-6 * i as f64);
            r.priority = priority;
            s.add_request(r).unwrap();
        }
        if s.num_live() == 0 && reported {
            continue;
        }
        let plan = s.schedule(None).unwrap();
        let name = |slot: u32| num(s.request_id(slot).unwrap());
        let scheduled = plan
            .scheduled
            .iter()
            .map(|e| {
                let new = plan
                    .new_blocks
                    .iter()
                    .find(|(slot, _)| *slot == e.slot)
                    .map_or(Vec::new(), |(_, b)| b.clone());
                (name(e.slot), e.num_new_tokens, e.num_computed_tokens, new)
            })
            .collect();
        let preempted = plan.preempted.iter().map(|&(slot, _)| name(slot)).collect();
        let ended = s.update(plan.step, plan.scheduler_id, &[], None).unwrap();
        reported = ended.is_empty();
        s.check_invariants().unwrap();
        recs.push((step, scheduled, preempted, s.free_gpu_block_ids()));
    }
    recs
}

type Expected<'a> = &'a [(u64, &'a [(u32, u64, u64, &'a [u32])], &'a [u32], &'a [u32])];

fn assert_replay(got: &[Rec], want: Expected<'_>) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let ws: Vec<_> =
            w.1.iter()
                .map(|&(i, n, c, b)| (i, n, c, b.to_vec()))
                .collect();
        assert_eq!(
            (g.0, &g.1, &g.2[..], &g.3[..]),
            (w.0, &ws, w.2, w.3),
            "step {}",
            w.0
        );
    }
}

/// checks.py defaults: block size 16, 8 seats, 256 tokens per step.
fn checks_cfg(policy: &str, blocks: u64, max_model_len: u64) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs: 8,
        max_num_batched_tokens: 256,
        max_model_len: Some(max_model_len),
        ..v1(policy, blocks, 16)
    }
}

#[test]
fn checks_free_queue_is_lifo_in_reverse_table_order() {
    let specs = [(0, 0, 40, 2, 0), (1, 0, 20, 5, 0), (2, 4, 70, 3, 0)];
    let got = replay(checks_cfg("fcfs", 12, 160), &specs, 8);
    assert_replay(
        &got,
        &[
            (
                0,
                &[(0, 40, 0, &[1, 2, 3]), (1, 20, 0, &[4, 5])],
                &[],
                &[6, 7, 8, 9, 10, 11],
            ),
            (
                1,
                &[(0, 1, 40, &[]), (1, 1, 20, &[])],
                &[],
                &[3, 2, 1, 6, 7, 8, 9, 10, 11],
            ),
            (2, &[(1, 1, 21, &[])], &[], &[3, 2, 1, 6, 7, 8, 9, 10, 11]),
            (3, &[(1, 1, 22, &[])], &[], &[3, 2, 1, 6, 7, 8, 9, 10, 11]),
            (
                4,
                &[(1, 1, 23, &[]), (2, 70, 0, &[3, 2, 1, 6, 7])],
                &[],
                &[5, 4, 8, 9, 10, 11],
            ),
            (5, &[(2, 1, 70, &[])], &[], &[5, 4, 8, 9, 10, 11]),
            (
                6,
                &[(2, 1, 71, &[])],
                &[],
                &[7, 6, 1, 2, 3, 5, 4, 8, 9, 10, 11],
            ),
            (7, &[], &[], &[7, 6, 1, 2, 3, 5, 4, 8, 9, 10, 11]),
        ],
    );
}

#[test]
fn checks_priority_unschedules_an_already_scheduled_victim() {
    // SPEC §3.1: at step 10 r0001 (priority 0) crosses into its third block with none free;
    // the victim is r0000 (priority 3), already scheduled this step: it is un-scheduled,
    // preempted, and r0001 receives its last block (3).
    let specs = [(0, 0, 33, 30, 3), (1, 1, 24, 12, 0)];
    let got = replay(checks_cfg("priority", 6, 80), &specs, 14);
    assert_replay(
        &got,
        &[
            (0, &[(0, 33, 0, &[1, 2, 3])], &[], &[4, 5]),
            (1, &[(0, 1, 33, &[]), (1, 24, 0, &[4, 5])], &[], &[]),
            (2, &[(0, 1, 34, &[]), (1, 1, 24, &[])], &[], &[]),
            (3, &[(0, 1, 35, &[]), (1, 1, 25, &[])], &[], &[]),
            (4, &[(0, 1, 36, &[]), (1, 1, 26, &[])], &[], &[]),
            (5, &[(0, 1, 37, &[]), (1, 1, 27, &[])], &[], &[]),
            (6, &[(0, 1, 38, &[]), (1, 1, 28, &[])], &[], &[]),
            (7, &[(0, 1, 39, &[]), (1, 1, 29, &[])], &[], &[]),
            (8, &[(0, 1, 40, &[]), (1, 1, 30, &[])], &[], &[]),
            (9, &[(0, 1, 41, &[]), (1, 1, 31, &[])], &[], &[]),
            (10, &[(1, 1, 32, &[3])], &[0], &[2, 1]),
            (11, &[(1, 1, 33, &[])], &[], &[2, 1]),
            (12, &[(1, 1, 34, &[])], &[], &[3, 5, 4, 2, 1]),
            (13, &[(0, 43, 0, &[3, 5, 4])], &[], &[2, 1]),
        ],
    );
}

fn reserve_cfg(reserve_full_prompt: bool) -> SchedulerConfig {
    SchedulerConfig {
        max_num_batched_tokens: 32,
        max_num_seqs: 4,
        reserve_full_prompt,
        ..checks_cfg("fcfs", 12, 160)
    }
}

#[test]
fn checks_reserve_full_prompt_and_per_chunk_allocation() {
    let specs = [(0, 0, 100, 40, 0), (1, 1, 100, 3, 0)];
    // True: r0000 grows chunk by chunk (two blocks per 32-token chunk); r0001's whole prompt
    // (7 blocks) never fits in the 4 left, so it waits.
    let got = replay(reserve_cfg(true), &specs, 9);
    assert_replay(
        &got,
        &[
            (
                0,
                &[(0, 32, 0, &[1, 2])],
                &[],
                &[3, 4, 5, 6, 7, 8, 9, 10, 11],
            ),
            (1, &[(0, 32, 32, &[3, 4])], &[], &[5, 6, 7, 8, 9, 10, 11]),
            (2, &[(0, 32, 64, &[5, 6])], &[], &[7, 8, 9, 10, 11]),
            (3, &[(0, 4, 96, &[7])], &[], &[8, 9, 10, 11]),
            (4, &[(0, 1, 100, &[])], &[], &[8, 9, 10, 11]),
            (5, &[(0, 1, 101, &[])], &[], &[8, 9, 10, 11]),
            (6, &[(0, 1, 102, &[])], &[], &[8, 9, 10, 11]),
            (7, &[(0, 1, 103, &[])], &[], &[8, 9, 10, 11]),
            (8, &[(0, 1, 104, &[])], &[], &[8, 9, 10, 11]),
        ],
    );
    // False: r0001 is admitted with a 28-token first chunk, grows, preempts itself as the FCFS
    // tail when blocks run out (phase 1 stops), comes back at the head, and so on.
    let got = replay(reserve_cfg(false), &specs, 9);
    assert_replay(
        &got,
        &[
            (
                0,
                &[(0, 32, 0, &[1, 2])],
                &[],
                &[3, 4, 5, 6, 7, 8, 9, 10, 11],
            ),
            (1, &[(0, 32, 32, &[3, 4])], &[], &[5, 6, 7, 8, 9, 10, 11]),
            (2, &[(0, 32, 64, &[5, 6])], &[], &[7, 8, 9, 10, 11]),
            (3, &[(0, 4, 96, &[7]), (1, 28, 0, &[8, 9])], &[], &[10, 11]),
            (4, &[(0, 1, 100, &[]), (1, 31, 28, &[10, 11])], &[], &[]),
            (5, &[(0, 1, 101, &[])], &[1], &[11, 10, 9, 8]),
            (6, &[(0, 1, 102, &[]), (1, 31, 0, &[11, 10])], &[], &[9, 8]),
            (7, &[(0, 1, 103, &[]), (1, 31, 31, &[9, 8])], &[], &[]),
            (8, &[(0, 1, 104, &[])], &[1], &[8, 9, 10, 11]),
        ],
    );
}

#[test]
fn checks_watermark_counts_all_blocks_and_binds_only_with_running_requests() {
    // N = 20 (19 usable), watermark 0.1 -> int(0.1 * 20) = 2 blocks.
    let specs = [(0, 0, 239, 2, 0), (1, 1, 31, 2, 0), (2, 1, 15, 2, 0)];
    let cfg = |w: f64| SchedulerConfig {
        max_num_batched_tokens: 512,
        watermark: Some(w),
        ..checks_cfg("fcfs", 20, 320)
    };
    let first: &[u32] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    let got = replay(cfg(0.0), &specs, 4);
    assert_replay(
        &got,
        &[
            (0, &[(0, 239, 0, first)], &[], &[16, 17, 18, 19]),
            (
                1,
                &[(0, 1, 239, &[]), (1, 31, 0, &[16, 17]), (2, 15, 0, &[18])],
                &[],
                &[15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 19],
            ),
            (
                2,
                &[(1, 1, 31, &[]), (2, 1, 15, &[])],
                &[],
                &[
                    18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 19,
                ],
            ),
            (
                3,
                &[],
                &[],
                &[
                    18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 19,
                ],
            ),
        ],
    );
    // With 4 free, r0001 (2 blocks) is admitted (2 + 2 <= 4), r0002 (1 block) is not (1 + 2 > 2).
    let got = replay(cfg(0.1), &specs, 4);
    assert_replay(
        &got,
        &[
            (0, &[(0, 239, 0, first)], &[], &[16, 17, 18, 19]),
            (
                1,
                &[(0, 1, 239, &[]), (1, 31, 0, &[16, 17])],
                &[],
                &[15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 18, 19],
            ),
            (
                2,
                &[(1, 1, 31, &[]), (2, 15, 0, &[15])],
                &[],
                &[
                    17, 16, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 18, 19,
                ],
            ),
            (
                3,
                &[(2, 1, 15, &[])],
                &[],
                &[
                    15, 17, 16, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 18, 19,
                ],
            ),
        ],
    );
}

#[test]
fn null_block_is_never_handed_out_and_capacity_is_n_minus_one() {
    let mut s = Scheduler::new(v1("fcfs", 4, 4)).unwrap();
    assert_eq!(s.num_free_gpu_blocks(), 3);
    assert_eq!(s.free_gpu_block_ids(), vec![1, 2, 3]);
    assert!(matches!(
        s.add_request(NewRequest::new("big", 12, 1)),
        Err(Error::RequestTooLarge {
            need_blocks: 4,
            capacity_blocks: 3,
            ..
        })
    ));
    s.add_request(NewRequest::new("a", 11, 5)).unwrap();
    let p = s.schedule(None).unwrap();
    assert_eq!(p.new_blocks, vec![(p.admitted[0], vec![1, 2, 3])]);
    s.update(p.step, p.scheduler_id, &[], None).unwrap();
    // 12 tokens fill the 3 usable blocks: the request's output was capped to 1 token.
    assert_eq!(s.num_live(), 0);
    assert_eq!(s.free_gpu_block_ids(), vec![3, 2, 1]);
    // halffull mode keeps every block.
    let h = Scheduler::new(SchedulerConfig::new(4, 4)).unwrap();
    assert_eq!(h.free_gpu_block_ids(), vec![0, 1, 2, 3]);
}

/// Three running requests of one block each with none free (bs 4, N 4): B (priority 5,
/// prompt 2) admitted alone, then A (priority 0) and C (priority 1), prompts of 2, so running
/// is B, A, C under both policies. At step 3 B's decode needs a second block.
fn three_full(policy: &str) -> (Scheduler, StepPlan) {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_batched_tokens: 64,
        ..v1(policy, 4, 4)
    })
    .unwrap();
    let add = |s: &mut Scheduler, id: &str, t: f64, prio: i64| {
        let mut r = NewRequest::new(id, 2, 10).arrival(t);
        r.priority = prio;
        s.add_request(r).unwrap();
    };
    add(&mut s, "B", 0.0, 5);
    for step in 0..3 {
        if step == 1 {
            add(&mut s, "A", 1.0, 0);
            add(&mut s, "C", 1.5, 1);
        }
        let p = s.schedule(None).unwrap();
        assert!(p.preempted.is_empty());
        s.update(p.step, p.scheduler_id, &[], None).unwrap();
    }
    assert_eq!(s.num_free_gpu_blocks(), 0);
    let p = s.schedule(None).unwrap();
    s.check_invariants().unwrap();
    (s, p)
}

fn ids(s: &Scheduler, slots: impl IntoIterator<Item = u32>) -> Vec<String> {
    slots
        .into_iter()
        .map(|x| s.request_id(x).unwrap().to_string())
        .collect()
}

#[test]
fn fcfs_victim_is_the_last_running_request() {
    let (s, p) = three_full("fcfs");
    assert_eq!(ids(&s, p.preempted.iter().map(|x| x.0)), ["'C'"]);
    assert_eq!(ids(&s, p.scheduled.iter().map(|x| x.slot)), ["'B'", "'A'"]);
    // B received C's block (freed to the head).
    assert_eq!(p.new_blocks, vec![(p.scheduled[0].slot, vec![3])]);
}

#[test]
fn priority_preempting_itself_continues_phase_one() {
    let (s, p) = three_full("priority");
    // The worst is B, the asker itself: it is preempted and phase 1 goes on with A and C.
    assert_eq!(ids(&s, p.preempted.iter().map(|x| x.0)), ["'B'"]);
    assert_eq!(ids(&s, p.scheduled.iter().map(|x| x.slot)), ["'A'", "'C'"]);
    assert!(p.new_blocks.is_empty());
    assert_eq!(s.free_gpu_block_ids(), vec![1]);
}

#[test]
fn priority_victim_ties_and_waiting_order_follow_vllm() {
    // Exact (priority, arrival) ties: the first in running order is the victim.
    let mut q = policy::make_policy(&v1("priority", 8, 4));
    let mk = |id: i64, prio: i64, t: f64, seq: u64| Request {
        id: RequestId::Int(id),
        seq,
        arrival_time: t,
        prompt_tokens: 1,
        max_output_tokens: 1,
        priority: prio,
        predicted_output_tokens: None,
        true_output_tokens: None,
        status: Status::Waiting,
        num_output_tokens: 0,
        num_computed_tokens: 0,
        num_preemptions: 0,
        block_table: Vec::new(),
        cpu_blocks: Vec::new(),
        block_hashes: Vec::new(),
        num_cached_blocks: 0,
    };
    let slab: Vec<Option<Request>> = vec![
        Some(mk(7, 1, 1.0, 0)),
        Some(mk(10, 1, 1.0, 1)),
        Some(mk(3, 0, 5.0, 2)),
    ];
    assert_eq!(q.choose_victim(&[0, 1, 2], &slab), Some(0));
    assert_eq!(q.choose_victim(&[1, 0, 2], &slab), Some(1));
    // Waiting ties on (priority, arrival) break on the id as a string: "10" < "7".
    q.push(0, slab[0].as_ref().unwrap());
    q.push(1, slab[1].as_ref().unwrap());
    assert_eq!(q.peek(0), Some(1));
    // FCFS: a preempted request goes back to the head of the deque.
    let mut f = policy::make_policy(&v1("fcfs", 8, 4));
    f.push(0, slab[0].as_ref().unwrap());
    f.push(1, slab[1].as_ref().unwrap());
    f.requeue(2, slab[2].as_ref().unwrap());
    assert_eq!(f.peek(0), Some(2));
    f.remove(2, slab[2].as_ref().unwrap());
    assert_eq!((f.peek(0), f.len()), (Some(0), 2));
}

#[test]
fn max_model_len_stops_and_refuses_in_both_semantics() {
    for sem in [Semantics::Halffull, Semantics::VllmV1] {
        let cfg = SchedulerConfig {
            semantics: sem,
            max_model_len: Some(13),
            watermark: Some(0.0),
            ..SchedulerConfig::new(16, 4)
        };
        let mut s = Scheduler::new(cfg).unwrap();
        match s.add_request(NewRequest::new("long", 13, 5)) {
            Err(Error::RequestTooLarge {
                need_blocks,
                capacity_blocks,
                message,
                ..
            }) => {
                assert_eq!((need_blocks, capacity_blocks), (4, 4));
                assert!(message.contains("max_model_len=13"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        s.add_request(NewRequest::new("a", 10, 100)).unwrap();
        let mut outputs = 0;
        for _ in 0..10 {
            if s.num_live() == 0 {
                break;
            }
            let p = s.schedule(None).unwrap();
            outputs += p.scheduled.iter().filter(|x| x.samples).count();
            s.update(p.step, p.scheduler_id, &[], None).unwrap();
        }
        // prompt 10 + 3 outputs = max_model_len 13.
        assert_eq!((outputs, s.num_live()), (3, 0), "{sem}");
    }
}

#[test]
fn threshold_caps_chunks_unless_one_request_is_live() {
    for sem in [Semantics::Halffull, Semantics::VllmV1] {
        let cfg = SchedulerConfig {
            semantics: sem,
            long_prefill_token_threshold: 5,
            watermark: Some(0.0),
            ..SchedulerConfig::new(64, 4)
        };
        let mut s = Scheduler::new(cfg.clone()).unwrap();
        s.add_request(NewRequest::new("solo", 12, 2)).unwrap();
        let p = s.schedule(None).unwrap();
        assert_eq!(
            p.scheduled[0].num_new_tokens, 12,
            "{sem}: ignored with one live request"
        );
        s.update(p.step, p.scheduler_id, &[], None).unwrap();
        let mut s = Scheduler::new(cfg).unwrap();
        s.add_request(NewRequest::new("a", 12, 2)).unwrap();
        s.add_request(NewRequest::new("b", 3, 2)).unwrap();
        let p = s.schedule(None).unwrap();
        let n: Vec<u64> = p.scheduled.iter().map(|x| x.num_new_tokens).collect();
        assert_eq!(n, [5, 3], "{sem}");
        // Per-chunk allocation holds only the chunk's blocks in vllm_v1; halffull the prompt's.
        let a = p.scheduled[0].slot;
        let held = s.request(a).unwrap().block_table.len();
        assert_eq!(held, if sem == Semantics::VllmV1 { 2 } else { 3 }, "{sem}");
        s.update(p.step, p.scheduler_id, &[], None).unwrap();
        let p = s.schedule(None).unwrap();
        assert_eq!(p.scheduled[0].num_new_tokens, 5, "{sem}");
        s.update(p.step, p.scheduler_id, &[], None).unwrap();
    }
}

#[test]
fn every_policy_drains_in_vllm_v1() {
    for name in policy_names() {
        let cfg = SchedulerConfig {
            max_num_seqs: 4,
            max_num_batched_tokens: 16,
            long_prefill_token_threshold: 6,
            ..v1(name, 13, 4)
        };
        for reserve in [true, false] {
            let mut s = Scheduler::new(SchedulerConfig {
                reserve_full_prompt: reserve,
                ..cfg.clone()
            })
            .unwrap();
            for i in 0..10u64 {
                let mut r =
                    NewRequest::new(i as i64, 3 + (i * 7) % 9, 2 + i % 5).arrival(i as f64 * 0.001);
                r.priority = (i % 3) as i64;
                s.add_request(r).unwrap();
            }
            let mut done = 0;
            for _ in 0..10_000 {
                if s.num_live() == 0 {
                    break;
                }
                let p = s.schedule(None).unwrap();
                s.check_invariants().unwrap();
                done += s.update(p.step, p.scheduler_id, &[], None).unwrap().len();
                s.check_invariants().unwrap();
            }
            assert_eq!(done, 10, "{name} reserve_full_prompt={reserve}");
            assert_eq!(s.num_free_gpu_blocks(), 12);
        }
    }
}
