//! The trace simulator (DESIGN §7): N replicas, each an engine [`Scheduler`], behind one
//! [`Router`], driven by discrete events.
//!
//! State owned here: per replica, its scheduler, the plan of the step it is running and when
//! that step ends; per trace row, its outcome ([`SimOutput`]); the event queue.
//!
//! ```text
//! events, ordered by (time, kind, sequence):
//!   kind 0 StepEnd(r)   update() applies the step's tokens; first tokens, block-boundary
//!                       growth and finishes go back to the router (on_progress/on_finish)
//!   kind 1 Arrival(i)   rows in trace order: route, then add_request on that replica
//!   kind 2 Snapshot     every `snapshot_interval` s (optional): each replica's load is
//!                       pushed to the router (waiting, running, free blocks, queued prefill)
//!   kind 3 Start(r)     an idle replica with live requests plans a step: schedule(), then
//!                       StepEnd at now + cost(step)
//! ```
//!
//! Starting a step is its own event (kind 3) so that every arrival at the same instant is
//! queued before the step is planned. A trace row ends `finished` (its true output length
//! reached, the way EOS ends it in a real engine, or the cache-capped maximum) or `rejected`
//! (it fits no replica) with a reason. Nothing depends on a `HashMap`'s order.

pub mod cost;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub use cost::{preset_names, CostModel, Linear, Preset, Roofline, StepShape};

use crate::error::{Error, Result, Value};
use crate::limits::{self, Blame, MAX_COUNT, MAX_REPLICAS};
use crate::router::{ReplicaSnapshot, ReplicaSpec, RouteRequest, Router, RouterConfig};
use crate::sched::{blocks_for, NewRequest, RequestId, Scheduler, SchedulerConfig, StepPlan, F64};

/// Outcome of a trace row.
pub const STATUS_FINISHED: u8 = 0;
pub const STATUS_REJECTED: u8 = 1;

/// How to run a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub num_replicas: usize,
    /// A router policy name (`crate::router::policy_names`).
    pub router: String,
    /// Every replica's engine configuration.
    pub engine: SchedulerConfig,
    pub cost: CostModel,
    /// Seeds the router (`random`, `power_of_two`).
    pub seed: u64,
    /// The client's cap on output tokens declared with each request (the trace's true
    /// length ends it earlier, as EOS would). `no_preempt` reserves this many.
    pub max_output_tokens: u64,
    /// Push replica snapshots to the router every this many seconds (`None`: the router
    /// keeps only its own bookkeeping of what it dispatched and what finished).
    pub snapshot_interval: Option<f64>,
    /// Record the per-step series (memory grows with the number of steps).
    pub record_steps: bool,
    /// Fixes SAL's β; `None`: the router learns it from finished requests.
    pub sal_beta: Option<f64>,
}

impl SimConfig {
    pub fn new(
        num_replicas: usize,
        router: &str,
        engine: SchedulerConfig,
        cost: CostModel,
    ) -> Self {
        SimConfig {
            num_replicas,
            router: router.to_string(),
            engine,
            cost,
            seed: 0,
            max_output_tokens: 2048,
            snapshot_interval: None,
            record_steps: true,
            sal_beta: None,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.num_replicas == 0 || self.num_replicas > MAX_REPLICAS {
            return Err(Error::Config {
                field: "replicas",
                value: Some(Value::from(self.num_replicas as u64)),
                message: format!(
                    "replicas must be in [1, {MAX_REPLICAS}], got {}",
                    self.num_replicas
                ),
            });
        }
        if !crate::router::policy_names().contains(&self.router.as_str()) {
            return Err(Error::UnknownName {
                field: "router",
                name: self.router.clone(),
                valid: crate::router::policy_names(),
            });
        }
        self.engine.validate()?;
        self.cost.validate()?;
        limits::count_in(
            Blame::Config,
            "max_output_tokens",
            &Value::from(self.max_output_tokens),
            1,
            MAX_COUNT,
        )?;
        if let Some(dt) = self.snapshot_interval {
            if !(dt.is_finite() && dt > 0.0) {
                return Err(Error::Config {
                    field: "snapshot_interval",
                    value: Some(Value::Float(dt)),
                    message: format!("snapshot_interval must be finite and > 0, got {dt}"),
                });
            }
        }
        Ok(())
    }

    fn router_config(&self) -> RouterConfig {
        let mut rc = RouterConfig::new(&self.router, self.num_replicas);
        rc.seed = self.seed;
        rc.beta = self.sal_beta;
        rc.replicas = vec![
            ReplicaSpec {
                num_gpu_blocks: self.engine.num_gpu_blocks,
                block_size: self.engine.block_size,
                max_num_batched_tokens: self.engine.max_num_batched_tokens,
            };
            self.num_replicas
        ];
        rc
    }
}

/// The trace, as three aligned columns sorted by arrival.
#[derive(Debug, Clone, Copy)]
pub struct TraceView<'a> {
    pub arrival_time: &'a [f64],
    pub prompt_tokens: &'a [i64],
    pub output_tokens: &'a [i64],
    /// A predictor's output length per row (seen by `sjf` and by routers), if any.
    pub predicted_output_tokens: Option<&'a [i64]>,
}

impl TraceView<'_> {
    fn validate(&self) -> Result<()> {
        let n = self.arrival_time.len();
        if self.prompt_tokens.len() != n
            || self.output_tokens.len() != n
            || self.predicted_output_tokens.is_some_and(|p| p.len() != n)
        {
            return Err(Error::InvalidArgument {
                field: "trace",
                value: None,
                index: None,
                message: format!(
                    "trace columns differ in length: arrival_time {n}, prompt_tokens {}, output_tokens {}",
                    self.prompt_tokens.len(),
                    self.output_tokens.len()
                ),
            });
        }
        let mut last = 0.0_f64;
        for (i, &t) in self.arrival_time.iter().enumerate() {
            if !(t.is_finite() && (0.0..=1e12).contains(&t)) || t < last {
                return Err(Error::InvalidArgument {
                    field: "arrival_time",
                    value: None,
                    index: None,
                    message: format!(
                        "arrival_time[{i}] = {t}: arrivals must be finite, in [0, 1e12] s and sorted"
                    ),
                });
            }
            last = t;
        }
        for (field, col) in [
            ("prompt_tokens", self.prompt_tokens),
            ("output_tokens", self.output_tokens),
        ] {
            if let Some(i) = col.iter().position(|&v| !(1..=1 << 40).contains(&v)) {
                return Err(Error::InvalidArgument {
                    field,
                    value: None,
                    index: None,
                    message: format!("{field}[{i}] = {} must be in [1, 2**40]", col[i]),
                });
            }
        }
        Ok(())
    }
}

/// Per trace row and per step columns. Times in seconds; NaN where there is none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimOutput {
    // per request (trace row order)
    pub replica: Vec<i64>,
    pub arrival_time: Vec<f64>,
    pub first_token_time: Vec<f64>,
    pub finish_time: Vec<f64>,
    pub prompt_tokens: Vec<i64>,
    /// Tokens generated (the true length, or less when the cache caps it).
    pub output_tokens: Vec<i64>,
    pub preemptions: Vec<i64>,
    pub status: Vec<u8>,
    /// Empty unless rejected.
    pub reject_reason: Vec<String>,
    // per step
    pub step_time: Vec<f64>,
    pub step_duration: Vec<f64>,
    pub step_replica: Vec<i64>,
    pub step_batch_size: Vec<i64>,
    pub step_prefill_tokens: Vec<i64>,
    pub step_decode_tokens: Vec<i64>,
    pub step_kv_blocks_used: Vec<i64>,
    pub step_queue_length: Vec<i64>,
    pub step_preempted: Vec<i64>,
    pub num_steps: u64,
    /// Simulated time of the last event.
    pub end_time: f64,
}

struct Replica {
    sched: Scheduler,
    plan: Option<StepPlan>,
    /// A Start or StepEnd event is queued for this replica.
    scheduled: bool,
    /// Prompt tokens routed here whose first token has not come out yet.
    queued_prefill: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    StepEnd = 0,
    Snapshot = 2,
    Start = 3,
}

/// (time, kind, sequence, replica): the heap's order is the event order.
type Event = Reverse<(F64, Kind, u64, usize)>;

/// Run the whole trace through the cluster.
pub fn simulate(trace: TraceView<'_>, config: &SimConfig) -> Result<SimOutput> {
    config.validate()?;
    trace.validate()?;
    let mut router: Router<u64> = Router::new(config.router_config())?;
    let mut replicas = Vec::with_capacity(config.num_replicas);
    for _ in 0..config.num_replicas {
        replicas.push(Replica {
            sched: Scheduler::new(config.engine.clone())?,
            plan: None,
            scheduled: false,
            queued_prefill: 0,
        });
    }
    let n = trace.arrival_time.len();
    let mut out = SimOutput {
        replica: vec![-1; n],
        arrival_time: trace.arrival_time.to_vec(),
        first_token_time: vec![f64::NAN; n],
        finish_time: vec![f64::NAN; n],
        prompt_tokens: trace.prompt_tokens.to_vec(),
        output_tokens: vec![0; n],
        preemptions: vec![0; n],
        status: vec![STATUS_REJECTED; n],
        reject_reason: vec![String::new(); n],
        ..SimOutput::default()
    };
    let eng = &config.engine;
    let declared = config.max_output_tokens;
    let bs = eng.block_size;

    let mut heap: BinaryHeap<Event> = BinaryHeap::with_capacity(2 * config.num_replicas + 2);
    let mut seq: u64 = 0;
    let mut next_arrival = 0usize;
    let mut num_done = 0usize;
    if let (Some(dt), Some(&t0)) = (config.snapshot_interval, trace.arrival_time.first()) {
        heap.push(Reverse((F64(t0 + dt), Kind::Snapshot, seq, 0)));
        seq += 1;
    }
    let mut finished_ids: Vec<RequestId> = Vec::new();
    let mut now = 0.0_f64;

    loop {
        // The next event: the heap's top, or the next arrival (kind 1) if it comes first.
        let arrival_key = trace.arrival_time.get(next_arrival).map(|&t| (F64(t), 1u8));
        let top = heap.peek().map(|Reverse((t, k, _, _))| (*t, *k as u8));
        let take_arrival = match (arrival_key, top) {
            (Some(a), Some(h)) => a < h,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_arrival {
            let i = next_arrival;
            next_arrival += 1;
            now = trace.arrival_time[i];
            let prompt = trace.prompt_tokens[i] as u64;
            let max_out = declared;
            // Fits no replica (all replicas share one configuration): reject, don't route.
            let id = RequestId::Int(i as i64);
            if let Some(first) = replicas.first() {
                if let Err(Error::RequestTooLarge { message, .. }) =
                    first.sched.check_fits(&id, prompt, max_out)
                {
                    out.reject_reason[i] = format!("request_too_large: {message}");
                    num_done += 1;
                    continue;
                }
            }
            let predicted = trace
                .predicted_output_tokens
                .and_then(|p| p.get(i))
                .map(|&p| p.max(0) as u64);
            let rr = RouteRequest {
                prompt_tokens: prompt,
                max_output_tokens: Some(max_out),
                predicted_output_tokens: predicted,
            };
            let r = router.route(i as u64, rr)?;
            let replica = replicas.get_mut(r).ok_or_else(|| Error::Invariant {
                message: format!("router chose replica {r} of {}", config.num_replicas),
            })?;
            let new = NewRequest {
                id,
                prompt_tokens: prompt,
                max_output_tokens: max_out,
                arrival_time: Some(now),
                priority: 0,
                predicted_output_tokens: predicted,
                true_output_tokens: Some(trace.output_tokens[i] as u64),
            };
            match replica.sched.add_request(new) {
                Ok(_) => {
                    out.replica[i] = r as i64;
                    replica.queued_prefill += prompt;
                    if !replica.scheduled {
                        replica.scheduled = true;
                        heap.push(Reverse((F64(now), Kind::Start, seq, r)));
                        seq += 1;
                    }
                }
                Err(Error::RequestTooLarge { message, .. }) => {
                    router.on_abort(&(i as u64))?;
                    out.reject_reason[i] = format!("request_too_large: {message}");
                    num_done += 1;
                }
                Err(e) => return Err(e),
            }
            continue;
        }

        let Some(Reverse((F64(t), kind, _, r))) = heap.pop() else {
            break;
        };
        now = t;
        match kind {
            Kind::Snapshot => {
                for (idx, rep) in replicas.iter().enumerate() {
                    let s = &rep.sched;
                    let snap = ReplicaSnapshot {
                        waiting: Some((s.num_waiting() + s.num_swapped()) as u64),
                        running: Some(s.num_running() as u64),
                        queued_prefill_tokens: Some(rep.queued_prefill),
                        remaining_decode_tokens: None,
                        free_blocks: Some(s.num_free_gpu_blocks() as u64),
                    };
                    router.update_replica(idx, snap)?;
                }
                if let Some(dt) = config.snapshot_interval {
                    if next_arrival < n {
                        heap.push(Reverse((F64(t + dt), Kind::Snapshot, seq, 0)));
                        seq += 1;
                    }
                }
            }
            Kind::Start => {
                let Some(rep) = replicas.get_mut(r) else {
                    continue;
                };
                rep.scheduled = false;
                if rep.sched.num_live() == 0 {
                    continue;
                }
                let plan = rep.sched.schedule(Some(t))?;
                let mut shape = StepShape::default();
                let mut decode = 0i64;
                for s in &plan.scheduled {
                    shape.add(s.num_new_tokens, s.num_computed_tokens, s.is_prefill);
                    if !s.is_prefill {
                        decode += 1;
                    }
                }
                shape.swap_blocks = plan
                    .swapped_out
                    .iter()
                    .chain(plan.swapped_in.iter())
                    .map(|(_, rows)| rows.len() as u64)
                    .sum();
                if plan.scheduled.is_empty() && shape.swap_blocks == 0 {
                    // Nothing can run although requests are live: a bug in the core.
                    return Err(Error::Invariant {
                        message: format!(
                            "replica {r} planned an empty step with {} live requests at t={t}",
                            rep.sched.num_live()
                        ),
                    });
                }
                let dur = config.cost.step_time(&shape);
                if !(dur.is_finite() && dur > 0.0) {
                    return Err(Error::Invariant {
                        message: format!("cost model gave a step time of {dur} s"),
                    });
                }
                if config.record_steps {
                    out.step_time.push(t);
                    out.step_duration.push(dur);
                    out.step_replica.push(r as i64);
                    out.step_batch_size.push(plan.scheduled.len() as i64);
                    out.step_prefill_tokens.push(shape.prefill_tokens as i64);
                    out.step_decode_tokens.push(decode);
                    out.step_kv_blocks_used
                        .push((eng.num_gpu_blocks as i64) - rep.sched.num_free_gpu_blocks() as i64);
                    out.step_queue_length
                        .push((rep.sched.num_waiting() + rep.sched.num_swapped()) as i64);
                    out.step_preempted.push(plan.preempted.len() as i64);
                }
                out.num_steps += 1;
                rep.plan = Some(plan);
                rep.scheduled = true;
                heap.push(Reverse((F64(t + dur), Kind::StepEnd, seq, r)));
                seq += 1;
            }
            Kind::StepEnd => {
                let Some(rep) = replicas.get_mut(r) else {
                    continue;
                };
                rep.scheduled = false;
                let Some(plan) = rep.plan.take() else {
                    continue;
                };
                finished_ids.clear();
                for s in &plan.scheduled {
                    if !s.samples {
                        continue;
                    }
                    let Some(req) = rep.sched.request(s.slot) else {
                        continue;
                    };
                    let RequestId::Int(row) = req.id else {
                        continue;
                    };
                    let i = row as usize;
                    let count = req.num_output_tokens + 1;
                    let target = (trace.output_tokens[i] as u64).min(req.max_output_tokens);
                    let id = i as u64;
                    if count == 1 {
                        out.first_token_time[i] = t;
                        rep.queued_prefill = rep.queued_prefill.saturating_sub(req.prompt_tokens);
                    }
                    if count >= target {
                        // Ends here: EOS at the true length, or the cache-capped maximum.
                        out.finish_time[i] = t;
                        out.output_tokens[i] = count as i64;
                        out.preemptions[i] = i64::from(req.num_preemptions);
                        out.status[i] = STATUS_FINISHED;
                        num_done += 1;
                        if count < req.max_output_tokens {
                            finished_ids.push(req.id.clone());
                        }
                        router.on_finish(&id, count)?;
                    } else if count == 1
                        || blocks_for(req.prompt_tokens + count, bs)
                            != blocks_for(req.prompt_tokens + count - 1, bs)
                    {
                        // The router's view moves at the first token and at block boundaries.
                        router.on_progress(&id, count)?;
                    }
                }
                rep.sched
                    .update(plan.step, plan.scheduler_id, &finished_ids, Some(t))?;
                if rep.sched.num_live() > 0 {
                    rep.scheduled = true;
                    heap.push(Reverse((F64(t), Kind::Start, seq, r)));
                    seq += 1;
                }
            }
        }
    }
    out.end_time = now;
    if num_done != n {
        return Err(Error::Invariant {
            message: format!(
                "simulation ended with {} of {n} trace rows unaccounted for",
                n - num_done
            ),
        });
    }
    Ok(out)
}

/// One replica's capacity in finished requests per second, measured by running (a sample of)
/// the trace's request mix at saturation: `max_requests` rows, taken at an even stride in
/// trace order, all arriving at t = 0 on one replica, with this engine configuration and
/// policy `fcfs`. The rate is taken between the 10th and the 90th percentile of finish times
/// (k finishes over that span), which leaves out the ramp-up and the drain at the end where
/// the batch is no longer full.
pub fn measure_capacity(
    trace: TraceView<'_>,
    config: &SimConfig,
    max_requests: usize,
) -> Result<f64> {
    trace.validate()?;
    let n = trace.arrival_time.len();
    if n == 0 {
        return Err(Error::InvalidArgument {
            field: "trace",
            value: None,
            index: None,
            message: "cannot measure capacity on an empty trace".into(),
        });
    }
    let m = n.min(max_requests.max(1));
    let rows: Vec<usize> = (0..m).map(|k| k * n / m).collect();
    let arrival = vec![0.0; m];
    let prompt: Vec<i64> = rows.iter().map(|&i| trace.prompt_tokens[i]).collect();
    let output: Vec<i64> = rows.iter().map(|&i| trace.output_tokens[i]).collect();
    let mut cfg = config.clone();
    cfg.num_replicas = 1;
    cfg.router = "round_robin".into();
    cfg.engine.policy = crate::sched::PolicyKind::Fcfs;
    cfg.snapshot_interval = None;
    cfg.record_steps = false;
    let res = simulate(
        TraceView {
            arrival_time: &arrival,
            prompt_tokens: &prompt,
            output_tokens: &output,
            predicted_output_tokens: None,
        },
        &cfg,
    )?;
    let mut done: Vec<f64> = res
        .finish_time
        .iter()
        .copied()
        .filter(|t| t.is_finite())
        .collect();
    if done.is_empty() {
        return Err(Error::InvalidArgument {
            field: "trace",
            value: None,
            index: None,
            message: "no request of the trace fits a replica: capacity is zero".into(),
        });
    }
    done.sort_by(f64::total_cmp);
    let k = done.len();
    let (lo, hi) = (k / 10, (9 * k) / 10);
    if k >= 20 && hi > lo {
        let span = done[hi - 1] - done[lo];
        if span > 0.0 {
            return Ok((hi - 1 - lo) as f64 / span);
        }
    }
    Ok(k as f64 / done[k - 1].max(f64::MIN_POSITIVE))
}

#[cfg(test)]
mod tests;
