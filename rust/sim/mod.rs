//! The trace simulator (DESIGN §7): N replicas, each an engine [`Scheduler`], behind one
//! [`Router`], driven by discrete events.
//!
//! State owned here (one `Sim` per run): per replica, its scheduler, the plan of the step it
//! is running and whether an event is queued for it; the router; per trace row, its outcome
//! ([`SimOutput`]); the event queue.
//!
//! ```text
//! events, ordered by (time, kind, sequence number), one handler each:
//!   kind 0 StepEnd(r)   on_step_end: update() applies the step's tokens; first tokens,
//!                       block-boundary growth and finishes go back to the router
//!                       (on_progress/on_finish); Start(r) now if requests are still live
//!   kind 1 Arrival(i)   on_arrival: rows in trace order (row i queues row i + 1): reject if
//!                       it fits no replica, else route, add_request on that replica, and
//!                       Start(r) now if no event is queued for r
//!   kind 2 Snapshot     on_snapshot: every `snapshot_interval` s (optional) from the first
//!                       arrival while rows remain to arrive: each replica's load is pushed to
//!                       the router (waiting, running, free blocks, queued prefill)
//!   kind 3 Start(r)     on_start: a replica with live requests plans a step: schedule(), then
//!                       StepEnd(r) at now + cost(step)
//! ```
//!
//! A replica has at most one event queued (Start or StepEnd). Starting a step is its own event
//! (kind 3) so that every arrival at the same instant is queued before the step is planned. A
//! trace row ends `finished` (its true output length reached, the way EOS ends it in a real
//! engine, or the cache-capped maximum) or `rejected` (it fits no replica) with a reason.
//! Nothing depends on a `HashMap`'s order.

pub(crate) mod cost;

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, TryReserveError};

pub use cost::{preset_names, CostModel, Linear, Preset, Roofline, StepShape};

use crate::error::{Error, Result, Value};
use crate::hash::{expand_block_ids, BlockHash};
use crate::limits::{self, can_allocate, Blame, MAX_COUNT, MAX_REPLICAS, MAX_SNAPSHOTS, MAX_TIME};
use crate::router::{PrefixUse, ReplicaSnapshot, ReplicaSpec, RouteRequest, Router, RouterConfig};
use crate::sched::{
    blocks_for, NewRequest, PrefixCacheStats, RequestId, Scheduler, SchedulerConfig, StepPlan,
    BYTES_PER_BLOCK, BYTES_PER_CACHED_BLOCK, F64,
};

/// Outcome of a trace row.
pub(crate) const STATUS_FINISHED: u8 = 0;
pub(crate) const STATUS_REJECTED: u8 = 1;
/// Ran, but stopped before its true output (capped at `min(true, max_output_tokens)`)
/// because prompt plus output cannot fit the KV cache (or `max_model_len`): not finished.
pub(crate) const STATUS_TRUNCATED: u8 = 2;

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
    /// Cache-aware routers learn each replica's cached prefix of a request exactly from the
    /// replicas' schedulers (`true`, as Dynamo's KV events would tell them) or only from
    /// their own record of what they sent where (`false`, SGLang's approximate tree).
    pub router_exact_overlap: bool,
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
            router_exact_overlap: false,
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

/// A trace's own ids for its prompts' KV blocks (Mooncake's `hash_ids`: one id per
/// `block_tokens` tokens, equal ids for equal prefixes), flattened: row `i`'s ids are
/// `ids[offsets[i]..offsets[i + 1]]`. With prefix caching they become each request's block
/// hashes ([`crate::hash::expand_block_ids`]).
#[derive(Debug, Clone, Copy)]
pub struct BlockIds<'a> {
    pub ids: &'a [u64],
    pub offsets: &'a [u64],
    pub block_tokens: u64,
}

impl BlockIds<'_> {
    fn row(&self, i: usize) -> &[u64] {
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        &self.ids[a..b]
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
    /// The prompts' block ids, if the trace has them.
    pub block_ids: Option<BlockIds<'a>>,
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
        if let Some(b) = &self.block_ids {
            let bad = |message: String| Error::InvalidArgument {
                field: "hash_ids",
                value: None,
                index: None,
                message,
            };
            if b.offsets.len() != n + 1
                || b.offsets.first() != Some(&0)
                || b.offsets.last() != Some(&(b.ids.len() as u64))
                || b.offsets.windows(2).any(|w| w[0] > w[1])
            {
                return Err(bad(format!(
                    "hash_ids offsets must rise from 0 to {} over {} rows",
                    b.ids.len(),
                    n
                )));
            }
            if b.block_tokens == 0 || b.block_tokens > MAX_COUNT {
                return Err(bad(format!(
                    "hash_block_tokens must be in [1, 2**40], got {}",
                    b.block_tokens
                )));
            }
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
    /// Empty unless rejected (`request_too_large: ...`) or truncated (`kv_cache: ...` or
    /// `max_model_len: ...`).
    pub reject_reason: Vec<String>,
    /// Prompt tokens found in the prefix cache at the request's first admission.
    pub cached_tokens: Vec<i64>,
    /// The prefix caches' counters, summed over replicas (all 0 with caching off).
    pub prefix_cache: PrefixCacheStats,
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

impl SimOutput {
    /// Room for one more step in every per-step column (grown fallibly, doubling):
    /// `OutOfMemory` naming `record_steps` when a long run's series no longer fits.
    fn reserve_step(&mut self) -> Result<()> {
        let n = self.step_time.len();
        if n < self.step_time.capacity() {
            return Ok(());
        }
        let more = n.max(1024);
        let oom =
            |_| Error::out_of_memory("record_steps", "the per-step series", (n + more) as u64, 72);
        self.step_time.try_reserve_exact(more).map_err(oom)?;
        self.step_duration.try_reserve_exact(more).map_err(oom)?;
        self.step_replica.try_reserve_exact(more).map_err(oom)?;
        self.step_batch_size.try_reserve_exact(more).map_err(oom)?;
        self.step_prefill_tokens
            .try_reserve_exact(more)
            .map_err(oom)?;
        self.step_decode_tokens
            .try_reserve_exact(more)
            .map_err(oom)?;
        self.step_kv_blocks_used
            .try_reserve_exact(more)
            .map_err(oom)?;
        self.step_queue_length
            .try_reserve_exact(more)
            .map_err(oom)?;
        self.step_preempted.try_reserve_exact(more).map_err(oom)?;
        Ok(())
    }
}

/// `n` copies of `value`, allocated fallibly.
fn filled<T: Clone>(n: usize, value: T) -> std::result::Result<Vec<T>, TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)?;
    v.resize(n, value);
    Ok(v)
}

/// A copy of `src`, allocated fallibly.
fn copied<T: Copy>(src: &[T]) -> std::result::Result<Vec<T>, TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(src.len())?;
    v.extend_from_slice(src);
    Ok(v)
}

/// One engine and what the simulator tracks around it.
struct Replica {
    sched: Scheduler,
    /// The plan of its latest step: the one it runs from its Start to its StepEnd (read there,
    /// replaced at the next Start).
    plan: StepPlan,
    /// A Start or StepEnd event is queued for it (never more than one).
    scheduled: bool,
    /// Prompt tokens routed here whose first token has not come out yet.
    queued_prefill: u64,
}

impl Replica {
    fn new(config: SchedulerConfig) -> Result<Self> {
        Ok(Replica {
            sched: Scheduler::new(config)?,
            plan: StepPlan::default(),
            scheduled: false,
            queued_prefill: 0,
        })
    }

    /// Its load as the router sees it at a Snapshot.
    fn snapshot(&self) -> ReplicaSnapshot {
        let s = &self.sched;
        ReplicaSnapshot {
            waiting: Some((s.num_waiting() + s.num_swapped()) as u64),
            running: Some(s.num_running() as u64),
            queued_prefill_tokens: Some(self.queued_prefill),
            queued_prefill_uncached_tokens: None,
            remaining_decode_tokens: None,
            free_blocks: Some(s.num_free_gpu_blocks() as u64),
        }
    }
}

/// Which event goes first at the same instant: the lower discriminant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    StepEnd = 0,
    Arrival = 1,
    Snapshot = 2,
    Start = 3,
}

/// What happens, to which replica or trace row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    StepEnd { replica: usize },
    Arrival { row: usize },
    Snapshot,
    Start { replica: usize },
}

impl Event {
    fn kind(self) -> Kind {
        match self {
            Event::StepEnd { .. } => Kind::StepEnd,
            Event::Arrival { .. } => Kind::Arrival,
            Event::Snapshot => Kind::Snapshot,
            Event::Start { .. } => Kind::Start,
        }
    }
}

/// When a queued event happens. The derived order is the event order: time, then kind, then
/// `seq`, which numbers the pushes, so no two keys are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    time: F64,
    kind: Kind,
    seq: u64,
}

/// A queued event, ordered by its key alone.
#[derive(Debug)]
struct Queued {
    key: Key,
    event: Event,
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Queued {}

/// The event queue: a min-heap of [`Queued`].
struct Queue {
    heap: BinaryHeap<Reverse<Queued>>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, time: f64, event: Event) {
        let key = Key {
            time: F64(time),
            kind: event.kind(),
            seq: self.seq,
        };
        self.heap.push(Reverse(Queued { key, event }));
        self.seq += 1;
    }

    fn pop(&mut self) -> Option<(f64, Event)> {
        self.heap.pop().map(|Reverse(q)| (q.key.time.0, q.event))
    }
}

/// The cost model's view of a plan.
fn step_shape(plan: &StepPlan) -> StepShape {
    let mut shape = StepShape::default();
    for s in &plan.scheduled {
        shape.add(s.num_new_tokens, s.num_computed_tokens, s.is_prefill);
    }
    shape.swap_blocks = plan
        .swapped_out
        .iter()
        .chain(plan.swapped_in.iter())
        .map(|(_, rows)| rows.len() as u64)
        .sum();
    shape
}

/// One run: the cluster, the queue of events and the output, with one handler per event.
struct Sim<'a> {
    trace: TraceView<'a>,
    config: &'a SimConfig,
    replicas: Vec<Replica>,
    router: Router<u64>,
    queue: Queue,
    out: SimOutput,
    /// Trace rows that have arrived (the row of the queued Arrival, if any).
    num_arrived: usize,
    /// Trace rows finished or rejected.
    num_done: usize,
    /// StepEnd's list of ids that stop before their declared maximum (kept for its buffer).
    finished_ids: Vec<RequestId>,
}

impl<'a> Sim<'a> {
    fn new(trace: TraceView<'a>, config: &'a SimConfig) -> Result<Self> {
        let router = Router::new(config.router_config())?;
        // Every replica's scheduler (its block pools: `BYTES_PER_BLOCK` per block) and every
        // per-row column is allocated fallibly: `OutOfMemory`, not an abort.
        let mut replicas = Vec::new();
        replicas
            .try_reserve_exact(config.num_replicas)
            .map_err(|_| {
                Error::out_of_memory(
                    "replicas",
                    "the replicas",
                    config.num_replicas as u64,
                    std::mem::size_of::<Replica>() as u64,
                )
            })?;
        // All the replicas' block pools at once, asked for (and given back) before any is
        // built: a cluster that cannot fit fails at once, not after building thousands.
        let engine = &config.engine;
        let caching =
            engine.semantics == crate::config::Semantics::VllmV1 && engine.enable_prefix_caching;
        let per_replica = engine
            .num_gpu_blocks
            .saturating_mul(BYTES_PER_BLOCK + if caching { BYTES_PER_CACHED_BLOCK } else { 0 })
            + engine.num_cpu_blocks.saturating_mul(BYTES_PER_BLOCK);
        let total = (config.num_replicas as u64).saturating_mul(per_replica);
        let too_many = |bytes: u64| Error::OutOfMemory {
            field: "replicas",
            bytes,
            message: format!(
                "cannot allocate {} replicas: their block pools take {} x {per_replica} bytes \
                 ({} GPU + {} CPU blocks each) = {total} bytes; nothing was run",
                config.num_replicas,
                config.num_replicas,
                engine.num_gpu_blocks,
                engine.num_cpu_blocks
            ),
        };
        if !can_allocate(total) {
            return Err(too_many(total));
        }
        for _ in 0..config.num_replicas {
            replicas.push(Replica::new(config.engine.clone()).map_err(|e| match e {
                Error::OutOfMemory { .. } => too_many(total),
                other => other,
            })?);
        }
        let n = trace.arrival_time.len();
        let rows =
            |what: &str, bytes: usize| Error::out_of_memory("trace", what, n as u64, bytes as u64);
        let out = SimOutput {
            replica: filled(n, -1).map_err(|_| rows("the replica column", 8))?,
            arrival_time: copied(trace.arrival_time).map_err(|_| rows("the arrival column", 8))?,
            first_token_time: filled(n, f64::NAN).map_err(|_| rows("the first-token column", 8))?,
            finish_time: filled(n, f64::NAN).map_err(|_| rows("the finish column", 8))?,
            prompt_tokens: copied(trace.prompt_tokens).map_err(|_| rows("the prompt column", 8))?,
            output_tokens: filled(n, 0).map_err(|_| rows("the output column", 8))?,
            preemptions: filled(n, 0).map_err(|_| rows("the preemption column", 8))?,
            status: filled(n, STATUS_REJECTED).map_err(|_| rows("the status column", 1))?,
            reject_reason: filled(n, String::new())
                .map_err(|_| rows("the reject-reason column", std::mem::size_of::<String>()))?,
            cached_tokens: filled(n, 0).map_err(|_| rows("the cached-token column", 8))?,
            ..SimOutput::default()
        };
        // At most one event per replica, the next arrival and the next snapshot.
        let mut queue = Queue {
            heap: BinaryHeap::with_capacity(config.num_replicas + 2),
            seq: 0,
        };
        if let Some(&t0) = trace.arrival_time.first() {
            if let Some(dt) = config.snapshot_interval {
                queue.push(t0 + dt, Event::Snapshot);
            }
            queue.push(t0, Event::Arrival { row: 0 });
        }
        Ok(Sim {
            trace,
            config,
            replicas,
            router,
            queue,
            out,
            num_arrived: 0,
            num_done: 0,
            finished_ids: Vec::new(),
        })
    }

    /// Run to the end; `None` if `stop` asked to stop (it is called every
    /// [`STOP_CHECK_EVENTS`] events).
    fn run(mut self, stop: &mut dyn FnMut() -> bool) -> Result<Option<SimOutput>> {
        let mut now = 0.0;
        let mut events: u64 = 0;
        while let Some((t, event)) = self.queue.pop() {
            events += 1;
            if events % STOP_CHECK_EVENTS == 0 && stop() {
                return Ok(None);
            }
            now = t;
            match event {
                Event::StepEnd { replica } => self.on_step_end(replica, t)?,
                Event::Arrival { row } => self.on_arrival(row, t)?,
                Event::Snapshot => self.on_snapshot(t)?,
                Event::Start { replica } => self.on_start(replica, t)?,
            }
        }
        self.out.end_time = now;
        for rep in &self.replicas {
            self.out.prefix_cache += rep.sched.prefix_cache_stats();
        }
        let n = self.trace.arrival_time.len();
        if self.num_done != n {
            return Err(Error::Invariant {
                message: format!(
                    "simulation ended with {} of {n} trace rows unaccounted for",
                    n - self.num_done
                ),
            });
        }
        Ok(Some(self.out))
    }

    /// Row `i` arrives: queue the next row, then reject it if it fits no replica, else route it
    /// and add it to the chosen replica, which starts a step now if it is idle.
    fn on_arrival(&mut self, i: usize, now: f64) -> Result<()> {
        debug_assert_eq!(i, self.num_arrived, "arrivals in trace order");
        self.num_arrived = i + 1;
        if let Some(&t) = self.trace.arrival_time.get(i + 1) {
            self.queue.push(t, Event::Arrival { row: i + 1 });
        }
        let prompt = self.trace.prompt_tokens[i] as u64;
        let max_out = self.config.max_output_tokens;
        let id = RequestId::Int(i as i64);
        // Fits no replica (all replicas share one configuration): reject, don't route.
        if let Some(first) = self.replicas.first() {
            if let Err(Error::RequestTooLarge { message, .. }) =
                first.sched.check_fits(&id, prompt, max_out)
            {
                self.reject(i, &message);
                return Ok(());
            }
        }
        let predicted = self
            .trace
            .predicted_output_tokens
            .and_then(|p| p.get(i))
            .map(|&p| p.max(0) as u64);
        let block_hashes = self.block_hashes(i, prompt)?;
        let prefix_router = self.router.prefix_use() != PrefixUse::None;
        let overlap: Option<Vec<u64>> =
            (prefix_router && self.config.router_exact_overlap).then(|| {
                self.replicas
                    .iter()
                    .map(|rep| rep.sched.prefix_hit_blocks(&block_hashes) as u64)
                    .collect()
            });
        let route = RouteRequest {
            max_output_tokens: Some(max_out),
            predicted_output_tokens: predicted,
            block_hashes: if prefix_router { &block_hashes } else { &[] },
            overlap_blocks: overlap.as_deref(),
            ..RouteRequest::new(prompt)
        };
        let r = self.router.route(i as u64, route)?;
        let Some(rep) = self.replicas.get_mut(r) else {
            return Err(Error::Invariant {
                message: format!("router chose replica {r} of {}", self.config.num_replicas),
            });
        };
        let new = NewRequest {
            id,
            prompt_tokens: prompt,
            max_output_tokens: max_out,
            arrival_time: Some(now),
            priority: 0,
            predicted_output_tokens: predicted,
            true_output_tokens: Some(self.trace.output_tokens[i] as u64),
            block_hashes,
        };
        match rep.sched.add_request(new) {
            Ok(_) => {
                self.out.replica[i] = r as i64;
                rep.queued_prefill += prompt;
                if !rep.scheduled {
                    rep.scheduled = true;
                    self.queue.push(now, Event::Start { replica: r });
                }
            }
            Err(Error::RequestTooLarge { message, .. }) => {
                self.router.on_abort(&(i as u64))?;
                self.reject(i, &message);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Row `i`'s block hashes for the scheduler's prefix cache: from the trace's block ids
    /// when caching is on and the trace has them, else none (its blocks are its own).
    fn block_hashes(&self, i: usize, prompt: u64) -> Result<Vec<BlockHash>> {
        let engine = &self.config.engine;
        match &self.trace.block_ids {
            Some(b) if engine.enable_prefix_caching => {
                expand_block_ids(b.row(i), b.block_tokens, engine.block_size, prompt)
            }
            _ => Ok(Vec::new()),
        }
    }

    fn reject(&mut self, i: usize, message: &str) {
        self.out.reject_reason[i] = format!("request_too_large: {message}");
        self.num_done += 1;
    }

    /// Push every replica's load to the router; the next snapshot comes while rows remain to
    /// arrive.
    fn on_snapshot(&mut self, now: f64) -> Result<()> {
        for (r, rep) in self.replicas.iter().enumerate() {
            self.router.update_replica(r, rep.snapshot())?;
        }
        if let Some(dt) = self.config.snapshot_interval {
            if self.num_arrived < self.trace.arrival_time.len() {
                self.queue.push(now + dt, Event::Snapshot);
            }
        }
        Ok(())
    }

    /// Replica `r` plans a step (it has live requests) and runs it until StepEnd.
    fn on_start(&mut self, r: usize, now: f64) -> Result<()> {
        let rep = &mut self.replicas[r];
        debug_assert!(rep.scheduled, "replica {r}: a Start it did not queue");
        debug_assert!(
            rep.sched.num_live() > 0,
            "replica {r}: Start with nothing live"
        );
        rep.scheduled = false;
        let plan = rep.sched.schedule(Some(now))?;
        for e in plan.scheduled.iter().filter(|e| e.num_cached_tokens > 0) {
            if let Some(req) = rep.sched.request(e.slot).filter(|q| q.num_preemptions == 0) {
                if let RequestId::Int(row) = req.id {
                    self.out.cached_tokens[row as usize] = e.num_cached_tokens as i64;
                }
            }
        }
        let shape = step_shape(&plan);
        if plan.scheduled.is_empty() && shape.swap_blocks == 0 {
            // Nothing can run although requests are live: a bug in the core.
            return Err(Error::Invariant {
                message: format!(
                    "replica {r} planned an empty step with {} live requests at t={now}",
                    rep.sched.num_live()
                ),
            });
        }
        let dur = self.config.cost.step_time(&shape);
        if !(dur.is_finite() && dur > 0.0) {
            return Err(Error::Invariant {
                message: format!("cost model gave a step time of {dur} s"),
            });
        }
        let end = now + dur;
        if end > MAX_TIME || !end.is_finite() {
            let last = self.trace.arrival_time.last().copied().unwrap_or(0.0);
            return Err(Error::InvalidArgument {
                field: "trace",
                value: None,
                index: None,
                message: format!(
                    "step end time {end} s exceeds the simulated-time limit of 1e12 s (MAX_TIME): \
                     replica {r}'s step {} started at {now} s and takes {dur} s under the cost \
                     model {}; the trace's arrivals reach {last} s. Shift the arrivals toward 0 \
                     or make the cost model's steps shorter",
                    self.out.num_steps,
                    self.config.cost.describe()
                ),
            });
        }
        if self.config.record_steps {
            let out = &mut self.out;
            out.reserve_step()?;
            let s = &rep.sched;
            out.step_time.push(now);
            out.step_duration.push(dur);
            out.step_replica.push(r as i64);
            out.step_batch_size.push(plan.scheduled.len() as i64);
            out.step_prefill_tokens.push(shape.prefill_tokens as i64);
            out.step_decode_tokens.push(shape.decode_seqs as i64);
            out.step_kv_blocks_used
                .push(self.config.engine.num_gpu_blocks as i64 - s.num_free_gpu_blocks() as i64);
            out.step_queue_length
                .push((s.num_waiting() + s.num_swapped()) as i64);
            out.step_preempted.push(plan.preempted.len() as i64);
        }
        self.out.num_steps += 1;
        rep.plan = plan;
        rep.scheduled = true;
        self.queue.push(end, Event::StepEnd { replica: r });
        Ok(())
    }

    /// Replica `r`'s step ends: each sampled token is counted (first tokens, finishes, block
    /// boundaries go to the router), update() applies the step, and the next step starts now if
    /// requests are still live.
    fn on_step_end(&mut self, r: usize, now: f64) -> Result<()> {
        let rep = &mut self.replicas[r];
        debug_assert!(rep.scheduled, "replica {r}: a StepEnd it did not queue");
        rep.scheduled = false;
        let plan = &rep.plan;
        let bs = self.config.engine.block_size;
        self.finished_ids.clear();
        for s in plan.scheduled.iter().filter(|s| s.samples) {
            let Some(req) = rep.sched.request(s.slot) else {
                continue;
            };
            let RequestId::Int(row) = req.id else {
                continue;
            };
            let (i, id) = (row as usize, row as u64);
            let count = req.num_output_tokens + 1;
            let target = (self.trace.output_tokens[i] as u64).min(req.max_output_tokens);
            if count == 1 {
                self.out.first_token_time[i] = now;
                rep.queued_prefill = rep.queued_prefill.saturating_sub(req.prompt_tokens);
            }
            if count >= target {
                // Ends here: EOS at the true length, or the cache-capped maximum.
                self.out.finish_time[i] = now;
                self.out.output_tokens[i] = count as i64;
                self.out.preemptions[i] = i64::from(req.num_preemptions);
                let wanted =
                    (self.trace.output_tokens[i] as u64).min(self.config.max_output_tokens);
                if count < wanted {
                    self.out.status[i] = STATUS_TRUNCATED;
                    self.out.reject_reason[i] =
                        truncate_reason(&self.config.engine, req.prompt_tokens, wanted, count);
                } else {
                    self.out.status[i] = STATUS_FINISHED;
                }
                self.num_done += 1;
                if count < req.max_output_tokens {
                    self.finished_ids.push(req.id.clone());
                }
                self.router.on_finish(&id, count)?;
            } else if count == 1
                || blocks_for(req.prompt_tokens + count, bs)
                    != blocks_for(req.prompt_tokens + count - 1, bs)
            {
                // The router's view moves at the first token and at block boundaries.
                self.router.on_progress(&id, count)?;
            }
        }
        rep.sched
            .update(plan.step, plan.scheduler_id, &self.finished_ids, Some(now))?;
        if rep.sched.num_live() > 0 {
            rep.scheduled = true;
            self.queue.push(now, Event::Start { replica: r });
        }
        Ok(())
    }
}

/// Why a request stopped after `count` of the `wanted` output tokens: the cap that bound,
/// the KV cache (`capacity_tokens`) or `max_model_len`, with the numbers.
fn truncate_reason(engine: &SchedulerConfig, prompt: u64, wanted: u64, count: u64) -> String {
    let cache = engine.capacity_tokens();
    match engine.max_model_len {
        Some(mml) if mml < cache => format!(
            "max_model_len: prompt {prompt} + output {wanted} tokens exceed max_model_len={mml}; \
             stopped after {count} output tokens"
        ),
        _ => format!(
            "kv_cache: prompt {prompt} + output {wanted} tokens exceed the KV cache of {cache} tokens; \
             stopped after {count} output tokens"
        ),
    }
}

/// How often (in events) a run calls its `stop` hook.
pub const STOP_CHECK_EVENTS: u64 = 1024;

/// Run the whole trace through the cluster.
///
/// Simulated time must stay within `MAX_TIME` (1e12 s), since every step's end is the
/// engines' `now`. What can be checked before the run is: a row that cannot finish in time
/// even if it ran alone (its arrival plus one step per output token, each step at least the
/// cost model's time for an empty step) is refused up front with `InvalidArgument`
/// (`field = "trace"`, `index` = the row), naming its arrival and the cost model. Otherwise,
/// if queueing pushes a step's end past 1e12 s, the run ends with the same error naming the
/// step's start, its duration, the cost model and the trace's last arrival; no partial
/// result is returned. A `snapshot_interval` giving more than `MAX_SNAPSHOTS` snapshots over
/// the trace's span, or too small to advance the clock, is refused up front (`Config`).
pub fn simulate(trace: TraceView<'_>, config: &SimConfig) -> Result<SimOutput> {
    simulate_until(trace, config, &mut || false)?.ok_or_else(never_stopped)
}

/// [`simulate`], calling `stop` every [`STOP_CHECK_EVENTS`] events: `Ok(None)` if it
/// returned true (the run was abandoned). The bindings check for Ctrl-C here.
pub fn simulate_until(
    trace: TraceView<'_>,
    config: &SimConfig,
    stop: &mut dyn FnMut() -> bool,
) -> Result<Option<SimOutput>> {
    config.validate()?;
    trace.validate()?;
    check_snapshots(trace, config)?;
    check_time_budget(trace, config)?;
    Sim::new(trace, config)?.run(stop)
}

fn never_stopped() -> Error {
    Error::Invariant {
        message: "a simulation stopped that no hook asked to stop".into(),
    }
}

/// Snapshots come every `snapshot_interval` s while rows remain to arrive: refuse an
/// interval giving more than `MAX_SNAPSHOTS` of them over the trace's span, or one too small
/// to move the clock at the trace's last arrival (`t + dt == t`: it would never advance).
fn check_snapshots(trace: TraceView<'_>, config: &SimConfig) -> Result<()> {
    let (Some(dt), Some(&first), Some(&last)) = (
        config.snapshot_interval,
        trace.arrival_time.first(),
        trace.arrival_time.last(),
    ) else {
        return Ok(());
    };
    let count = (last - first) / dt;
    if count > MAX_SNAPSHOTS as f64 || last + dt <= last {
        return Err(Error::Config {
            field: "snapshot_interval",
            value: Some(Value::Float(dt)),
            message: format!(
                "snapshot_interval {dt} s gives {count:.3e} snapshots over the trace's {} s of \
                 arrivals (at most {MAX_SNAPSHOTS}); use an interval of at least {:e} s",
                last - first,
                ((last - first) / MAX_SNAPSHOTS as f64).max(last * f64::EPSILON)
            ),
        });
    }
    Ok(())
}

/// Refuse a trace row that could not finish by `MAX_TIME` even alone on a replica: it needs
/// at least one step per output token, each at least the cost model's empty-step time (every
/// cost term is non-negative, so no step is shorter).
fn check_time_budget(trace: TraceView<'_>, config: &SimConfig) -> Result<()> {
    let min_step = config.cost.step_time(&StepShape::default());
    for (i, (&a, &out)) in trace
        .arrival_time
        .iter()
        .zip(trace.output_tokens)
        .enumerate()
    {
        let steps = (out.max(1) as u64).min(config.max_output_tokens) as f64;
        let earliest = a + steps * min_step;
        if earliest > MAX_TIME || !earliest.is_finite() {
            return Err(Error::InvalidArgument {
                field: "trace",
                value: None,
                index: Some(i as u64),
                message: format!(
                    "trace row {i} cannot finish within the simulated-time limit of 1e12 s \
                     (MAX_TIME): it arrives at {a} s and needs {steps} steps of at least \
                     {min_step} s each under the cost model {}, so it ends no earlier than \
                     {earliest} s",
                    config.cost.describe()
                ),
            });
        }
    }
    Ok(())
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
    measure_capacity_until(trace, config, max_requests, &mut || false)?.ok_or_else(never_stopped)
}

/// [`measure_capacity`] with a `stop` hook, as [`simulate_until`].
pub fn measure_capacity_until(
    trace: TraceView<'_>,
    config: &SimConfig,
    max_requests: usize,
    stop: &mut dyn FnMut() -> bool,
) -> Result<Option<f64>> {
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
    let Some(res) = simulate_until(
        TraceView {
            arrival_time: &arrival,
            prompt_tokens: &prompt,
            output_tokens: &output,
            predicted_output_tokens: None,
            block_ids: None,
        },
        &cfg,
        stop,
    )?
    else {
        return Ok(None);
    };
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
            return Ok(Some((hi - 1 - lo) as f64 / span));
        }
    }
    Ok(Some(k as f64 / done[k - 1].max(f64::MIN_POSITIVE)))
}

#[cfg(test)]
mod tests;
