//! Coverage-guided fuzzing of the core's public API, as an adversarial embedder would call it.
//!
//! The input's first byte picks a harness; the rest drives it, one operation per few bytes
//! (a byte reader, no `arbitrary`: every input is meaningful, and short inputs stay short):
//!
//! - scheduler (most inputs): a configuration from `SchedulerConfig::from_values` (valid or
//!   not), then add / abort / schedule / update (current, stale and foreign plans, early
//!   finishers that did or did not sample) / check_fits / get, with valid and invalid
//!   numbers (zero, huge, NaN, negative and backwards times). After every call: invariants
//!   hold; a call that failed changed nothing (the whole observable state compared). At the
//!   end every live request must finish within a bound (liveness).
//! - router: route / route_many / on_progress / on_finish / on_abort / update_replica, with
//!   invariants (until a snapshot exempts a replica), no change on error, and a
//!   `state()` / `from_state` round trip that must decide as the original.
//! - simulator: a tiny trace on 1-3 replicas with any router and engine configuration:
//!   `Ok` accounts for every row, or a typed error.
//!
//! A panic, an abort or a failed `assert!` here is a bug in the core.

#![no_main]

use halffull::config::{PolicyKind, SchedulerConfig, Semantics};
use halffull::error::{Error, Value};
use halffull::router::{
    PrefixUse, ReplicaSnapshot, ReplicaSpec, RouteRequest, Router, RouterConfig,
};
use halffull::sched::{NewRequest, RequestId, Scheduler, StepPlan};
use halffull::sim::{self, BlockIds, CostModel, Linear, SimConfig, TraceView};
use libfuzzer_sys::fuzz_target;

/// Reads the fuzzer's bytes; past the end every read is 0, so any input is a program.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// In `lo..=hi` (inclusive), roughly uniform.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + u64::from(self.u16()) % (hi - lo + 1)
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[usize::from(self.u8()) % items.len()].clone()
    }
    /// A count: usually small and valid, sometimes 0 or beyond the limits.
    fn count(&mut self, hi: u64) -> u64 {
        match self.u8() % 16 {
            0 => 0,
            1 => u64::MAX,
            2 => (1 << 40) + 1,
            _ => self.range(1, hi),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes { data, pos: 0 };
    match b.u8() % 20 {
        0..=15 => scheduler(&mut b),
        16..=18 => router(&mut b),
        _ => simulator(&mut b),
    }
});

// ------------------------------------------------------------------------- scheduler

const POLICIES: &[&str] = &[
    "fcfs",
    "priority",
    "no_preempt",
    "sjf",
    "oracle_srpt",
    "larry",
];

fn config(b: &mut Bytes<'_>) -> Vec<(&'static str, Value)> {
    let mut v = vec![
        ("num_gpu_blocks", Value::Int(b.count(48).into())),
        ("block_size", Value::Int(b.range(1, 8).into())),
        ("num_cpu_blocks", Value::Int(b.range(0, 24).into())),
        ("max_num_seqs", Value::Int(b.range(1, 6).into())),
        ("max_num_batched_tokens", Value::Int(b.range(1, 48).into())),
        ("policy", Value::Str(b.pick(POLICIES).into())),
        (
            "preemption_mode",
            Value::Str(b.pick(&["recompute", "swap"]).into()),
        ),
        ("larry_alpha", Value::Float(b.pick(&[0.0, 1.0, 1e3, 1e9]))),
        (
            "larry_load",
            Value::Str(b.pick(&["waiting", "outstanding"]).into()),
        ),
        ("sjf_aging", Value::Float(b.pick(&[0.0, 10.0, 1e6]))),
        (
            "semantics",
            Value::Str(b.pick(&["halffull", "vllm_v1"]).into()),
        ),
        (
            "long_prefill_token_threshold",
            Value::Int(b.range(0, 12).into()),
        ),
        ("reserve_full_prompt", Value::Bool(b.bool())),
        ("enable_prefix_caching", Value::Bool(b.bool())),
    ];
    match b.u8() % 4 {
        0 => v.push((
            "watermark",
            Value::Float(b.pick(&[0.0, 0.01, 0.2, 0.5, 0.99])),
        )),
        1 => v.push(("watermark", Value::Float(f64::NAN))),
        _ => {}
    }
    if b.bool() {
        v.push(("max_model_len", Value::Int(b.range(1, 160).into())));
    }
    v
}

/// Everything a caller can observe, for "a failed call changed nothing".
#[derive(Debug, PartialEq)]
struct View {
    counts: (usize, usize, usize, usize, usize, usize),
    now: u64,
    steps: u64,
    preemptions: u64,
    free_gpu: Vec<u32>,
    requests: Vec<(RequestId, &'static str, u64, u64, u32, Vec<u32>, usize)>,
}

fn view(s: &Scheduler, ids: &[RequestId]) -> View {
    View {
        counts: (
            s.num_waiting(),
            s.num_running(),
            s.num_swapped(),
            s.num_live(),
            s.num_free_gpu_blocks(),
            s.num_free_cpu_blocks(),
        ),
        now: s.now().to_bits(),
        steps: s.num_steps(),
        preemptions: s.num_preemptions(),
        free_gpu: s.free_gpu_block_ids(),
        requests: ids
            .iter()
            .filter_map(|id| s.get(id).ok())
            .map(|r| {
                (
                    r.id.clone(),
                    r.status.as_str(),
                    r.num_computed_tokens,
                    r.num_output_tokens,
                    r.num_preemptions,
                    r.block_table.clone(),
                    r.cpu_blocks.len(),
                )
            })
            .collect(),
    }
}

/// Chained-looking block hashes: a prefix of one of three families (so requests share
/// prefixes), sometimes too long for the prompt (refused) or empty.
fn hashes(b: &mut Bytes<'_>) -> Vec<u128> {
    let family = u128::from(b.u8() % 3) << 64;
    let n = u128::from(b.u8() % 12);
    (0..n).map(|k| family | k).collect()
}

fn time(b: &mut Bytes<'_>, now: f64) -> Option<f64> {
    match b.u8() % 12 {
        0 => None,
        1 => Some(f64::NAN),
        2 => Some(-1.0),
        3 => Some(1e13),
        4 => Some((now - 1.0).max(0.0)),
        5 => Some(1.6e9 + f64::from(b.u8())),
        _ => Some(now + f64::from(b.u8()) * 0.01),
    }
}

/// `FUZZ_TRACE=1 cargo fuzz run core_api <artifact>` prints what a failing input did.
fn tracing() -> bool {
    std::env::var_os("FUZZ_TRACE").is_some_and(|v| !v.is_empty())
}

fn scheduler(b: &mut Bytes<'_>) {
    let pairs = config(b);
    if tracing() {
        eprintln!("config: {pairs:?}");
    }
    let Ok(cfg) = SchedulerConfig::from_values(pairs.iter().map(|(k, v)| (*k, v.clone()))) else {
        return; // an invalid configuration is refused: fine
    };
    // Liveness is halffull's invariant. vLLM 0.33's priority scheduler can thrash: when two
    // running requests tie on (priority, arrival_time) and the cache cannot hold both, its
    // `max()` picks the one admitted first, the furthest along, so each preempts the other
    // before it finishes (found by this target; vLLM itself does the same, decision for
    // decision). `vllm_v1` reproduces that, so liveness is not asserted there.
    let expect_live = !(cfg.semantics == Semantics::VllmV1 && cfg.policy == PolicyKind::Priority);
    let mut s = match Scheduler::new(cfg.clone()) {
        Ok(s) => s,
        Err(Error::OutOfMemory { .. }) => return,
        Err(e) => panic!("a validated config was refused: {e}"),
    };
    // Another scheduler's id, for foreign plans.
    let foreign_id = Scheduler::new(cfg)
        .ok()
        .and_then(|mut f| f.schedule(None).ok())
        .map_or(0, |p| p.scheduler_id);
    let ids: Vec<RequestId> = (0..12)
        .map(|i| {
            if i % 2 == 0 {
                RequestId::Int(i)
            } else {
                RequestId::from(format!("r{i}").as_str())
            }
        })
        .collect();
    let mut plan: Option<StepPlan> = None;
    let mut stale: Option<StepPlan> = None;
    for _ in 0..200 {
        if b.done() {
            break;
        }
        let before = view(&s, &ids);
        let now = s.now();
        let op = b.u8() % 8;
        let result: Result<(), Error> = match op {
            0 | 1 => {
                let new = NewRequest {
                    id: b.pick(&ids),
                    prompt_tokens: b.count(70),
                    max_output_tokens: b.count(16),
                    arrival_time: time(b, now),
                    priority: i64::from(b.u8() as i8),
                    predicted_output_tokens: b.bool().then(|| b.count(30)),
                    true_output_tokens: b.bool().then(|| b.count(16)),
                    block_hashes: hashes(b),
                };
                if tracing() {
                    eprintln!("add {new:?}");
                }
                s.add_request(new).map(|_| ())
            }
            2 => s.abort(&b.pick(&ids)),
            3 | 4 => s.schedule(time(b, now)).map(|p| {
                stale = plan.replace(p);
            }),
            5 | 6 => {
                // The pending plan, a stale one, or one of another scheduler.
                let which = b.u8() % 6;
                let (step, sid) = match (&plan, &stale) {
                    (Some(p), _) if which < 4 => (p.step, p.scheduler_id),
                    (_, Some(p)) if which == 4 => (p.step, p.scheduler_id),
                    (Some(p), _) => (p.step, foreign_id),
                    _ => (s.num_steps(), 0),
                };
                let mut finished = Vec::new();
                if let Some(p) = &plan {
                    for sch in &p.scheduled {
                        if b.u8() % 4 == 0 {
                            if let Some(id) = s.request_id(sch.slot) {
                                finished.push(id.clone());
                            }
                        }
                    }
                }
                if b.u8() % 5 == 0 {
                    finished.push(b.pick(&ids)); // may be unknown or not sampled
                }
                let result = s.update(step, sid, &finished, time(b, now));
                if result.is_ok() {
                    stale = plan.take();
                }
                result.map(|_| ())
            }
            _ => {
                let id = b.pick(&ids);
                let _ = s.get(&id);
                s.check_fits(&id, b.count(200), b.count(200))
            }
        };
        if tracing() {
            eprintln!("op {op}: {result:?} -> {:?}", view(&s, &ids));
        }
        if result.is_err() {
            assert_eq!(
                before,
                view(&s, &ids),
                "a failed call (op {op}) changed the state: {result:?}"
            );
        }
        if let Err(e) = s.check_invariants() {
            panic!("invariant broken after op {op}: {e}");
        }
    }
    // Liveness: with no more arrivals, every live request finishes.
    let mut now = s.now();
    if let Some(p) = plan.take() {
        s.update(p.step, p.scheduler_id, &[], Some(now))
            .unwrap_or_else(|e| panic!("the pending plan cannot be applied: {e}"));
    }
    let mut steps = 0u32;
    while s.num_live() > 0 {
        steps += 1;
        if !expect_live && steps >= 2_000 {
            return;
        }
        assert!(
            steps < 20_000,
            "not live: {} requests left after 20000 steps ({} waiting, {} running, {} swapped)",
            s.num_live(),
            s.num_waiting(),
            s.num_running(),
            s.num_swapped()
        );
        now += 0.01;
        let p = s
            .schedule(Some(now))
            .unwrap_or_else(|e| panic!("schedule failed while draining: {e}"));
        if tracing() && steps < 30 {
            eprintln!("drain {steps}: {p:?}");
        }
        s.update(p.step, p.scheduler_id, &[], Some(now))
            .unwrap_or_else(|e| panic!("update failed while draining: {e}"));
        if let Err(e) = s.check_invariants() {
            panic!("invariant broken while draining: {e}");
        }
    }
}

// ------------------------------------------------------------------------- router

const ROUTERS: &[&str] = &[
    "round_robin",
    "random",
    "power_of_two",
    "least_requests",
    "least_tokens",
    "llumnix",
    "sal",
    "cache_aware",
    "dynamo_kv",
    "sal_uncached",
];

fn router(b: &mut Bytes<'_>) {
    let n = b.range(1, 4) as usize;
    let mut cfg = RouterConfig::new(b.pick(ROUTERS), n);
    cfg.seed = u64::from(b.u16());
    cfg.replicas = (0..n)
        .map(|_| ReplicaSpec {
            num_gpu_blocks: b.count(64),
            block_size: b.range(1, 16),
            max_num_batched_tokens: b.count(64),
        })
        .collect();
    if b.bool() {
        cfg.beta = Some(b.pick(&[0.0, 1.5, 8.0, f64::NAN, 1e13]));
    }
    let Ok(mut r) = Router::<u64>::new(cfg.clone()) else {
        return;
    };
    let mut snapshotted = false;
    let mut next_id = 0u64;
    for _ in 0..200 {
        if b.done() {
            break;
        }
        let before = (r.state(), r.replicas().to_vec(), record_view(&r));
        let id = u64::from(b.u8() % 24);
        let prompt_hashes = hashes(b);
        let overlaps: Vec<u64> = (0..n).map(|_| u64::from(b.u8() % 6)).collect();
        let op = b.u8() % 7;
        let result: Result<(), Error> = match op {
            0 | 1 => {
                let with_overlaps = b.u8() % 4 == 0;
                r.route(
                    id,
                    RouteRequest {
                        prompt_tokens: b.count(100),
                        max_output_tokens: b.bool().then(|| b.count(20)),
                        predicted_output_tokens: b.bool().then(|| b.count(30)),
                        block_hashes: &prompt_hashes,
                        overlap_blocks: with_overlaps.then_some(overlaps.as_slice()),
                    },
                )
                .map(|_| ())
            }
            2 => {
                let k = b.range(0, 4);
                let requests = (0..k)
                    .map(|_| {
                        next_id += 1;
                        let rid = if b.u8() % 8 == 0 { id } else { 1000 + next_id };
                        (rid, RouteRequest::new(b.count(50)))
                    })
                    .collect();
                r.route_many(requests).map(|_| ())
            }
            3 => r.on_progress(&id, b.count(20)),
            4 => r.on_finish(&id, b.count(20)),
            5 => r.on_abort(&id),
            _ => {
                let snap = ReplicaSnapshot {
                    waiting: b.bool().then(|| b.count(10)),
                    running: b.bool().then(|| b.count(10)),
                    queued_prefill_tokens: b.bool().then(|| b.count(500)),
                    queued_prefill_uncached_tokens: b.bool().then(|| b.count(500)),
                    remaining_decode_tokens: None,
                    free_blocks: b.bool().then(|| b.count(64)),
                };
                let result = r.update_replica(b.range(0, n as u64) as usize, snap);
                snapshotted |= result.is_ok();
                result
            }
        };
        if result.is_err() {
            assert_eq!(
                before,
                (r.state(), r.replicas().to_vec(), record_view(&r)),
                "a failed router call (op {op}) changed its state: {result:?}"
            );
        }
        if !snapshotted {
            if let Err(e) = r.check_invariants() {
                panic!("router invariant broken after op {op}: {e}");
            }
        }
    }
    // A restored router is the router: same state, same next decisions (the cache-aware
    // policies' prefix records are not part of the state: refused, never half restored).
    if r.prefix_use() != PrefixUse::None {
        assert!(Router::from_state(r.config().clone(), r.state()).is_err());
        return;
    }
    let mut copy = Router::from_state(r.config().clone(), r.state())
        .unwrap_or_else(|e| panic!("a router's own state was refused: {e}"));
    for k in 0..8u64 {
        let request = RouteRequest::new(1 + k * 7);
        assert_eq!(
            r.route(5000 + k, request).ok(),
            copy.route(5000 + k, request).ok()
        );
    }
    assert_eq!(r.state(), copy.state());
}

/// The prefix records, for "a failed call changed nothing".
fn record_view(r: &Router<u64>) -> Vec<(Vec<u128>, u64)> {
    (0..r.num_replicas())
        .map(|i| (r.record_hashes(i), r.active_blocks(i)))
        .collect()
}

// ------------------------------------------------------------------------- simulator

fn simulator(b: &mut Bytes<'_>) {
    let rows = b.range(1, 6) as usize;
    let mut t = 0.0;
    let mut arrival = Vec::new();
    let mut prompt = Vec::new();
    let mut output = Vec::new();
    for _ in 0..rows {
        t += f64::from(b.u8()) * 0.05;
        arrival.push(t);
        prompt.push(b.range(1, 120) as i64);
        output.push(b.range(1, 24) as i64);
    }
    let predicted: Vec<i64> = output
        .iter()
        .map(|&o| o + i64::from(b.u8() % 8) - 4)
        .collect();
    let pairs = config(b);
    let Ok(engine) = SchedulerConfig::from_values(pairs.iter().map(|(k, v)| (*k, v.clone())))
    else {
        return;
    };
    let cost = CostModel::Linear(Linear {
        c0: b.pick(&[1e-3, 0.02, 1.0]),
        c1: b.pick(&[0.0, 1e-4]),
        c2: b.pick(&[0.0, 1e-3]),
        c3: 0.0,
        swap_s_per_block: b.pick(&[0.0, 1e-3]),
    });
    let mut config = SimConfig::new(b.range(1, 3) as usize, b.pick(ROUTERS), engine, cost);
    config.seed = u64::from(b.u8());
    config.max_output_tokens = b.range(1, 32);
    config.snapshot_interval = b.bool().then(|| b.pick(&[0.01, 0.5, 3.0]));
    config.record_steps = b.bool();
    // Mooncake-style block ids: rows share leading ids, so prefix caching and the
    // cache-aware routers have something to find.
    let block_tokens = b.pick(&[8u64, 16, 64]);
    let mut ids = Vec::new();
    let mut offsets = vec![0u64];
    for &p in &prompt {
        let family = u64::from(b.u8() % 3) * 1000;
        for k in 0..(p as u64).div_ceil(block_tokens) {
            ids.push(family + k);
        }
        offsets.push(ids.len() as u64);
    }
    let with_ids = b.bool();
    config.router_exact_overlap = b.bool();
    let trace = TraceView {
        arrival_time: &arrival,
        prompt_tokens: &prompt,
        output_tokens: &output,
        predicted_output_tokens: b.bool().then_some(predicted.as_slice()),
        block_ids: with_ids.then_some(BlockIds {
            ids: &ids,
            offsets: &offsets,
            block_tokens,
        }),
    };
    match sim::simulate(trace, &config) {
        Ok(out) => {
            assert_eq!(out.status.len(), rows);
            for i in 0..rows {
                // 0 finished, 1 rejected (with a reason), 2 truncated (the cache cannot hold
                // its true output).
                assert!(out.status[i] <= 2, "row {i} has status {}", out.status[i]);
                let finished = out.status[i] != 1;
                assert!(
                    finished || !out.reject_reason[i].is_empty(),
                    "row {i} rejected without a reason"
                );
                assert!(
                    out.output_tokens[i] <= output[i],
                    "row {i} generated more than its true length"
                );
                if finished {
                    assert!(out.finish_time[i] >= out.arrival_time[i]);
                }
            }
        }
        Err(Error::Invariant { message }) => panic!("simulator invariant: {message}"),
        Err(_) => {}
    }
}
