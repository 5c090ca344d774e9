//! Prefix caching in `vllm_v1` (tests/vllm_v1_rules.md §4.2, §5.1, §6), rule by rule.
use super::*;
use crate::config::Semantics;
use crate::hash::hash_token_blocks;

fn cached(blocks: u64, block_size: u64) -> Scheduler {
    Scheduler::new(SchedulerConfig {
        semantics: Semantics::VllmV1,
        enable_prefix_caching: true,
        ..SchedulerConfig::new(blocks, block_size)
    })
    .unwrap()
}

fn with_tokens(id: &str, tokens: &[u32], max_out: u64, bs: u64) -> NewRequest {
    let mut r = NewRequest::new(id, tokens.len() as u64, max_out);
    r.block_hashes = hash_token_blocks(tokens, bs).unwrap();
    r
}

fn step(s: &mut Scheduler) -> StepPlan {
    let plan = s.schedule(None).unwrap();
    s.update(plan.step, plan.scheduler_id, &[], None).unwrap();
    s.check_invariants().unwrap();
    plan
}

fn entry<'a>(s: &Scheduler, plan: &'a StepPlan, id: &str) -> &'a Scheduled {
    let slot = s.slot_of(&RequestId::from(id)).unwrap();
    plan.scheduled.iter().find(|e| e.slot == slot).unwrap()
}

#[test]
fn a_request_admitted_later_in_the_same_step_hits_blocks_cached_at_allocation() {
    let mut s = cached(16, 4);
    let shared: Vec<u32> = (0..8).collect();
    let a: Vec<u32> = shared.iter().copied().chain([100, 101]).collect();
    let b: Vec<u32> = shared.iter().copied().chain([200, 201, 202]).collect();
    s.add_request(with_tokens("a", &a, 4, 4)).unwrap();
    s.add_request(with_tokens("b", &b, 4, 4)).unwrap();
    let plan = s.schedule(None).unwrap();
    let (ea, eb) = (*entry(&s, &plan, "a"), *entry(&s, &plan, "b"));
    assert_eq!((ea.num_cached_tokens, ea.num_new_tokens), (0, 10));
    assert_eq!(
        (
            eb.num_cached_tokens,
            eb.num_computed_tokens,
            eb.num_new_tokens
        ),
        (8, 8, 3)
    );
    let table = |id: &str| s.get(&RequestId::from(id)).unwrap().block_table.clone();
    assert_eq!(table("a"), vec![1, 2, 3]);
    assert_eq!(table("b"), vec![1, 2, 4]);
    assert_eq!((s.gpu_block_ref_count(1), s.gpu_block_ref_count(3)), (2, 1));
    let st = s.prefix_cache_stats();
    assert_eq!((st.requests, st.queries, st.hits), (2, 21, 8));
    s.update(plan.step, plan.scheduler_id, &[], None).unwrap();
    s.check_invariants().unwrap();
}

#[test]
fn a_hit_leaves_at_least_one_token_to_compute() {
    let mut s = cached(16, 4);
    let p: Vec<u32> = (0..8).collect();
    s.add_request(with_tokens("a", &p, 1, 4)).unwrap();
    step(&mut s); // a's prompt computed and cached; a finishes (max 1 output)
    assert_eq!(s.num_live(), 0);
    s.add_request(with_tokens("b", &p, 1, 4)).unwrap();
    let plan = step(&mut s);
    let e = plan.scheduled[0];
    // Both blocks are cached, but only the first is a hit: the last 4 tokens are recomputed.
    assert_eq!((e.num_cached_tokens, e.num_new_tokens), (4, 4));
}

#[test]
fn freed_hashed_blocks_go_to_the_tail_and_unhashed_ones_to_the_head() {
    let mut s = cached(10, 4);
    let p: Vec<u32> = (0..10).collect(); // 2 full blocks + 2 tokens
    s.add_request(with_tokens("a", &p, 1, 4)).unwrap();
    step(&mut s);
    // a held [1, 2, 3]: 1 and 2 hashed (tail, last first), 3 unhashed (head).
    assert_eq!(s.free_gpu_block_ids(), vec![3, 4, 5, 6, 7, 8, 9, 2, 1]);
}

#[test]
fn handing_out_a_cached_free_block_evicts_it() {
    let mut s = cached(4, 4); // 3 usable
    let p: Vec<u32> = (0..8).collect();
    s.add_request(with_tokens("a", &p, 1, 4)).unwrap();
    step(&mut s); // a: [1, 2], both cached, then freed: queue 3, 2, 1
    assert_eq!(s.free_gpu_block_ids(), vec![3, 2, 1]);
    let h = hash_token_blocks(&p, 4).unwrap();
    assert_eq!(s.prefix_hit_blocks(&h), 2);
    let other: Vec<u32> = (50..61).collect(); // 3 blocks, takes 3, 2, 1
    s.add_request(with_tokens("b", &other, 1, 4)).unwrap();
    step(&mut s);
    assert_eq!(s.prefix_cache_stats().evictions, 2);
    assert_eq!(s.prefix_hit_blocks(&h), 0);
}

#[test]
fn a_preempted_request_hits_its_own_blocks_again_and_counts_as_preempted() {
    // 6 usable blocks of 4 tokens. a (8-token prompt) and b (8) decode until a block is
    // short; the FCFS victim (b, the last admitted) is preempted; a takes the head of the
    // queue (b's last block, its output block); when a finishes b comes back and finds its
    // two prompt blocks still cached.
    let mut s = cached(7, 4);
    let a: Vec<u32> = (0..8).collect();
    let b: Vec<u32> = (100..108).collect();
    s.add_request(with_tokens("a", &a, 8, 4)).unwrap();
    s.add_request(with_tokens("b", &b, 20, 4)).unwrap();
    let mut preempted_at = None;
    for k in 0..40 {
        let plan = step(&mut s);
        if !plan.preempted.is_empty() && preempted_at.is_none() {
            preempted_at = Some(k);
        }
        if preempted_at.is_some() && !plan.admitted.is_empty() {
            let e = plan
                .scheduled
                .iter()
                .find(|e| plan.admitted.contains(&e.slot))
                .unwrap();
            assert!(
                e.num_cached_tokens >= 8,
                "b re-admitted with {} cached",
                e.num_cached_tokens
            );
            let st = s.prefix_cache_stats();
            assert_eq!((st.requests, st.preempted_requests), (2, 1));
            assert_eq!(st.preempted_hits, e.num_cached_tokens);
            return;
        }
    }
    panic!("no preemption and re-admission happened");
}

#[test]
fn reset_prefix_cache_only_when_nothing_is_held() {
    let mut s = cached(16, 4);
    let p: Vec<u32> = (0..8).collect();
    s.add_request(with_tokens("a", &p, 3, 4)).unwrap();
    step(&mut s);
    assert!(!s.reset_prefix_cache());
    let h = hash_token_blocks(&p, 4).unwrap();
    assert_eq!(s.prefix_hit_blocks(&h), 2);
    step(&mut s);
    step(&mut s);
    assert_eq!(s.num_live(), 0);
    let queue = s.free_gpu_block_ids();
    assert!(s.reset_prefix_cache());
    assert_eq!(s.prefix_hit_blocks(&h), 0);
    assert_eq!(s.free_gpu_block_ids(), queue);
    s.check_invariants().unwrap();
}

#[test]
fn too_many_block_hashes_is_an_error_that_changes_nothing() {
    let mut s = cached(16, 4);
    let mut r = NewRequest::new("a", 7, 2); // one full block
    r.block_hashes = vec![1, 2];
    assert!(matches!(
        s.add_request(r),
        Err(Error::InvalidArgument {
            field: "block_hashes",
            ..
        })
    ));
    assert_eq!(s.num_live(), 0);
}

#[test]
fn caching_needs_vllm_v1_semantics() {
    let cfg = SchedulerConfig {
        enable_prefix_caching: true,
        ..SchedulerConfig::new(16, 4)
    };
    assert!(matches!(
        Scheduler::new(cfg),
        Err(Error::Config {
            field: "enable_prefix_caching",
            ..
        })
    ));
}

#[test]
fn caching_off_keeps_every_block_unshared() {
    let mut s = Scheduler::new(SchedulerConfig {
        semantics: Semantics::VllmV1,
        ..SchedulerConfig::new(16, 4)
    })
    .unwrap();
    let p: Vec<u32> = (0..8).collect();
    s.add_request(with_tokens("a", &p, 4, 4)).unwrap();
    s.add_request(with_tokens("b", &p, 4, 4)).unwrap();
    let plan = step(&mut s);
    assert!(plan.scheduled.iter().all(|e| e.num_cached_tokens == 0));
    assert_eq!(s.prefix_cache_stats(), PrefixCacheStats::default());
}
