//! The core's `schedule()` + `update()` per step, in Rust alone (no Python): the workload of
//! `benches/bench_prefix_cache.py` (256 running decode; each step 8 finish and 8 are admitted
//! from N waiting; prompts = one of 32 shared 512-token prefixes + a unique suffix).
//!
//!     cargo bench --bench core_step
//!
//! Prints the median and the spread of three runs of 300 steps per case.

#![allow(clippy::expect_used)] // a bench: a failure is a bug to see at once

use std::time::Instant;

use halffull::config::Semantics;
use halffull::sched::{NewRequest, RequestId, Scheduler, SchedulerConfig};

const RUNNING: u64 = 256;
const CHURN: usize = 8;
const SHARED_BLOCKS: u128 = 32;

struct Workload {
    s: Scheduler,
    t: f64,
    next_id: i64,
    x: u64,
}

impl Workload {
    fn new(semantics: Semantics, caching: bool, waiting: usize) -> Self {
        let cfg = SchedulerConfig {
            max_num_seqs: RUNNING,
            max_num_batched_tokens: 1 << 20,
            semantics,
            enable_prefix_caching: caching,
            ..SchedulerConfig::new(1 << 20, 16)
        };
        let mut w = Workload {
            s: Scheduler::new(cfg).expect("config"),
            t: 0.0,
            next_id: 0,
            x: 1,
        };
        for _ in 0..RUNNING {
            w.add();
        }
        let plan = w.s.schedule(Some(0.0)).expect("schedule");
        w.s.update(plan.step, plan.scheduler_id, &[], Some(0.0))
            .expect("update");
        for _ in 0..waiting {
            w.add();
        }
        w
    }

    fn add(&mut self) {
        self.x = (self.x * 48271) % 2147483647;
        let prefix = u128::from(self.x % 32);
        let mut r = NewRequest {
            id: RequestId::Int(self.next_id),
            prompt_tokens: 16 * 32 + 16 + (self.x >> 8) % 985,
            max_output_tokens: 1 << 30,
            arrival_time: Some(self.t),
            priority: 0,
            predicted_output_tokens: None,
            true_output_tokens: None,
            block_hashes: Vec::new(),
        };
        r.block_hashes = (0..SHARED_BLOCKS).map(|j| prefix << 16 | j).collect();
        self.s.add_request(r).expect("add");
        self.next_id += 1;
    }

    fn step(&mut self) -> f64 {
        self.t += 0.02;
        for _ in 0..CHURN {
            self.add();
        }
        let t0 = Instant::now();
        let plan = self.s.schedule(Some(self.t)).expect("schedule");
        let ids: Vec<RequestId> = [0usize, 37, 70, 101, 140, 170, 201, 250]
            .iter()
            .filter_map(|&k| plan.scheduled.get(k))
            .filter(|e| e.samples)
            .filter_map(|e| self.s.request_id(e.slot).cloned())
            .collect();
        self.s
            .update(plan.step, plan.scheduler_id, &ids, Some(self.t))
            .expect("update");
        t0.elapsed().as_secs_f64()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let modes = [
        ("halffull", Semantics::Halffull, false),
        ("vllm_v1", Semantics::VllmV1, false),
        ("vllm_v1+cache", Semantics::VllmV1, true),
    ];
    for waiting in [100, 10_000, 100_000] {
        for &(name, semantics, caching) in &modes {
            let runs: Vec<f64> = (0..3)
                .map(|_| {
                    let mut w = Workload::new(semantics, caching, waiting);
                    for _ in 0..5 {
                        w.step();
                    }
                    median((0..300).map(|_| w.step()).collect())
                })
                .collect();
            let (lo, hi) = runs
                .iter()
                .fold((f64::MAX, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
            println!(
                "{name:14} waiting {waiting:>7}: {:6.1} us per step (runs {:.1}-{:.1})",
                median(runs.clone()) * 1e6,
                lo * 1e6,
                hi * 1e6
            );
        }
    }
}
