//! The engine scheduler: owns the live requests, the GPU and CPU block pools and the
//! policy's waiting queue, and decides each step (DESIGN §4).
//!
//! One step is `schedule(now)` (returns a [`StepPlan`]) then `update(finished, now)`:
//!
//! 1. `schedule_running`: running requests, in admission order, get their next prefill chunk
//!    or one decode token within the token budget. If the blocks for those tokens are not
//!    free, the policy picks victims among the running requests not yet scheduled this step
//!    (the asking one included) until they are.
//! 2. `schedule_swapped`, if nothing was preempted: swapped requests come back, oldest first,
//!    while seats, budget and blocks above the watermark allow.
//! 3. `schedule_waiting`, if nothing was preempted and nothing is still swapped: waiting
//!    requests are admitted in policy order while seats, budget and blocks allow; stop at the
//!    first that does not fit.
//!
//! The Python reference (`halffull/reference/scheduler.py`) is the specification, with the
//! same three phase methods in the same order; this module must produce identical plans.
//! Debug builds check every invariant after each successful mutation.
//!
//! `semantics = "vllm_v1"` (vLLM 0.33's V1 `Scheduler`, `/work/wt/vllm/SPEC.md`) keeps the
//! same three phases; what differs is chosen once, at construction, as [`Rules`] plus the
//! pool's release order and the policy's queue:
//!
//! | | `halffull` | `vllm_v1` |
//! |---|---|---|
//! | blocks | all `N` usable, FIFO reuse | block 0 null, `N - 1` usable, LIFO reuse (SPEC §5) |
//! | admission ([`Admission`]) | whole sequence allocated | first chunk allocated; the whole sequence (or with `reserve_full_prompt = false` just the chunk) must fit above the watermark (§4.2) |
//! | victims ([`VictimScope`]) | running not yet scheduled | all running; one already scheduled is un-scheduled (§3.1) |
//! | preempted requests | back by the policy's key | fcfs: head of the deque (§3.3) |
//! | swap | yes | no (config refuses it), so phase 2 never runs |
//!
//! Both: `max_model_len` caps a request's output (prompt + outputs reaches it: finished), and
//! `long_prefill_token_threshold` caps every request's tokens per step unless the step starts
//! with at most one live request.

mod blocks;
mod kinetic;
mod policy;
mod request;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Semantics;
use crate::hash::BlockHash;
use blocks::BlockPool;
pub use blocks::{blocks_for, BlockId, PrefixCacheStats, BYTES_PER_BLOCK, BYTES_PER_CACHED_BLOCK};
use policy::Policy;
pub use policy::{policy_names, F64};
pub use request::{NewRequest, Request, RequestId, Status};

use crate::error::{Error, Result, Value};

pub use crate::config::{LarryLoad, PolicyKind, PreemptMode, SchedulerConfig};
use crate::limits::check_count;
pub use crate::limits::check_time;

/// One scheduled request of a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scheduled {
    pub slot: u32,
    pub num_new_tokens: u64,
    /// Tokens already in the cache before this step (position of the first new token).
    pub num_computed_tokens: u64,
    pub is_prefill: bool,
    /// The step computes the request's last known token, so it samples one token.
    pub samples: bool,
    /// Tokens that came from the prefix cache at this admission (0 unless just admitted
    /// with a hit): `num_computed_tokens` already counts them.
    pub num_cached_tokens: u64,
}

/// What one step runs. Requests are named by slot (valid until the plan's `update`; use
/// [`Scheduler::request_id`]); `finished` holds ids, as their slots are already free.
#[derive(Debug, Clone, Default)]
pub struct StepPlan {
    pub step: u64,
    pub scheduler_id: u64,
    pub scheduled: Vec<Scheduled>,
    pub admitted: Vec<u32>,
    pub preempted: Vec<(u32, PreemptMode)>,
    /// (slot, rows of (GPU block, CPU block)) to copy out, before anything else.
    pub swapped_out: Vec<(u32, Vec<(BlockId, BlockId)>)>,
    /// (slot, rows of (CPU block, GPU block)) to copy in, after the swap-outs.
    pub swapped_in: Vec<(u32, Vec<(BlockId, BlockId)>)>,
    /// (slot, blocks appended to its table); admitted and swapped-in tables start empty.
    pub new_blocks: Vec<(u32, Vec<BlockId>)>,
    /// Ids that finished or were aborted since the previous plan.
    pub finished: Vec<RequestId>,
}

struct Pending {
    step: u64,
    /// (slot, seq, new tokens): seq guards against a slot freed by abort and reused.
    scheduled: Vec<(u32, u64, u64)>,
}

/// The running state of one `schedule` call, handed from phase to phase.
struct Step {
    /// Tokens still available this step.
    budget: u64,
    /// `long_prefill_token_threshold` for this step (0: off).
    threshold: u64,
    plan: StepPlan,
    /// Becomes [`Pending::scheduled`].
    pending: Vec<(u32, u64, u64)>,
}

impl Step {
    /// Tokens a request with `remaining` uncomputed tokens runs this step: capped by the
    /// threshold, then by the budget.
    #[inline]
    fn chunk(&self, remaining: u64) -> u64 {
        let n = if self.threshold > 0 {
            remaining.min(self.threshold)
        } else {
            remaining
        };
        n.min(self.budget)
    }

    /// Take back a request scheduled earlier this step (vLLM V1's priority preemption of an
    /// already scheduled request): its tokens return to the budget and its entries leave the
    /// plan. Its blocks are freed with the rest of its table by the caller.
    fn unschedule(&mut self, slot: u32) {
        if let Some(k) = self.pending.iter().position(|&(s, _, _)| s == slot) {
            let (_, _, n) = self.pending.remove(k);
            self.plan.scheduled.remove(k);
            self.budget += n;
        }
        self.plan.new_blocks.retain(|(s, _)| *s != slot);
    }

    /// Run `n` new tokens of the request in `slot` this step.
    #[inline]
    fn schedule(&mut self, slot: u32, r: &Request, n: u64) {
        self.plan.scheduled.push(scheduled_entry(slot, r, n));
        self.pending.push((slot, r.seq, n));
        self.budget -= n;
    }
}

/// How admission allocates, chosen once from the semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// halffull: blocks for every known token at once.
    WholeSequence,
    /// vLLM V1 (`allocate_slots`): blocks for the first chunk only; `reserve_full` (vLLM's
    /// `scheduler_reserve_full_isl`) also demands that the whole sequence would fit.
    PerChunk { reserve_full: bool },
}

impl Admission {
    /// For a request of `num_tokens` known tokens whose table will hold `upto` tokens after
    /// this step (its prefix-cache hit plus its first chunk): (the table's size the check
    /// counts, the table's size after allocation), both in blocks, hit blocks included.
    ///
    /// ```text
    ///   tokens  [== hit ==|#### chunk n ####|........ rest of the sequence ........]
    ///                      upto = hit + n
    ///   WholeSequence:            check = alloc = ceil(num_tokens / bs)    (never a hit)
    ///   PerChunk, reserve_full:   check = ceil(num_tokens / bs), alloc = ceil(upto / bs)
    ///   PerChunk, !reserve_full:  check = alloc = ceil(upto / bs)
    /// ```
    /// (vLLM caps both at `max_model_len`, which a waiting request never reaches.)
    #[inline]
    fn blocks(self, num_tokens: u64, upto: u64, bs: u64) -> (u64, u64) {
        match self {
            Admission::WholeSequence => {
                let b = blocks_for(num_tokens, bs);
                (b, b)
            }
            Admission::PerChunk { reserve_full } => {
                let chunk = blocks_for(upto, bs);
                let check = if reserve_full {
                    blocks_for(num_tokens, bs)
                } else {
                    chunk
                };
                (check, chunk)
            }
        }
    }

    /// Does a reserving policy (`no_preempt`) also pay the block check? In V1 yes (its chunk
    /// is allocated like any other); halffull's reservation already covers the allocation.
    fn reserving_also_checks_blocks(self) -> bool {
        matches!(self, Admission::PerChunk { .. })
    }
}

/// Which running requests a policy may pick a victim from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VictimScope {
    /// `running[i..]`: not yet scheduled this step, the asking one first (halffull).
    Unscheduled,
    /// All of `running` (vLLM V1); a victim already scheduled this step is un-scheduled.
    AllRunning,
}

/// The rules that differ between the semantics, chosen once.
#[derive(Debug, Clone, Copy)]
struct Rules {
    admission: Admission,
    victims: VictimScope,
}

impl Rules {
    fn new(cfg: &SchedulerConfig) -> Self {
        match cfg.semantics {
            Semantics::Halffull => Rules {
                admission: Admission::WholeSequence,
                victims: VictimScope::Unscheduled,
            },
            Semantics::VllmV1 => Rules {
                admission: Admission::PerChunk {
                    reserve_full: cfg.reserve_full_prompt,
                },
                victims: VictimScope::AllRunning,
            },
        }
    }
}

static SCHEDULER_IDS: AtomicU64 = AtomicU64::new(1);

pub struct Scheduler {
    cfg: SchedulerConfig,
    rules: Rules,
    policy: Box<dyn Policy>,
    id: u64,
    gpu: BlockPool,
    cpu: BlockPool,
    slab: Vec<Option<Request>>,
    free_slots: Vec<u32>,
    index: HashMap<RequestId, u32>,
    running: Vec<u32>,
    /// Oldest first: (arrival, seq, slot).
    swapped: BTreeSet<(F64, u64, u32)>,
    now: f64,
    num_steps: u64,
    num_preemptions: u64,
    /// no_preempt: the sum of running requests' full reservations, in blocks.
    reserved_blocks: u64,
    next_seq: u64,
    pending: Option<Pending>,
    aborted_in_step: Vec<RequestId>,
    ended_since_plan: Vec<RequestId>,
    last_plan_tokens: u64,
    last_plan_seqs: u64,
    // Scratch buffers reused across steps.
    victims_scratch: Vec<u32>,
    hits_scratch: Vec<BlockId>,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Result<Self> {
        cfg.validate()?;
        let policy = policy::make_policy(&cfg);
        let caching = cfg.semantics == Semantics::VllmV1 && cfg.enable_prefix_caching;
        blocks::check_pools_fit(cfg.num_gpu_blocks, cfg.num_cpu_blocks, caching)?;
        let gpu = match cfg.semantics {
            Semantics::Halffull => BlockPool::new(cfg.num_gpu_blocks as u32, "num_gpu_blocks")?,
            Semantics::VllmV1 => BlockPool::new_v1(
                cfg.num_gpu_blocks as u32,
                cfg.enable_prefix_caching,
                "num_gpu_blocks",
            )?,
        };
        Ok(Scheduler {
            rules: Rules::new(&cfg),
            gpu,
            cpu: BlockPool::new(cfg.num_cpu_blocks as u32, "num_cpu_blocks")?,
            policy,
            id: SCHEDULER_IDS.fetch_add(1, Ordering::Relaxed),
            slab: Vec::new(),
            free_slots: Vec::new(),
            index: HashMap::new(),
            running: Vec::new(),
            swapped: BTreeSet::new(),
            now: 0.0,
            num_steps: 0,
            num_preemptions: 0,
            reserved_blocks: 0,
            next_seq: 0,
            pending: None,
            aborted_in_step: Vec::new(),
            ended_since_plan: Vec::new(),
            last_plan_tokens: 0,
            last_plan_seqs: 0,
            victims_scratch: Vec::new(),
            hits_scratch: Vec::new(),
            cfg,
        })
    }

    // ---------------------------------------------------------------- read-only views

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }
    pub fn now(&self) -> f64 {
        self.now
    }
    pub fn num_steps(&self) -> u64 {
        self.num_steps
    }
    pub fn num_preemptions(&self) -> u64 {
        self.num_preemptions
    }
    pub fn num_waiting(&self) -> usize {
        self.policy.len()
    }
    pub fn num_running(&self) -> usize {
        self.running.len()
    }
    pub fn num_swapped(&self) -> usize {
        self.swapped.len()
    }
    pub fn num_live(&self) -> usize {
        self.index.len()
    }
    pub fn num_free_gpu_blocks(&self) -> usize {
        self.gpu.num_free()
    }
    pub fn num_free_cpu_blocks(&self) -> usize {
        self.cpu.num_free()
    }
    /// The GPU free queue, head (allocated next) to tail.
    pub fn free_gpu_block_ids(&self) -> Vec<BlockId> {
        self.gpu.free_blocks().collect()
    }
    /// The prefix cache's counters since construction (all 0 with caching off).
    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        *self.gpu.stats()
    }
    /// How many leading `hashes` the prefix cache holds now (free cached blocks included):
    /// what a request with these blocks would hit, before the hit cap. A router's view of
    /// this replica. 0 with caching off.
    pub fn prefix_hit_blocks(&self, hashes: &[BlockHash]) -> usize {
        self.gpu.count_hits(hashes)
    }
    /// Requests holding GPU block `block` (0 for a free block).
    pub fn gpu_block_ref_count(&self, block: BlockId) -> u32 {
        self.gpu.ref_count(block)
    }
    /// Forget every cached hash, as vLLM's `reset_prefix_cache` does: only when no GPU block
    /// is held (returns false and changes nothing otherwise). The free queue keeps its order.
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.gpu.num_free() != self.gpu.num_usable() as usize {
            return false;
        }
        self.gpu.clear_cache();
        #[cfg(debug_assertions)]
        self.debug_assert_invariants("reset_prefix_cache");
        true
    }
    pub fn request(&self, slot: u32) -> Option<&Request> {
        self.slab.get(slot as usize)?.as_ref()
    }
    pub fn request_id(&self, slot: u32) -> Option<&RequestId> {
        self.request(slot).map(|r| &r.id)
    }
    pub(crate) fn slot_of(&self, id: &RequestId) -> Option<u32> {
        self.index.get(id).copied()
    }
    pub fn get(&self, id: &RequestId) -> Result<&Request> {
        self.slot_of(id)
            .and_then(|s| self.request(s))
            .ok_or_else(|| Error::UnknownRequest { id: id.clone() })
    }

    // ---------------------------------------------------------------- requests

    /// Queue a request. On error nothing changes. Returns its slot.
    pub fn add_request(&mut self, new: NewRequest) -> Result<u32> {
        let cfg = &self.cfg;
        let prompt = check_count("prompt_tokens", new.prompt_tokens, 1)?;
        let max_out = check_count("max_output_tokens", new.max_output_tokens, 1)?;
        let arrival = match new.arrival_time {
            None => self.now,
            Some(t) => check_time("arrival_time", t)?,
        };
        if let Some(p) = new.predicted_output_tokens {
            check_count("predicted_output_tokens", p, 0)?;
        }
        if let Some(t) = new.true_output_tokens {
            check_count("true_output_tokens", t, 1)?;
        }
        if self.index.contains_key(&new.id) {
            return Err(Error::DuplicateRequest { id: new.id });
        }
        let full_blocks = prompt / cfg.block_size;
        if new.block_hashes.len() as u64 > full_blocks {
            return Err(Error::InvalidArgument {
                field: "block_hashes",
                value: Some(crate::error::Value::from(new.block_hashes.len() as u64)),
                index: None,
                message: format!(
                    "request {}: {} block hashes for a prompt of {prompt} tokens, which has {full_blocks} full \
                     blocks of {}",
                    new.id,
                    new.block_hashes.len(),
                    cfg.block_size
                ),
            });
        }
        self.check_fits(&new.id, prompt, max_out)?;
        // The effective maximum: prompt + outputs fit the cache and stop at max_model_len.
        let mut max_out = max_out.min(cfg.capacity_tokens() - prompt);
        if let Some(mml) = cfg.max_model_len {
            max_out = max_out.min(mml - prompt);
        }
        let req = Request {
            id: new.id.clone(),
            seq: self.next_seq,
            arrival_time: arrival,
            prompt_tokens: prompt,
            max_output_tokens: max_out,
            priority: new.priority,
            predicted_output_tokens: new.predicted_output_tokens,
            true_output_tokens: new.true_output_tokens,
            status: Status::Waiting,
            num_output_tokens: 0,
            num_computed_tokens: 0,
            num_preemptions: 0,
            block_table: Vec::new(),
            cpu_blocks: Vec::new(),
            block_hashes: if self.gpu.caching() {
                new.block_hashes
            } else {
                Vec::new()
            },
            num_cached_blocks: 0,
        };
        self.next_seq += 1;
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slab.push(None);
                (self.slab.len() - 1) as u32
            }
        };
        self.policy.push(slot, &req);
        self.slab[slot as usize] = Some(req);
        self.index.insert(new.id, slot);
        #[cfg(debug_assertions)]
        self.debug_assert_invariants("add_request");
        Ok(slot)
    }

    /// Could a request of `prompt` tokens declaring `max_output_tokens` ever be admitted?
    /// `RequestTooLarge` (capacity and need in blocks) if its prompt plus one token exceeds
    /// the GPU cache (its usable blocks), or `max_model_len` (vLLM's input check: no room
    /// for one output token; `capacity_blocks` is then `max_model_len` in blocks), or, under a
    /// policy reserving the full output (`no_preempt`), its prompt plus the declared
    /// `max_output_tokens` exceeds the cache. The rule `add_request` applies; a router or
    /// simulator can ask it before dispatching.
    pub fn check_fits(&self, id: &RequestId, prompt: u64, max_output_tokens: u64) -> Result<()> {
        // Public: the counts may come unchecked (a fuzzed u64::MAX made `prompt + 1` wrap).
        check_count("prompt_tokens", prompt, 1)?;
        check_count("max_output_tokens", max_output_tokens, 1)?;
        let cfg = &self.cfg;
        let usable = cfg.usable_gpu_blocks();
        let too_large = |need: u64, capacity: u64, message: String| Error::RequestTooLarge {
            id: id.clone(),
            need_blocks: need,
            capacity_blocks: capacity,
            message,
        };
        let need = blocks_for(prompt + 1, cfg.block_size);
        if prompt + 1 > cfg.capacity_tokens() {
            return Err(too_large(
                need,
                usable,
                format!(
                    "request {id}: prompt of {prompt} tokens plus one output token needs {need} blocks of {} tokens; \
                     the GPU cache has {usable}",
                    cfg.block_size
                ),
            ));
        }
        if let Some(mml) = cfg.max_model_len {
            if prompt + 1 > mml {
                return Err(too_large(
                    need,
                    blocks_for(mml, cfg.block_size),
                    format!(
                        "request {id}: prompt of {prompt} tokens leaves no room for one output token under \
                         max_model_len={mml}"
                    ),
                ));
            }
        }
        if self.policy.reserves_full_output() {
            let out = max_output_tokens;
            let need = blocks_for(prompt + out, cfg.block_size);
            if need > usable {
                return Err(too_large(
                    need,
                    usable,
                    format!(
                        "request {id}: no_preempt reserves prompt + max_output_tokens = {} tokens = {need} blocks; \
                         the GPU cache has {usable}",
                        prompt + out
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Prefix caching: name the request's next full blocks with the caller's hashes (vLLM's
    /// `Request.block_hashes` as output tokens fill blocks), so that generated blocks are found
    /// by content, as the engine names them, instead of by the request's own hashes.
    /// `start` must be the number of hashes the request holds now (the caller's so far, or
    /// the caller is late: the scheduler already named block `start` itself), and the blocks
    /// must be full with known tokens. No-op with caching off. On error nothing changes.
    pub fn extend_block_hashes(
        &mut self,
        id: &RequestId,
        start: u64,
        hashes: &[BlockHash],
    ) -> Result<()> {
        let bs = self.cfg.block_size;
        let caching = self.gpu.caching();
        let slot = self
            .slot_of(id)
            .ok_or_else(|| Error::UnknownRequest { id: id.clone() })?;
        let r = slot_mut(&mut self.slab, slot)?;
        if !caching {
            return Ok(());
        }
        let held = r.block_hashes.len() as u64;
        if start != held {
            return Err(Error::InvalidArgument {
                field: "start",
                value: Some(Value::from(start)),
                index: None,
                message: format!(
                    "request {id}: hashes must continue at block {held} (it holds {held} block hashes), not {start}"
                ),
            });
        }
        let full = r.num_tokens() / bs;
        if held + hashes.len() as u64 > full {
            return Err(Error::InvalidArgument {
                field: "block_hashes",
                value: Some(Value::from(hashes.len() as u64)),
                index: None,
                message: format!(
                    "request {id}: {} more block hashes after {held}, but its {} known tokens fill {full} blocks of {bs}",
                    hashes.len(),
                    r.num_tokens()
                ),
            });
        }
        r.block_hashes.extend_from_slice(hashes);
        Ok(())
    }

    /// End a live request now, wherever it is; its blocks are freed at once.
    pub fn abort(&mut self, id: &RequestId) -> Result<()> {
        let slot = self
            .slot_of(id)
            .ok_or_else(|| Error::UnknownRequest { id: id.clone() })?;
        let Some(mut req) = self.slab.get_mut(slot as usize).and_then(Option::take) else {
            return Err(Error::UnknownRequest { id: id.clone() });
        };
        match req.status {
            Status::Waiting => self.policy.remove(slot, &req),
            Status::Running => {
                self.running.retain(|&s| s != slot);
                if self.policy.reserves_full_output() {
                    self.reserved_blocks -= self.max_blocks(&req);
                }
            }
            Status::Swapped => {
                self.swapped.remove(&(F64(req.arrival_time), req.seq, slot));
            }
            _ => {}
        }
        self.gpu.release(&req.block_table);
        self.cpu.release(&req.cpu_blocks);
        req.status = Status::Aborted;
        self.index.remove(id);
        self.free_slots.push(slot);
        self.ended_since_plan.push(req.id.clone());
        if self.pending.is_some() {
            self.aborted_in_step.push(req.id);
        }
        #[cfg(debug_assertions)]
        self.debug_assert_invariants("abort");
        Ok(())
    }

    // ---------------------------------------------------------------- the step

    /// Decide this step. `now = None` keeps the clock.
    pub fn schedule(&mut self, now: Option<f64>) -> Result<StepPlan> {
        if let Some(p) = &self.pending {
            return Err(Error::StalePlan {
                message: format!("step {} is still pending: call update(plan) first", p.step),
                pending_step: Some(p.step),
            });
        }
        let now = self.check_clock(now)?;
        self.now = now;
        // vLLM ignores the threshold in a step that starts with at most one live request.
        let threshold = if self.index.len() <= 1 {
            0
        } else {
            self.cfg.long_prefill_token_threshold
        };
        let mut step = Step {
            budget: self.cfg.max_num_batched_tokens,
            threshold,
            plan: StepPlan {
                scheduler_id: self.id,
                ..StepPlan::default()
            },
            pending: Vec::with_capacity(self.running.len() + 8),
        };

        self.schedule_running(&mut step)?;
        if step.plan.preempted.is_empty() {
            self.schedule_swapped(&mut step)?;
            if self.swapped.is_empty() {
                self.schedule_waiting(&mut step)?;
            }
        }

        let Step {
            budget,
            mut plan,
            pending,
            ..
        } = step;
        self.num_steps += 1;
        plan.step = self.num_steps;
        plan.finished = std::mem::take(&mut self.ended_since_plan);
        self.last_plan_tokens = self.cfg.max_num_batched_tokens - budget;
        self.last_plan_seqs = plan.scheduled.len() as u64;
        self.pending = Some(Pending {
            step: plan.step,
            scheduled: pending,
        });
        #[cfg(debug_assertions)]
        self.debug_assert_invariants("schedule");
        Ok(plan)
    }

    /// Phase 1, running requests: each, in admission order, gets its next prefill chunk or
    /// one decode token within the budget (and the threshold). When the blocks for them are
    /// not free, the policy preempts victims among the running requests not yet scheduled
    /// (`running[i..]`, the asking one included; in `vllm_v1` among all running, a victim
    /// already scheduled this step being un-scheduled) until they are; if it picks the asking
    /// one, that one is dropped from this step and the next request moves up to index `i`.
    /// (vLLM's FCFS `break` after self-preemption is the same: its victim is the last.)
    fn schedule_running(&mut self, step: &mut Step) -> Result<()> {
        let bs = self.cfg.block_size;
        let mut i = 0;
        while i < self.running.len() && step.budget > 0 {
            let slot = self.running[i];
            let r = self.req(slot)?;
            let n = step.chunk(r.num_tokens() - r.num_computed_tokens);
            let held = r.block_table.len();
            let need = blocks_for(r.num_computed_tokens + n, bs).saturating_sub(held as u64);
            let mut preempted_self = false;
            while need as usize > self.gpu.num_free() {
                let victim = self.choose_victim(i, slot)?;
                if self.rules.victims == VictimScope::AllRunning
                    && self.running[..i].contains(&victim)
                {
                    step.unschedule(victim);
                    i -= 1;
                }
                let mode = self.preempt(victim, &mut step.plan)?;
                step.plan.preempted.push((victim, mode));
                if victim == slot {
                    preempted_self = true;
                    break;
                }
            }
            if preempted_self {
                continue;
            }
            let r = slot_mut(&mut self.slab, slot)?;
            if need > 0 {
                allocate(&mut self.gpu, need, &mut r.block_table, "a step")?;
                step.plan
                    .new_blocks
                    .push((slot, r.block_table[held..].to_vec()));
            }
            if self.gpu.caching() {
                let upto = r.num_computed_tokens + n;
                cache_full_blocks(&mut self.gpu, r, upto, bs);
            }
            step.schedule(slot, r, n);
            i += 1;
        }
        Ok(())
    }

    /// Phase 2, swap-in (only if phase 1 preempted nothing): swapped requests come back,
    /// oldest first, while seats, budget and blocks above the watermark allow. The GPU table
    /// is allocated whole, for the CPU blocks and this step's tokens.
    fn schedule_swapped(&mut self, step: &mut Step) -> Result<()> {
        let bs = self.cfg.block_size;
        while let Some(&(arrival, seq, slot)) = self.swapped.first() {
            if self.running.len() as u64 >= self.cfg.max_num_seqs || step.budget == 0 {
                break;
            }
            let r = self.req(slot)?;
            let n = step.chunk(r.num_tokens() - r.num_computed_tokens);
            let total = (r.cpu_blocks.len() as u64).max(blocks_for(r.num_computed_tokens + n, bs));
            if !self.fits(total) {
                break;
            }
            self.swapped.remove(&(arrival, seq, slot));
            let r = slot_mut(&mut self.slab, slot)?;
            r.block_table.clear();
            allocate(&mut self.gpu, total, &mut r.block_table, "swap-in")?;
            let mapping: Vec<(BlockId, BlockId)> = r
                .cpu_blocks
                .iter()
                .copied()
                .zip(r.block_table.iter().copied())
                .collect();
            self.cpu.release(&r.cpu_blocks);
            r.cpu_blocks.clear();
            r.status = Status::Running;
            step.plan.swapped_in.push((slot, mapping));
            step.plan.new_blocks.push((slot, r.block_table.clone()));
            step.schedule(slot, r, n);
            self.running.push(slot);
        }
        Ok(())
    }

    /// Phase 3, admission (only if nothing was preempted and nothing is still swapped):
    /// waiting requests are admitted in policy order while seats, budget and blocks allow;
    /// stop at the first that does not fit. Blocks are allocated by the [`Admission`] rule
    /// (halffull: all its known tokens; vllm_v1: the first chunk); `no_preempt` checks its
    /// reservation of prompt + `max_output_tokens` instead (in vllm_v1: as well).
    ///
    /// With prefix caching, the request starts from its longest cached prefix of full
    /// blocks, at most `num_tokens - 1` tokens so that one is computed (vLLM's
    /// `get_computed_blocks`): it takes a reference on those blocks, and the check counts
    /// only the blocks it still needs, plus the hit blocks that are free now (taking them
    /// removes them from the free queue).
    fn schedule_waiting(&mut self, step: &mut Step) -> Result<()> {
        let bs = self.cfg.block_size;
        while !self.policy.is_empty()
            && (self.running.len() as u64) < self.cfg.max_num_seqs
            && step.budget > 0
        {
            let mut load = self.policy.len() as u64;
            if self.cfg.larry_load == LarryLoad::Outstanding {
                load += (self.running.len() + self.swapped.len()) as u64;
            }
            let Some(slot) = self.policy.peek_at(load, self.now) else {
                break;
            };
            let mut hits = std::mem::take(&mut self.hits_scratch);
            hits.clear();
            if self.gpu.caching() {
                let r = slot_mut(&mut self.slab, slot)?;
                let max_hit_blocks = ((r.num_tokens() - 1) / bs) as usize;
                self.gpu
                    .lookup_into(r.hashes_upto(max_hit_blocks), &mut hits);
            }
            let admitted = self.admit(step, slot, &hits);
            self.hits_scratch = hits;
            if !admitted? {
                break;
            }
        }
        Ok(())
    }

    /// Admit the waiting request in `slot` with the cached blocks `hits` if it fits (false:
    /// it does not, and nothing changed).
    fn admit(&mut self, step: &mut Step, slot: u32, hits: &[BlockId]) -> Result<bool> {
        let bs = self.cfg.block_size;
        let r = self.req(slot)?;
        let hit_blocks = hits.len() as u64;
        let hit_tokens = hit_blocks * bs;
        let n = step.chunk(r.num_tokens() - hit_tokens);
        let (check, table) = self
            .rules
            .admission
            .blocks(r.num_tokens(), hit_tokens + n, bs);
        let evictable = hits.iter().filter(|&&b| self.gpu.ref_count(b) == 0).count() as u64;
        let check = check - hit_blocks + evictable;
        if self.policy.reserves_full_output() {
            let full = self.max_blocks(r);
            let usable = u64::from(self.gpu.num_usable());
            if full > usable - self.reserved_blocks
                || (self.rules.admission.reserving_also_checks_blocks() && !self.fits(check))
            {
                return Ok(false);
            }
            self.reserved_blocks += full;
        } else if !self.fits(check) {
            return Ok(false);
        }
        let r = slot_mut(&mut self.slab, slot)?;
        self.policy.remove(slot, r);
        self.gpu.touch(hits);
        r.block_table.extend_from_slice(hits);
        allocate(
            &mut self.gpu,
            table - hit_blocks,
            &mut r.block_table,
            "admission",
        )?;
        r.num_computed_tokens = hit_tokens;
        r.num_cached_blocks = hits.len();
        r.status = Status::Running;
        if self.gpu.caching() {
            let queries = r.num_tokens();
            self.gpu
                .stats_mut()
                .record(r.num_preemptions > 0, queries, hit_tokens);
            cache_full_blocks(&mut self.gpu, r, hit_tokens + n, bs);
        }
        step.plan.admitted.push(slot);
        step.plan.new_blocks.push((slot, r.block_table.clone()));
        step.schedule(slot, r, n);
        if let Some(e) = step.plan.scheduled.last_mut() {
            e.num_cached_tokens = hit_tokens;
        }
        self.running.push(slot);
        Ok(true)
    }

    /// Apply what step `step` produced. `finished` names requests that stopped early (EOS);
    /// each must have sampled in this step. Returns the ids that finished, in plan order.
    /// On error nothing changes.
    pub fn update(
        &mut self,
        step: u64,
        scheduler_id: u64,
        finished: &[RequestId],
        now: Option<f64>,
    ) -> Result<Vec<RequestId>> {
        let pending_step = self.pending.as_ref().map(|p| p.step);
        if scheduler_id != self.id || pending_step != Some(step) {
            return Err(Error::StalePlan {
                message: format!(
                    "plan of step {step} is not this scheduler's pending plan (already applied, stale, or from another \
                     scheduler)"
                ),
                pending_step,
            });
        }
        let now = self.check_clock(now)?;
        // Validate everything before changing anything.
        let early = self.early_finishers(step, finished)?;
        let Some(pending) = self.pending.take() else {
            return Err(Error::Invariant {
                message: "pending plan vanished".into(),
            });
        };

        self.now = now;
        let mut ended = Vec::new();
        let mut any_finished = false;
        for &(slot, seq, n) in &pending.scheduled {
            let Some(r) = self.slab.get_mut(slot as usize).and_then(Option::as_mut) else {
                continue;
            };
            if r.seq != seq || r.status != Status::Running {
                continue; // aborted after the plan was made
            }
            r.num_computed_tokens += n;
            if r.num_computed_tokens == r.num_tokens() {
                r.num_output_tokens += 1;
                if r.num_output_tokens >= r.max_output_tokens || early.contains(&slot) {
                    r.status = Status::Finished;
                    any_finished = true;
                }
            }
        }
        if any_finished {
            // Release in plan order (the order the reference reports them in).
            let reserves = self.policy.reserves_full_output();
            for &(slot, seq, _) in &pending.scheduled {
                let done = self
                    .request(slot)
                    .is_some_and(|r| r.seq == seq && r.status == Status::Finished);
                if !done {
                    continue;
                }
                if let Some(r) = self.slab.get_mut(slot as usize).and_then(Option::take) {
                    if reserves {
                        self.reserved_blocks -=
                            blocks_for(r.prompt_tokens + r.max_output_tokens, self.cfg.block_size);
                    }
                    self.gpu.release(&r.block_table);
                    self.index.remove(&r.id);
                    self.free_slots.push(slot);
                    ended.push(r.id);
                }
            }
            let slab = &self.slab;
            self.running
                .retain(|&s| slab.get(s as usize).is_some_and(Option::is_some));
        }
        self.aborted_in_step.clear();
        self.ended_since_plan.extend(ended.iter().cloned());
        #[cfg(debug_assertions)]
        self.debug_assert_invariants("update");
        Ok(ended)
    }

    /// The slots of the live requests that `finished` names (EOS in step `step`), each
    /// checked to have sampled in the pending plan; ids aborted during the step are skipped.
    /// Changes nothing.
    fn early_finishers(&self, step: u64, finished: &[RequestId]) -> Result<Vec<u32>> {
        let scheduled = self
            .pending
            .as_ref()
            .map_or(&[][..], |p| p.scheduled.as_slice());
        let mut early = Vec::with_capacity(finished.len());
        for id in finished {
            if self.aborted_in_step.contains(id) {
                continue;
            }
            let slot = self
                .slot_of(id)
                .ok_or_else(|| Error::UnknownRequest { id: id.clone() })?;
            let sampled = scheduled.iter().any(|&(s, seq, n)| {
                s == slot
                    && self.request(s).is_some_and(|r| {
                        r.seq == seq && r.num_computed_tokens + n == r.num_tokens()
                    })
            });
            if !sampled {
                return Err(Error::InvalidUpdate {
                    id: id.clone(),
                    message: format!(
                        "request {id} did not sample a token in step {step}, so it cannot finish on EOS; use \
                         abort() to end it"
                    ),
                });
            }
            early.push(slot);
        }
        Ok(early)
    }

    // ---------------------------------------------------------------- invariants

    /// Check every invariant of DESIGN §4; the error names the request or block.
    pub fn check_invariants(&self) -> Result<()> {
        let fail = |message: String| Err(Error::Invariant { message });
        let live: Vec<&Request> = self.slab.iter().flatten().collect();
        for (name, pool, gpu) in [("GPU", &self.gpu, true), ("CPU", &self.cpu, false)] {
            // Each block: held by as many tables as its reference count, free iff that count
            // is 0, never both; vLLM's null block neither; shared only with prefix caching.
            let n = pool.num_blocks() as usize;
            let mut holders = vec![0u32; n];
            for r in &live {
                let table = if gpu { &r.block_table } else { &r.cpu_blocks };
                for (j, &b) in table.iter().enumerate() {
                    if b as usize >= n || table[..j].contains(&b) {
                        return fail(format!(
                            "request {} holds {name} block {b} twice or out of range",
                            r.id
                        ));
                    }
                    holders[b as usize] += 1;
                }
            }
            let mut free = vec![false; n];
            let mut num_free = 0usize;
            for b in pool.free_blocks() {
                match free.get_mut(b as usize) {
                    Some(f) if !*f => *f = true,
                    _ => return fail(format!("{name} block {b} is free twice or out of range")),
                }
                num_free += 1;
            }
            for b in 0..n {
                let (h, f, c) = (holders[b], free[b], pool.ref_count(b as BlockId));
                let null = pool.null_block() == Some(b as BlockId);
                if null && (h > 0 || f) {
                    return fail(format!("{name} null block {b} is held or free"));
                }
                if !null && (f == (h > 0) || h != c || (h > 1 && !pool.caching())) {
                    return fail(format!(
                        "{name} block {b}: held by {h} requests, reference count {c}, free {f}"
                    ));
                }
            }
            if num_free != pool.num_free() {
                return fail(format!("{name} free queue length drifted"));
            }
            if let Some(message) = pool.check_cache() {
                return fail(format!("{name} prefix cache: {message}"));
            }
        }
        for r in &live {
            // The leading blocks a request registered are findable under its own hashes.
            let cached = r.num_cached_blocks;
            if cached > r.block_table.len()
                || cached > r.block_hashes.len()
                || (0..cached)
                    .any(|j| self.gpu.block_hash(r.block_table[j]) != Some(r.block_hashes[j]))
            {
                return fail(format!(
                    "request {}: its {cached} cached blocks are not in the cache under its hashes",
                    r.id
                ));
            }
        }
        if live.len() != self.index.len()
            || live.len() != self.policy.len() + self.running.len() + self.swapped.len()
        {
            return fail(format!(
                "{} live requests but {} indexed, {} waiting + {} running + {} swapped",
                live.len(),
                self.index.len(),
                self.policy.len(),
                self.running.len(),
                self.swapped.len()
            ));
        }
        for &slot in &self.running {
            let r = self.req(slot)?;
            if r.status != Status::Running {
                return fail(format!(
                    "request {} is in the running queue with status {}",
                    r.id,
                    r.status.as_str()
                ));
            }
            if (r.block_table.len() as u64) < blocks_for(r.num_computed_tokens, self.cfg.block_size)
            {
                return fail(format!(
                    "running request {} holds {} blocks for {} computed tokens",
                    r.id,
                    r.block_table.len(),
                    r.num_computed_tokens
                ));
            }
            if self.rules.admission != Admission::WholeSequence {
                // Per-chunk allocation: exactly the blocks of computed + scheduled tokens.
                let scheduled = self.pending.as_ref().map_or(0, |p| {
                    p.scheduled
                        .iter()
                        .find(|&&(s, seq, _)| s == slot && seq == r.seq)
                        .map_or(0, |&(_, _, n)| n)
                });
                let want = blocks_for(r.num_computed_tokens + scheduled, self.cfg.block_size);
                if r.block_table.len() as u64 != want {
                    return fail(format!(
                        "running request {} holds {} blocks for {} computed + {scheduled} scheduled tokens \
                         (per-chunk allocation: {want})",
                        r.id,
                        r.block_table.len(),
                        r.num_computed_tokens
                    ));
                }
            }
        }
        for &(_, _, slot) in &self.swapped {
            let r = self.req(slot)?;
            if r.status != Status::Swapped
                || !r.block_table.is_empty()
                || (r.cpu_blocks.len() as u64)
                    < blocks_for(r.num_computed_tokens, self.cfg.block_size)
            {
                return fail(format!(
                    "swapped request {} holds GPU blocks or too few CPU blocks",
                    r.id
                ));
            }
        }
        for r in &live {
            if self
                .index
                .get(&r.id)
                .and_then(|&s| self.request(s))
                .map(|x| x.seq)
                != Some(r.seq)
            {
                return fail(format!("request {} is not indexed by its id", r.id));
            }
            if r.status == Status::Waiting
                && (!r.block_table.is_empty()
                    || !r.cpu_blocks.is_empty()
                    || r.num_computed_tokens != 0)
            {
                return fail(format!(
                    "waiting request {} holds blocks or computed tokens",
                    r.id
                ));
            }
            if r.num_computed_tokens > r.num_tokens() {
                return fail(format!(
                    "request {} has {} computed of {}",
                    r.id,
                    r.num_computed_tokens,
                    r.num_tokens()
                ));
            }
        }
        if self.running.len() as u64 > self.cfg.max_num_seqs {
            return fail(format!(
                "{} running > max_num_seqs {}",
                self.running.len(),
                self.cfg.max_num_seqs
            ));
        }
        if self.last_plan_tokens > self.cfg.max_num_batched_tokens
            || self.last_plan_seqs > self.cfg.max_num_seqs
        {
            return fail("the last plan exceeded the token budget or the seats".into());
        }
        if self.policy.reserves_full_output() {
            let mut reserved = 0;
            for &slot in &self.running {
                reserved += self.max_blocks(self.req(slot)?);
            }
            let usable = u64::from(self.gpu.num_usable());
            if reserved != self.reserved_blocks || reserved > usable {
                return fail(format!(
                    "no_preempt reservations {} (recounted {reserved}) exceed {usable} blocks or drifted",
                    self.reserved_blocks
                ));
            }
            if self.num_preemptions != 0 {
                return fail("no_preempt preempted".into());
            }
        }
        Ok(())
    }

    /// Debug builds check every invariant after each successful mutation, so that
    /// `cargo test` checks them everywhere; release builds (the wheel) pay nothing. The
    /// message names the request or block.
    #[cfg(debug_assertions)]
    fn debug_assert_invariants(&self, after: &str) {
        debug_assert_eq!(
            self.check_invariants(),
            Ok(()),
            "scheduler invariant broken after {after}"
        );
    }

    // ---------------------------------------------------------------- internals

    fn req(&self, slot: u32) -> Result<&Request> {
        self.request(slot).ok_or_else(|| lost(slot))
    }

    fn check_clock(&self, now: Option<f64>) -> Result<f64> {
        match now {
            None => Ok(self.now),
            Some(t) => {
                let t = check_time("now", t)?;
                if t < self.now {
                    return Err(Error::Clock {
                        now: t,
                        clock: self.now,
                    });
                }
                Ok(t)
            }
        }
    }

    /// Admission and swap-in rule: keep the watermark free, unless nothing runs.
    fn fits(&self, blocks: u64) -> bool {
        let free = self.gpu.num_free() as u64;
        if self.running.is_empty() {
            blocks <= free
        } else {
            blocks + self.cfg.watermark_blocks() <= free
        }
    }

    fn max_blocks(&self, r: &Request) -> u64 {
        blocks_for(r.prompt_tokens + r.max_output_tokens, self.cfg.block_size)
    }

    /// The policy's victim among `running[from..]` (`slot`, the asking request, is
    /// `running[from]`).
    fn choose_victim(&mut self, from: usize, slot: u32) -> Result<u32> {
        if !self.policy.preempts() {
            return Err(Error::Invariant {
                message: format!(
                    "{} must never need to preempt (slot {slot})",
                    self.policy.name()
                ),
            });
        }
        let from = match self.rules.victims {
            VictimScope::Unscheduled => from,
            VictimScope::AllRunning => 0,
        };
        self.victims_scratch.clear();
        self.victims_scratch
            .extend_from_slice(&self.running[from..]);
        self.policy
            .choose_victim(&self.victims_scratch, &self.slab)
            .ok_or_else(|| Error::Invariant {
                message: "no victim among running requests".into(),
            })
    }

    fn preempt(&mut self, slot: u32, plan: &mut StepPlan) -> Result<PreemptMode> {
        self.running.retain(|&s| s != slot);
        self.num_preemptions += 1;
        let swap = self.cfg.preemption_mode == PreemptMode::Swap;
        let r = slot_mut(&mut self.slab, slot)?;
        r.num_preemptions += 1;
        if swap && r.block_table.len() <= self.cpu.num_free() {
            let mut cpu_blocks = Vec::with_capacity(r.block_table.len());
            self.cpu.allocate_into(r.block_table.len(), &mut cpu_blocks);
            plan.swapped_out.push((
                slot,
                r.block_table
                    .iter()
                    .copied()
                    .zip(cpu_blocks.iter().copied())
                    .collect(),
            ));
            self.gpu.release(&r.block_table);
            r.block_table.clear();
            r.cpu_blocks = cpu_blocks;
            r.status = Status::Swapped;
            self.swapped.insert((F64(r.arrival_time), r.seq, slot));
            return Ok(PreemptMode::Swap);
        }
        self.gpu.release(&r.block_table);
        r.block_table.clear();
        r.num_cached_blocks = 0;
        r.num_computed_tokens = 0;
        r.status = Status::Waiting;
        self.policy.requeue(slot, r);
        Ok(PreemptMode::Recompute)
    }
}

fn lost(slot: u32) -> Error {
    Error::Invariant {
        message: format!("slot {slot} holds no request"),
    }
}

/// The live request in `slot`, mutably. A free function over the slab alone, so that the
/// caller can hold it while it also borrows the block pools or the policy.
#[inline]
fn slot_mut(slab: &mut [Option<Request>], slot: u32) -> Result<&mut Request> {
    slab.get_mut(slot as usize)
        .and_then(Option::as_mut)
        .ok_or_else(|| lost(slot))
}

/// Append `n` blocks of `pool` to `table`. The caller has checked that they are free, so a
/// failure is a bug, named by `during`.
#[inline]
fn allocate(pool: &mut BlockPool, n: u64, table: &mut Vec<BlockId>, during: &str) -> Result<()> {
    if pool.allocate_into(n as usize, table) {
        Ok(())
    } else {
        Err(Error::Invariant {
            message: format!("GPU blocks vanished during {during}"),
        })
    }
}

/// Register the blocks of `r` that are full once its table holds `upto` tokens and are not
/// registered yet (vLLM's `cache_blocks`, at allocation time, before the KV is computed): a
/// request admitted later in the same step can already hit them.
fn cache_full_blocks(gpu: &mut BlockPool, r: &mut Request, upto: u64, bs: u64) {
    let full = (upto.min(r.num_tokens()) / bs) as usize;
    let from = r.num_cached_blocks;
    if full <= from {
        return;
    }
    r.hashes_upto(full);
    gpu.cache_blocks(&r.block_table[from..full], &r.block_hashes[from..full]);
    r.num_cached_blocks = full;
}

fn scheduled_entry(slot: u32, r: &Request, n: u64) -> Scheduled {
    let c = r.num_computed_tokens;
    Scheduled {
        slot,
        num_new_tokens: n,
        num_computed_tokens: c,
        is_prefill: r.num_output_tokens == 0 || c + 1 < r.num_tokens(),
        samples: c + n == r.num_tokens(),
        num_cached_tokens: 0,
    }
}

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod v1_tests;
