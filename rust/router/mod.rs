//! Cluster load balancers (DESIGN §6): which replica gets a request.
//!
//! State owned here: per replica, a [`ReplicaLoad`] (capacity and load as the router sees
//! it); per live request, its replica and what it was charged there; the sums of finished
//! requests' input and output lengths (SAL's β and the default decode estimate). Each
//! policy ([`policy::POLICIES`]) owns its own state (round-robin pointer, SplitMix64).
//!
//! Load comes in two ways, which mix:
//!
//! ```text
//! (a) bookkeeping   route(id, prompt)        -> waiting += 1, queued_prefill += prompt,
//!                                               remaining_decode += estimate
//!                   on_progress(id, out)     -> first call: waiting -> running,
//!                                               queued_prefill -= prompt;
//!                                               used_blocks: ceil((prompt + out) / block_size);
//!                                               remaining_decode: max(0, estimate - out)
//!                   on_finish(id, out)       -> undoes the request's charges; feeds β
//!                   on_abort(id)             -> undoes the charges; does not feed β
//! (b) snapshots     update_replica(i, ...)   -> overwrites the given fields of replica i;
//!                                               later bookkeeping applies on top (saturating)
//! ```
//!
//! The decode estimate of a request is fixed when it is routed:
//! `min(predicted_output_tokens or round(mean output of finished requests, or the prior),
//!      max_output_tokens if given)`.
//!
//! Prefixes. A request may carry its prompt's chained block hashes ([`crate::hash`]) and, per
//! replica, how many of its leading blocks are cached there (`overlap_blocks`, exact, as a
//! simulator or the engines know it). Every replica's `queued_prefill_uncached_tokens` is
//! charged `prompt - cached tokens` on the chosen replica (cached tokens: `min(overlap ×
//! block_size, prompt)`; 0 when the router cannot tell). The cache-aware policies
//! ([`Policy::prefixes`]) also make the router keep, per replica:
//!
//! ```text
//! record   (all three)   the hashes routed there, LRU, at most max_record_blocks
//!                        (default: the replica's num_gpu_blocks); the overlap when the
//!                        caller gives none = the leading run of the request's hashes in it
//! active   (dynamo_kv)   the blocks its live requests hold: distinct hashes + own blocks,
//!                        own = ceil((prompt + generated) / block_size) - len(hashes)
//! ```
//!
//! A call that returns an error changes nothing (and draws no random numbers). No decision
//! depends on a `HashMap`'s order: the map only answers "which replica holds this request".

pub mod load;
pub mod policy;
pub mod prefix;
pub mod rng;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

use crate::error::Value;
pub use crate::error::{Error, Result};
use crate::hash::BlockHash;
use crate::id::RequestId;
use crate::limits::{self, check_count, Blame};
pub use load::{ReplicaLoad, ReplicaSnapshot, ReplicaSpec};
pub use policy::{
    dynamo_cost, llumnix_freeness, make_policy, make_policy_with, policy_names, sal_start_delay,
    sal_uncached_start_delay, softmax_pick, Cluster, Policy, PolicyInfo, PolicyParams, PrefixUse,
    RouteRequest, POLICIES,
};
pub use prefix::{ActiveBlocks, PrefixRecords};
pub use rng::SplitMix64;

pub use crate::limits::{MAX_COUNT, MAX_REPLICAS};

/// A request id type the router can key on; errors carry it as a [`RequestId`].
pub trait RequestKey: Hash + Eq + fmt::Display {
    fn request_id(&self) -> RequestId;
}

impl RequestKey for RequestId {
    fn request_id(&self) -> RequestId {
        self.clone()
    }
}

/// The simulator keys requests by trace row.
impl RequestKey for u64 {
    fn request_id(&self) -> RequestId {
        RequestId::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

/// How to build a [`Router`].
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// A name from [`policy_names`].
    pub policy: String,
    /// Seeds `random` and `power_of_two`.
    pub seed: u64,
    /// One entry per replica.
    pub replicas: Vec<ReplicaSpec>,
    /// Fixes SAL's β (KV tokens a running request frees per iteration); `None` learns it as
    /// `(Σ input + Σ output) / Σ output` over finished requests.
    pub beta: Option<f64>,
    /// Mean input and output lengths assumed until a request with output has finished.
    pub prior_input_tokens: u64,
    pub prior_output_tokens: u64,
    /// The cache-aware policies' thresholds and weights.
    pub params: PolicyParams,
    /// Cap on each replica's prefix record, in blocks; `None`: the replica's
    /// `num_gpu_blocks` (the record stands for what the replica can cache).
    pub max_record_blocks: Option<u64>,
}

impl RouterConfig {
    /// `num_replicas` identical replicas of [`ReplicaSpec::default`], seed 0, learned β.
    pub fn new(policy: &str, num_replicas: usize) -> Self {
        RouterConfig {
            policy: policy.to_string(),
            seed: 0,
            replicas: vec![ReplicaSpec::default(); num_replicas],
            beta: None,
            prior_input_tokens: 1024,
            prior_output_tokens: 256,
            params: PolicyParams::default(),
            max_record_blocks: None,
        }
    }

    fn validate(&self) -> Result<()> {
        make_policy(&self.policy, self.seed)?;
        let n = self.replicas.len();
        if n == 0 || n > MAX_REPLICAS {
            return Err(Error::Config {
                field: "num_replicas",
                value: Some(Value::from(n as u64)),
                message: format!("num_replicas must be in [1, {MAX_REPLICAS}], got {n}"),
            });
        }
        for spec in &self.replicas {
            check_config_count("num_gpu_blocks", spec.num_gpu_blocks)?;
            check_config_count("block_size", spec.block_size)?;
            check_config_count("max_num_batched_tokens", spec.max_num_batched_tokens)?;
        }
        if let Some(beta) = self.beta {
            if !(beta.is_finite() && beta > 0.0 && beta <= 1e12) {
                return Err(Error::Config {
                    field: "beta",
                    value: Some(Value::Float(beta)),
                    message: format!("beta must be finite and in (0, 1e12], got {beta}"),
                });
            }
        }
        check_config_count("prior_input_tokens", self.prior_input_tokens)?;
        check_config_count("prior_output_tokens", self.prior_output_tokens)?;
        let p = &self.params;
        check_config_float("cache_threshold", p.cache_threshold, 0.0, 1.0)?;
        limits::count_in(
            Blame::Config,
            "balance_abs_threshold",
            &Value::from(p.balance_abs_threshold),
            0,
            MAX_COUNT,
        )?;
        check_config_float("balance_rel_threshold", p.balance_rel_threshold, 0.0, 1e12)?;
        check_config_float("overlap_score_weight", p.overlap_score_weight, 0.0, 1e12)?;
        check_config_float("router_temperature", p.router_temperature, 0.0, 1e12)?;
        if let Some(cap) = self.max_record_blocks {
            check_config_count("max_record_blocks", cap)?;
        }
        Ok(())
    }

    /// The prefix record's cap on replica `spec`.
    fn record_capacity(&self, spec: &ReplicaSpec) -> u64 {
        self.max_record_blocks.unwrap_or(spec.num_gpu_blocks)
    }
}

fn check_config_float(field: &'static str, value: f64, lo: f64, hi: f64) -> Result<f64> {
    limits::float_in(Blame::Config, field, &Value::Float(value), lo, hi, false)
}

fn check_config_count(field: &'static str, value: u64) -> Result<()> {
    limits::count_in(Blame::Config, field, &Value::from(value), 1, MAX_COUNT).map(|_| ())
}

/// The block size every replica shares, which block hashes are taken at; `field` names the
/// argument that needs it.
pub fn common_block_size(replicas: &[ReplicaLoad], field: &'static str) -> Result<u64> {
    let first = replicas.first().map_or(1, |r| r.block_size);
    match replicas.iter().find(|r| r.block_size != first) {
        None => Ok(first),
        Some(other) => Err(Error::invalid(
            field,
            format!(
                "{field} needs one block size on every replica; the replicas have {first} and {}",
                other.block_size
            ),
        )),
    }
}

fn check_request(request: &RouteRequest<'_>, replicas: &[ReplicaLoad]) -> Result<()> {
    let prompt = check_count("prompt_tokens", request.prompt_tokens, 1)?;
    if let Some(m) = request.max_output_tokens {
        check_count("max_output_tokens", m, 1)?;
    }
    if let Some(p) = request.predicted_output_tokens {
        check_count("predicted_output_tokens", p, 0)?;
    }
    if !request.block_hashes.is_empty() {
        let bs = common_block_size(replicas, "block_hashes")?;
        let full = prompt / bs;
        let n = request.block_hashes.len() as u64;
        if n > full {
            return Err(Error::InvalidArgument {
                field: "block_hashes",
                value: Some(Value::from(n)),
                index: None,
                message: format!(
                    "{n} block_hashes for a prompt of {prompt} tokens, which has {full} full blocks of {bs}"
                ),
            });
        }
    }
    if let Some(overlap) = request.overlap_blocks {
        if overlap.len() != replicas.len() {
            return Err(Error::invalid(
                "overlap_blocks",
                format!(
                    "overlap_blocks has {} entries; expected one per replica ({})",
                    overlap.len(),
                    replicas.len()
                ),
            ));
        }
        for (i, (&o, r)) in overlap.iter().zip(replicas).enumerate() {
            let full = prompt / r.block_size.max(1);
            if o > full {
                return Err(Error::InvalidArgument {
                    field: "overlap_blocks",
                    value: Some(Value::from(o)),
                    index: Some(i as u64),
                    message: format!(
                        "overlap_blocks[{i}] = {o} exceeds the prompt's {full} full blocks on replica {i}"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The error for entry `index` of `block_hashes` that is not an int in `[0, 2**128)`.
pub fn bad_block_hash(value: Value, index: usize) -> Error {
    Error::InvalidArgument {
        field: "block_hashes",
        message: format!(
            "block_hashes[{index}] must be an int in [0, 2**128), got {} {value}",
            value.kind()
        ),
        value: Some(value),
        index: Some(index as u64),
    }
}

/// Entry `index` of `prompt_token_ids`: an int in `[0, 2**32)`.
pub fn token_id(value: &Value, index: usize) -> Result<u32> {
    limits::int_in(
        Blame::Argument,
        "prompt_token_ids",
        value,
        0,
        i128::from(u32::MAX),
    )
    .map(|t| t as u32)
    .map_err(|e| e.at(index))
}

/// Prompt tokens found in the cache when `overlap` leading blocks of `block_size` are.
#[inline]
fn cached_tokens(overlap: u64, block_size: u64, prompt: u64) -> u64 {
    overlap.saturating_mul(block_size).min(prompt)
}

/// A live request: where it went and what it was charged there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub replica: usize,
    pub prompt_tokens: u64,
    pub max_output_tokens: Option<u64>,
    pub decode_estimate: u64,
    pub output_tokens: u64,
    pub started: bool,
    /// Blocks charged to the replica's `used_blocks` (0 until started).
    pub used_blocks: u64,
    /// Prompt tokens expected from the replica's cache (`prompt - cached` is charged to its
    /// `queued_prefill_uncached_tokens` while waiting).
    pub cached_tokens: u64,
    /// Its block hashes and own blocks as charged to the replica's [`ActiveBlocks`] (kept
    /// only when the policy tracks active blocks).
    pub hashes: Box<[BlockHash]>,
    pub own_blocks: u64,
}

/// Everything a [`Router`] has learned since it was built, as plain data: with its
/// [`RouterConfig`], [`Router::from_state`] rebuilds a router that decides exactly as this
/// one would (pickling). Live requests are sorted by id. The cache-aware policies' prefix
/// records are not part of it yet: [`Router::from_state`] refuses those policies.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterState<K> {
    /// [`Policy::state`]: the round-robin pointer or the generator's state.
    pub policy_state: u64,
    pub replicas: Vec<ReplicaLoad>,
    pub snapshotted: Vec<bool>,
    pub live: Vec<(K, Live)>,
    pub num_finished: u64,
    pub sum_input_tokens: u128,
    pub sum_output_tokens: u128,
}

impl Live {
    fn remaining_decode(&self) -> u64 {
        self.decode_estimate.saturating_sub(self.output_tokens)
    }

    fn uncached_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_sub(self.cached_tokens)
    }

    /// Blocks it holds beyond its hashed ones with `output_tokens` generated.
    fn own_blocks_at(&self, load: &ReplicaLoad, output_tokens: u64) -> u64 {
        load.blocks_for(self.prompt_tokens.saturating_add(output_tokens))
            .saturating_sub(self.hashes.len() as u64)
    }

    /// `output_tokens` is a cumulative count: it may not shrink or pass the request's cap.
    fn check_output(&self, output_tokens: u64) -> Result<()> {
        if output_tokens < self.output_tokens {
            return Err(Error::InvalidArgument {
                field: "output_tokens",
                value: Some(Value::from(output_tokens)),
                index: None,
                message: format!(
                    "output_tokens is cumulative and went backwards: {output_tokens} < {}",
                    self.output_tokens
                ),
            });
        }
        if let Some(cap) = self.max_output_tokens {
            if output_tokens > cap {
                return Err(Error::InvalidArgument {
                    field: "output_tokens",
                    value: Some(Value::from(output_tokens)),
                    index: None,
                    message: format!(
                        "output_tokens {output_tokens} exceeds the request's max_output_tokens {cap}"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A cluster load balancer. `K` is the request id type (the Python binding uses
/// `sched::RequestId`, an int or a string); its `Display` names it in error messages.
#[derive(Debug)]
pub struct Router<K> {
    config: RouterConfig,
    policy: Box<dyn Policy>,
    replicas: Vec<ReplicaLoad>,
    /// Replicas that got a snapshot: their counters need not equal the bookkeeping sums.
    snapshotted: Vec<bool>,
    live: HashMap<K, Live>,
    num_finished: u64,
    sum_input_tokens: u128,
    sum_output_tokens: u128,
    prefix_use: PrefixUse,
    /// When `prefix_use` is not `None`.
    records: Option<PrefixRecords>,
    /// For `RecordAndActive`.
    active: Option<ActiveBlocks>,
    scratch: Scratch,
}

/// Per-replica buffers for the [`Cluster`] view, reused across decisions.
#[derive(Debug, Default)]
struct Scratch {
    cached_tokens: Vec<u64>,
    record_blocks: Vec<u64>,
    decode_blocks: Vec<u64>,
    runs: Vec<u64>,
}

impl<K: RequestKey> Router<K> {
    pub fn new(config: RouterConfig) -> Result<Self> {
        config.validate()?;
        let policy = make_policy_with(&config.policy, config.seed, &config.params)?;
        let replicas: Vec<ReplicaLoad> = config
            .replicas
            .iter()
            .map(|s| ReplicaLoad::new(*s))
            .collect();
        let prefix_use = policy.prefixes();
        let records = match prefix_use {
            PrefixUse::None => None,
            _ => Some(PrefixRecords::new(
                config.replicas.iter().map(|s| config.record_capacity(s)),
            )),
        };
        let active = match prefix_use {
            PrefixUse::RecordAndActive => Some(ActiveBlocks::new(replicas.len())),
            _ => None,
        };
        Ok(Router {
            snapshotted: vec![false; replicas.len()],
            replicas,
            policy,
            live: HashMap::new(),
            num_finished: 0,
            sum_input_tokens: 0,
            sum_output_tokens: 0,
            prefix_use,
            records,
            active,
            scratch: Scratch::default(),
            config,
        })
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// What this router has learned: see [`RouterState`].
    pub fn state(&self) -> RouterState<K>
    where
        K: Clone + Ord,
    {
        let mut live: Vec<(K, Live)> = self
            .live
            .iter()
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect();
        live.sort_by(|a, b| a.0.cmp(&b.0));
        RouterState {
            policy_state: self.policy.state(),
            replicas: self.replicas.clone(),
            snapshotted: self.snapshotted.clone(),
            live,
            num_finished: self.num_finished,
            sum_input_tokens: self.sum_input_tokens,
            sum_output_tokens: self.sum_output_tokens,
        }
    }

    /// A router built from `config` that has learned `state` (what [`Router::state`] gave).
    /// The state is checked against the configuration (one load per replica with its
    /// capacity, every live request on a replica, each id once, the counters consistent):
    /// `InvalidArgument` naming `state` otherwise.
    pub fn from_state(config: RouterConfig, state: RouterState<K>) -> Result<Self> {
        let mut router = Router::new(config)?;
        let bad = |message: String| Error::InvalidArgument {
            field: "state",
            value: None,
            index: None,
            message: format!("not a router state for this configuration: {message}"),
        };
        if router.prefix_use != PrefixUse::None {
            return Err(bad(format!(
                "{}'s prefix records cannot be restored yet",
                router.policy.name()
            )));
        }
        let n = router.replicas.len();
        if state.replicas.len() != n || state.snapshotted.len() != n {
            return Err(bad(format!(
                "{} loads and {} snapshot flags for {n} replicas",
                state.replicas.len(),
                state.snapshotted.len()
            )));
        }
        for (i, (got, want)) in state.replicas.iter().zip(&router.replicas).enumerate() {
            let capacity =
                |l: &ReplicaLoad| (l.num_gpu_blocks, l.block_size, l.max_num_batched_tokens);
            if capacity(got) != capacity(want) {
                return Err(bad(format!(
                    "replica {i}'s capacity differs from the configuration's"
                )));
            }
        }
        let mut live = HashMap::with_capacity(state.live.len());
        for (id, l) in state.live {
            if l.replica >= n {
                return Err(bad(format!(
                    "request {id} is on replica {} of {n}",
                    l.replica
                )));
            }
            if !l.hashes.is_empty() || l.own_blocks != 0 {
                return Err(bad(format!(
                    "request {id} holds active blocks, which this policy does not track"
                )));
            }
            if live.insert(id, l).is_some() {
                return Err(bad("a request id appears twice".into()));
            }
        }
        if state.sum_output_tokens > 0 && state.num_finished == 0 {
            return Err(bad("output tokens summed over no finished request".into()));
        }
        router.policy.set_state(state.policy_state);
        router.replicas = state.replicas;
        router.snapshotted = state.snapshotted;
        router.live = live;
        router.num_finished = state.num_finished;
        router.sum_input_tokens = state.sum_input_tokens;
        router.sum_output_tokens = state.sum_output_tokens;
        router.check_invariants().map_err(|e| bad(e.to_string()))?;
        Ok(router)
    }

    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    pub fn num_replicas(&self) -> usize {
        self.replicas.len()
    }

    pub fn replicas(&self) -> &[ReplicaLoad] {
        &self.replicas
    }

    pub fn replica(&self, index: usize) -> Result<&ReplicaLoad> {
        self.replicas.get(index).ok_or(Error::ReplicaOutOfRange {
            index: Value::from(index as u64),
            num_replicas: self.replicas.len(),
        })
    }

    /// Which prefix state the policy keeps.
    pub fn prefix_use(&self) -> PrefixUse {
        self.prefix_use
    }

    /// Blocks in replica `index`'s prefix record (0 for policies without one).
    pub fn record_blocks(&self, index: usize) -> u64 {
        self.records.as_ref().map_or(0, |r| r.len(index))
    }

    /// The hashes in replica `index`'s prefix record, least recently used first (empty for
    /// policies without records).
    pub fn record_hashes(&self, index: usize) -> Vec<BlockHash> {
        self.records
            .as_ref()
            .map(|r| r.lru_order(index))
            .unwrap_or_default()
    }

    /// The cap of replica `index`'s prefix record, in blocks (kept or not).
    pub fn record_capacity(&self, index: usize) -> u64 {
        self.config
            .replicas
            .get(index)
            .map_or(0, |s| self.config.record_capacity(s))
    }

    /// KV blocks held by replica `index`'s live requests, shared prefix blocks once
    /// (`dynamo_kv` only; 0 otherwise).
    pub fn active_blocks(&self, index: usize) -> u64 {
        self.active.as_ref().map_or(0, |a| a.blocks(index))
    }

    /// The block size block hashes must be taken at (every replica's); `field` names the
    /// argument in the error when the replicas differ.
    pub fn hash_block_size(&self, field: &'static str) -> Result<u64> {
        common_block_size(&self.replicas, field)
    }

    /// Live (routed, not finished or aborted) requests.
    pub fn num_live(&self) -> usize {
        self.live.len()
    }

    pub fn num_finished(&self) -> u64 {
        self.num_finished
    }

    pub fn contains(&self, id: &K) -> bool {
        self.live.contains_key(id)
    }

    pub fn replica_of(&self, id: &K) -> Result<usize> {
        self.live
            .get(id)
            .map(|l| l.replica)
            .ok_or_else(|| unknown(id))
    }

    /// SAL's β: the override, else `(Σ in + Σ out) / Σ out` over finished requests, else
    /// `(prior_in + prior_out) / prior_out` while no finished request has output.
    pub fn beta(&self) -> f64 {
        if let Some(beta) = self.config.beta {
            return beta;
        }
        let (sum_in, sum_out) = if self.sum_output_tokens > 0 {
            (self.sum_input_tokens, self.sum_output_tokens)
        } else {
            (
                u128::from(self.config.prior_input_tokens),
                u128::from(self.config.prior_output_tokens),
            )
        };
        (sum_in + sum_out) as f64 / sum_out as f64
    }

    /// Mean output length of finished requests, rounded half up (the prior before any).
    pub fn mean_output_tokens(&self) -> u64 {
        if self.num_finished == 0 {
            return self.config.prior_output_tokens;
        }
        let n = u128::from(self.num_finished);
        let mean = (2 * self.sum_output_tokens + n) / (2 * n);
        u64::try_from(mean).unwrap_or(u64::MAX)
    }

    /// The decode tokens a request is expected to generate, fixed when it is routed.
    pub fn decode_estimate(&self, request: &RouteRequest<'_>) -> u64 {
        let guess = request
            .predicted_output_tokens
            .unwrap_or_else(|| self.mean_output_tokens());
        match request.max_output_tokens {
            Some(cap) => guess.min(cap),
            None => guess,
        }
    }

    /// Choose a replica for a new request and charge it there. Errors (bad counts, a live
    /// duplicate id) change nothing.
    pub fn route(&mut self, id: K, request: RouteRequest<'_>) -> Result<usize> {
        check_request(&request, &self.replicas)?;
        if self.live.contains_key(&id) {
            return Err(Error::DuplicateRequest {
                id: id.request_id(),
            });
        }
        Ok(self.dispatch(id, request))
    }

    /// `route` for each request in order; all are checked first, so on error nothing is routed.
    pub fn route_many(&mut self, requests: Vec<(K, RouteRequest<'_>)>) -> Result<Vec<usize>> {
        {
            let mut seen: HashSet<&K> = HashSet::with_capacity(requests.len());
            for (id, request) in &requests {
                check_request(request, &self.replicas)?;
                if self.live.contains_key(id) || !seen.insert(id) {
                    return Err(Error::DuplicateRequest {
                        id: id.request_id(),
                    });
                }
            }
        }
        Ok(requests
            .into_iter()
            .map(|(id, request)| self.dispatch(id, request))
            .collect())
    }

    /// Fill the scratch view of what each replica holds of this request's prefix.
    fn fill_prefix_view(&mut self, request: &RouteRequest<'_>) {
        let s = &mut self.scratch;
        s.cached_tokens.clear();
        s.record_blocks.clear();
        s.decode_blocks.clear();
        let (prompt, hashes) = (request.prompt_tokens, request.block_hashes);
        let Some(records) = &self.records else {
            return;
        };
        match request.overlap_blocks {
            Some(given) => {
                s.runs.clear();
                s.runs.extend_from_slice(given);
            }
            None => records.match_runs(hashes, &mut s.runs),
        }
        for (i, load) in self.replicas.iter().enumerate() {
            let overlap = s.runs.get(i).copied().unwrap_or(0);
            s.cached_tokens
                .push(cached_tokens(overlap, load.block_size, prompt));
            s.record_blocks.push(records.len(i));
        }
        if let Some(active) = &self.active {
            active.match_runs(hashes, &mut s.runs);
            for (i, load) in self.replicas.iter().enumerate() {
                let held = s.runs.get(i).copied().unwrap_or(0);
                let new_blocks = load.blocks_for(prompt).saturating_sub(held);
                s.decode_blocks
                    .push(active.blocks(i).saturating_add(new_blocks));
            }
        }
    }

    fn dispatch(&mut self, id: K, request: RouteRequest<'_>) -> usize {
        let estimate = self.decode_estimate(&request);
        if self.prefix_use != PrefixUse::None {
            self.fill_prefix_view(&request);
        }
        let cluster = Cluster {
            replicas: &self.replicas,
            beta: self.beta(),
            cached_tokens: &self.scratch.cached_tokens,
            record_blocks: &self.scratch.record_blocks,
            decode_blocks: &self.scratch.decode_blocks,
        };
        let last = self.replicas.len().saturating_sub(1);
        let index = self.policy.choose(&cluster, &request).min(last);
        let prompt = request.prompt_tokens;
        let cached = match (
            self.scratch.cached_tokens.get(index),
            request.overlap_blocks,
        ) {
            (Some(&c), _) if self.prefix_use != PrefixUse::None => c,
            (_, Some(given)) => cached_tokens(
                given.get(index).copied().unwrap_or(0),
                self.replicas.get(index).map_or(1, |r| r.block_size),
                prompt,
            ),
            _ => 0,
        };
        let mut live = Live {
            replica: index,
            prompt_tokens: prompt,
            max_output_tokens: request.max_output_tokens,
            decode_estimate: estimate,
            output_tokens: 0,
            started: false,
            used_blocks: 0,
            cached_tokens: cached,
            hashes: Box::default(),
            own_blocks: 0,
        };
        if let Some(load) = self.replicas.get_mut(index) {
            load.waiting = load.waiting.saturating_add(1);
            load.queued_prefill_tokens = load.queued_prefill_tokens.saturating_add(prompt);
            load.queued_prefill_uncached_tokens = load
                .queued_prefill_uncached_tokens
                .saturating_add(live.uncached_tokens());
            load.remaining_decode_tokens = load.remaining_decode_tokens.saturating_add(estimate);
            if let Some(records) = &mut self.records {
                records.insert(index, request.block_hashes);
            }
            if let Some(active) = &mut self.active {
                live.hashes = request.block_hashes.into();
                live.own_blocks = live.own_blocks_at(load, 0);
                active.add(index, &live.hashes, live.own_blocks);
            }
        }
        self.live.insert(id, live);
        index
    }

    /// The request has started (its prefill is done) and has generated `output_tokens`
    /// tokens so far (cumulative; 0 is allowed: "started").
    pub fn on_progress(&mut self, id: &K, output_tokens: u64) -> Result<()> {
        check_count("output_tokens", output_tokens, 0)?;
        let live = self.live.get_mut(id).ok_or_else(|| unknown(id))?;
        live.check_output(output_tokens)?;
        let Some(load) = self.replicas.get_mut(live.replica) else {
            return Err(Error::Invariant {
                message: format!(
                    "request {id} is on replica {} which does not exist",
                    live.replica
                ),
            });
        };
        let old_remaining = live.remaining_decode();
        if !live.started {
            live.started = true;
            load.waiting = load.waiting.saturating_sub(1);
            load.running = load.running.saturating_add(1);
            load.queued_prefill_tokens = load
                .queued_prefill_tokens
                .saturating_sub(live.prompt_tokens);
            load.queued_prefill_uncached_tokens = load
                .queued_prefill_uncached_tokens
                .saturating_sub(live.uncached_tokens());
        }
        if let Some(active) = &mut self.active {
            let own = live.own_blocks_at(load, output_tokens);
            active.regrow(live.replica, live.own_blocks, own);
            live.own_blocks = own;
        }
        live.output_tokens = output_tokens;
        let used = load.blocks_for(live.prompt_tokens.saturating_add(output_tokens));
        load.used_blocks = load
            .used_blocks
            .saturating_add(used.saturating_sub(live.used_blocks));
        live.used_blocks = used;
        let freed_estimate = old_remaining.saturating_sub(live.remaining_decode());
        load.remaining_decode_tokens = load.remaining_decode_tokens.saturating_sub(freed_estimate);
        Ok(())
    }

    /// The request finished after generating `output_tokens` tokens: its charges are undone
    /// and its lengths feed β and the mean output length.
    pub fn on_finish(&mut self, id: &K, output_tokens: u64) -> Result<()> {
        check_count("output_tokens", output_tokens, 0)?;
        self.live
            .get(id)
            .ok_or_else(|| unknown(id))?
            .check_output(output_tokens)?;
        if let Some(live) = self.live.remove(id) {
            self.release(&live);
            self.num_finished += 1;
            self.sum_input_tokens += u128::from(live.prompt_tokens);
            self.sum_output_tokens += u128::from(output_tokens);
        }
        Ok(())
    }

    /// The request ended without a meaningful length (client gone, error): its charges are
    /// undone; β does not learn from it.
    pub fn on_abort(&mut self, id: &K) -> Result<()> {
        let live = self.live.remove(id).ok_or_else(|| unknown(id))?;
        self.release(&live);
        Ok(())
    }

    fn release(&mut self, live: &Live) {
        let Some(load) = self.replicas.get_mut(live.replica) else {
            return;
        };
        if live.started {
            load.running = load.running.saturating_sub(1);
            load.used_blocks = load.used_blocks.saturating_sub(live.used_blocks);
        } else {
            load.waiting = load.waiting.saturating_sub(1);
            load.queued_prefill_tokens = load
                .queued_prefill_tokens
                .saturating_sub(live.prompt_tokens);
            load.queued_prefill_uncached_tokens = load
                .queued_prefill_uncached_tokens
                .saturating_sub(live.uncached_tokens());
        }
        load.remaining_decode_tokens = load
            .remaining_decode_tokens
            .saturating_sub(live.remaining_decode());
        if let Some(active) = &mut self.active {
            active.remove(live.replica, &live.hashes, live.own_blocks);
        }
    }

    /// Overwrite the given fields of replica `index`'s load (an engine's report, possibly
    /// stale). `free_blocks` sets `used_blocks = num_gpu_blocks - free_blocks`.
    pub fn update_replica(&mut self, index: usize, snapshot: ReplicaSnapshot) -> Result<()> {
        let num_replicas = self.replicas.len();
        let load = self
            .replicas
            .get_mut(index)
            .ok_or(Error::ReplicaOutOfRange {
                index: Value::from(index as u64),
                num_replicas,
            })?;
        let fields = [
            ("waiting", snapshot.waiting),
            ("running", snapshot.running),
            ("queued_prefill_tokens", snapshot.queued_prefill_tokens),
            (
                "queued_prefill_uncached_tokens",
                snapshot.queued_prefill_uncached_tokens,
            ),
            ("remaining_decode_tokens", snapshot.remaining_decode_tokens),
            ("free_blocks", snapshot.free_blocks),
        ];
        for (field, value) in fields {
            if let Some(v) = value {
                check_count(field, v, 0)?;
            }
        }
        if let Some(free) = snapshot.free_blocks {
            if free > load.num_gpu_blocks {
                return Err(Error::InvalidArgument {
                    field: "free_blocks",
                    value: Some(Value::from(free)),
                    index: None,
                    message: format!(
                        "free_blocks {free} exceeds replica {index}'s num_gpu_blocks {}",
                        load.num_gpu_blocks
                    ),
                });
            }
            load.used_blocks = load.num_gpu_blocks - free;
        }
        if let Some(v) = snapshot.waiting {
            load.waiting = v;
        }
        if let Some(v) = snapshot.running {
            load.running = v;
        }
        if let Some(v) = snapshot.queued_prefill_tokens {
            load.queued_prefill_tokens = v;
        }
        if let Some(v) = snapshot.queued_prefill_uncached_tokens {
            load.queued_prefill_uncached_tokens = v;
        }
        if let Some(v) = snapshot.remaining_decode_tokens {
            load.remaining_decode_tokens = v;
        }
        if let Some(flag) = self.snapshotted.get_mut(index) {
            *flag = true;
        }
        Ok(())
    }

    /// Check that every live request sits on an existing replica and that each replica never
    /// given a snapshot has counters equal to the sums over its live requests.
    pub fn check_invariants(&self) -> Result<()> {
        let n = self.replicas.len();
        let mut sums = vec![ReplicaLoad::new(ReplicaSpec::default()); n];
        for (id, live) in &self.live {
            let Some(sum) = sums.get_mut(live.replica) else {
                return Err(Error::Invariant {
                    message: format!("request {id} is on replica {} of {n}", live.replica),
                });
            };
            if live.started {
                sum.running += 1;
                sum.used_blocks += live.used_blocks;
            } else {
                sum.waiting += 1;
                sum.queued_prefill_tokens += live.prompt_tokens;
                sum.queued_prefill_uncached_tokens += live.uncached_tokens();
                if live.used_blocks != 0 || live.output_tokens != 0 {
                    return Err(Error::Invariant {
                        message: format!("request {id} has not started but holds blocks or tokens"),
                    });
                }
            }
            sum.remaining_decode_tokens += live.remaining_decode();
        }
        for (i, (load, sum)) in self.replicas.iter().zip(&sums).enumerate() {
            if self.snapshotted.get(i).copied().unwrap_or(true) {
                continue;
            }
            let got = (
                load.waiting,
                load.running,
                load.queued_prefill_tokens,
                load.queued_prefill_uncached_tokens,
                load.remaining_decode_tokens,
                load.used_blocks,
            );
            let want = (
                sum.waiting,
                sum.running,
                sum.queued_prefill_tokens,
                sum.queued_prefill_uncached_tokens,
                sum.remaining_decode_tokens,
                sum.used_blocks,
            );
            if got != want {
                return Err(Error::Invariant {
                    message: format!(
                        "replica {i}: (waiting, running, queued_prefill_tokens, \
                         queued_prefill_uncached_tokens, remaining_decode_tokens, used_blocks) = \
                         {got:?}, but its live requests sum to {want:?}"
                    ),
                });
            }
        }
        self.check_prefix_invariants()?;
        Ok(())
    }

    /// Records within their caps; each replica's active blocks equal the distinct hashes and
    /// own blocks of its live requests.
    fn check_prefix_invariants(&self) -> Result<()> {
        if let Some(records) = &self.records {
            records
                .check()
                .map_err(|message| Error::Invariant { message })?;
        }
        let Some(active) = &self.active else {
            return Ok(());
        };
        let n = self.replicas.len();
        let mut distinct: Vec<HashSet<BlockHash>> = vec![HashSet::new(); n];
        let mut own = vec![0u64; n];
        for live in self.live.values() {
            let (Some(set), Some(o), Some(load)) = (
                distinct.get_mut(live.replica),
                own.get_mut(live.replica),
                self.replicas.get(live.replica),
            ) else {
                continue;
            };
            set.extend(live.hashes.iter().copied());
            if live.own_blocks != live.own_blocks_at(load, live.output_tokens) {
                return Err(Error::Invariant {
                    message: format!(
                        "a request on replica {} holds stale own blocks",
                        live.replica
                    ),
                });
            }
            *o += live.own_blocks;
        }
        for i in 0..n {
            let want = (
                distinct.get(i).map_or(0, |s| s.len() as u64),
                own.get(i).copied().unwrap_or(0),
            );
            let got = (active.distinct_hashes(i), active.own_blocks(i));
            if got != want {
                return Err(Error::Invariant {
                    message: format!(
                        "replica {i}: active (distinct hashes, own blocks) = {got:?}, but its live requests hold {want:?}"
                    ),
                });
            }
        }
        Ok(())
    }
}

fn unknown<K: RequestKey>(id: &K) -> Error {
    Error::UnknownRequest {
        id: id.request_id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(policy: &str, n: usize) -> Router<u64> {
        let mut cfg = RouterConfig::new(policy, n);
        cfg.replicas = vec![
            ReplicaSpec {
                num_gpu_blocks: 64,
                block_size: 4,
                max_num_batched_tokens: 128
            };
            n
        ];
        Router::new(cfg).unwrap()
    }

    fn req(prompt: u64) -> RouteRequest<'static> {
        RouteRequest::new(prompt)
    }

    #[test]
    fn a_restored_router_decides_as_the_original() {
        for policy in policy_names() {
            let mut a = router(policy, 3);
            if a.prefix_use() != PrefixUse::None {
                // Prefix records are not part of the state yet: refused, not half restored.
                assert!(Router::from_state(a.config().clone(), a.state()).is_err());
                continue;
            }
            for id in 0..20u64 {
                a.route(id, req(5 + 7 * id % 30)).unwrap();
                if id % 3 == 0 {
                    a.on_progress(&id, 2).unwrap();
                }
                if id % 4 == 0 {
                    a.on_finish(&id, 3).unwrap();
                }
            }
            a.update_replica(
                1,
                ReplicaSnapshot {
                    waiting: Some(2),
                    ..Default::default()
                },
            )
            .unwrap();
            let mut b = Router::from_state(a.config().clone(), a.state()).unwrap();
            assert_eq!(a.state(), b.state(), "{policy}");
            for id in 100..140u64 {
                assert_eq!(
                    a.route(id, req(id % 17 + 1)).unwrap(),
                    b.route(id, req(id % 17 + 1)).unwrap()
                );
            }
            assert_eq!(a.state(), b.state(), "{policy}");
        }
    }

    #[test]
    fn a_state_that_does_not_fit_the_config_is_refused() {
        let a = router("random", 2);
        let mut s = a.state();
        s.replicas.pop();
        assert!(matches!(
            Router::from_state(a.config().clone(), s),
            Err(Error::InvalidArgument { field: "state", .. })
        ));
        let mut s = a.state();
        s.replicas[0].waiting = 5; // no live request waits there
        assert!(Router::<u64>::from_state(a.config().clone(), s).is_err());
    }

    #[test]
    fn config_errors() {
        let err = Router::<u64>::new(RouterConfig::new("fastest", 2)).unwrap_err();
        assert!(matches!(
            err,
            Error::UnknownName {
                field: "policy",
                ..
            }
        ));
        let err = Router::<u64>::new(RouterConfig::new("sal", 0)).unwrap_err();
        assert!(matches!(
            err,
            Error::Config {
                field: "num_replicas",
                ..
            }
        ));
        let mut cfg = RouterConfig::new("sal", 2);
        cfg.beta = Some(f64::NAN);
        assert!(matches!(
            Router::<u64>::new(cfg).unwrap_err(),
            Error::Config { field: "beta", .. }
        ));
        let mut cfg = RouterConfig::new("sal", 2);
        cfg.replicas[1].block_size = 0;
        assert!(matches!(
            Router::<u64>::new(cfg).unwrap_err(),
            Error::Config {
                field: "block_size",
                ..
            }
        ));
    }

    #[test]
    fn bookkeeping_follows_a_request() {
        let mut r = router("least_requests", 2);
        assert_eq!(
            r.route(
                1,
                RouteRequest {
                    max_output_tokens: Some(10),
                    ..req(9)
                }
            )
            .unwrap(),
            0
        );
        assert_eq!(r.route(2, req(5)).unwrap(), 1);
        let l = r.replicas()[0];
        assert_eq!(
            (
                l.waiting,
                l.queued_prefill_tokens,
                l.remaining_decode_tokens
            ),
            (1, 9, 10)
        );
        assert_eq!(r.replicas()[1].remaining_decode_tokens, 256); // the prior mean
        r.on_progress(&1, 1).unwrap();
        let l = r.replicas()[0];
        assert_eq!((l.waiting, l.running, l.queued_prefill_tokens), (0, 1, 0));
        assert_eq!((l.used_blocks, l.remaining_decode_tokens), (3, 9)); // ceil(10 / 4)
        r.on_progress(&1, 4).unwrap();
        assert_eq!(r.replicas()[0].used_blocks, 4); // ceil(13 / 4)
        r.check_invariants().unwrap();
        assert!(matches!(
            r.on_progress(&1, 3),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            r.on_progress(&1, 11),
            Err(Error::InvalidArgument { .. })
        ));
        r.on_finish(&1, 6).unwrap();
        assert_eq!(r.replicas()[0], ReplicaLoad::new(r.config().replicas[0]));
        assert_eq!(r.mean_output_tokens(), 6);
        assert_eq!(r.beta(), 15.0 / 6.0);
        r.on_abort(&2).unwrap();
        assert_eq!(r.num_finished(), 1);
        assert_eq!(r.num_live(), 0);
        r.check_invariants().unwrap();
    }

    #[test]
    fn errors_change_nothing() {
        let mut r = router("random", 3);
        r.route(7, req(5)).unwrap();
        let before = (r.replicas().to_vec(), r.num_live());
        let rng_probe = |r: &mut Router<u64>, id| {
            let i = r.route(id, req(1)).unwrap();
            r.on_abort(&id).unwrap();
            i
        };
        assert!(matches!(
            r.route(7, req(5)),
            Err(Error::DuplicateRequest { .. })
        ));
        assert!(matches!(
            r.route(8, req(0)),
            Err(Error::InvalidArgument {
                field: "prompt_tokens",
                ..
            })
        ));
        assert!(matches!(
            r.route(
                8,
                RouteRequest {
                    max_output_tokens: Some(0),
                    ..req(1)
                }
            ),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            r.route(8, req(MAX_COUNT + 1)),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            r.on_finish(&8, 1),
            Err(Error::UnknownRequest { .. })
        ));
        assert!(matches!(r.on_abort(&8), Err(Error::UnknownRequest { .. })));
        assert!(matches!(
            r.update_replica(3, ReplicaSnapshot::default()),
            Err(Error::ReplicaOutOfRange {
                index: Value::Int(3),
                num_replicas: 3
            })
        ));
        let bad = ReplicaSnapshot {
            waiting: Some(4),
            free_blocks: Some(65),
            ..Default::default()
        };
        assert!(matches!(
            r.update_replica(0, bad),
            Err(Error::InvalidArgument {
                field: "free_blocks",
                ..
            })
        ));
        let many = vec![(20, req(1)), (21, req(1)), (20, req(1))];
        assert!(matches!(
            r.route_many(many),
            Err(Error::DuplicateRequest { .. })
        ));
        assert_eq!((r.replicas().to_vec(), r.num_live()), before);
        // The random stream was not advanced by the failed calls.
        let mut twin = router("random", 3);
        twin.route(7, req(5)).unwrap();
        assert_eq!(rng_probe(&mut r, 100), rng_probe(&mut twin, 100));
    }

    #[test]
    fn snapshots_overwrite_and_bookkeeping_saturates() {
        let mut r = router("least_requests", 2);
        r.route(1, req(8)).unwrap();
        r.on_progress(&1, 1).unwrap();
        let snap = ReplicaSnapshot {
            waiting: Some(0),
            running: Some(0),
            queued_prefill_tokens: Some(0),
            queued_prefill_uncached_tokens: Some(0),
            remaining_decode_tokens: Some(0),
            free_blocks: Some(64),
        };
        r.update_replica(0, snap).unwrap();
        r.on_finish(&1, 2).unwrap();
        assert_eq!(r.replicas()[0], ReplicaLoad::new(r.config().replicas[0]));
        r.check_invariants().unwrap();
        r.update_replica(
            1,
            ReplicaSnapshot {
                waiting: Some(5),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.route(2, req(1)).unwrap(), 0);
        assert_eq!(r.replicas()[1].waiting, 5);
    }

    #[test]
    fn route_many_equals_route_in_a_loop() {
        for name in policy_names() {
            let mut a = router(name, 5);
            let mut b = router(name, 5);
            let reqs: Vec<(u64, RouteRequest)> =
                (0..40).map(|i| (i, req(1 + (i * 37) % 50))).collect();
            let one: Vec<usize> = reqs
                .iter()
                .map(|(id, q)| a.route(*id, *q).unwrap())
                .collect();
            assert_eq!(b.route_many(reqs).unwrap(), one, "{name}");
            assert_eq!(a.replicas(), b.replicas());
        }
    }

    #[test]
    fn sal_learns_beta_and_honours_the_override() {
        let mut r = router("sal", 2);
        assert_eq!(r.beta(), (1024.0 + 256.0) / 256.0);
        r.route(1, req(30)).unwrap();
        r.on_finish(&1, 10).unwrap();
        assert_eq!(r.beta(), 4.0);
        let mut cfg = RouterConfig::new("sal", 2);
        cfg.beta = Some(2.5);
        let r2 = Router::<u64>::new(cfg).unwrap();
        assert_eq!(r2.beta(), 2.5);
    }

    fn chain(family: u128, n: usize) -> Vec<BlockHash> {
        (0..n as u128).map(|j| family * 1000 + j).collect()
    }

    #[test]
    fn cache_aware_sends_a_shared_prefix_back_and_records_it() {
        let mut r = router("cache_aware", 3);
        let a = chain(1, 8); // 8 blocks of 4 tokens
        fn with(hashes: &[BlockHash]) -> RouteRequest<'_> {
            RouteRequest {
                block_hashes: hashes,
                ..req(34)
            }
        }
        // Empty records: the smallest record (all 0) and fewest requests: replica 0.
        assert_eq!(r.route(1, with(&a)).unwrap(), 0);
        assert_eq!(r.record_blocks(0), 8);
        // Same prefix: match 32 / 34 > 0.3, back to 0 (although 1 and 2 are emptier).
        assert_eq!(r.route(2, with(&a[..6])).unwrap(), 0);
        // A different prefix: no match, the smallest record (replica 1).
        let b = chain(2, 8);
        assert_eq!(r.route(3, with(&b)).unwrap(), 1);
        // Caller's exact overlap overrides the record: replica 2 holds 8 blocks.
        let overlap = [0, 0, 8];
        let exact = RouteRequest {
            overlap_blocks: Some(&overlap),
            ..with(&a)
        };
        assert_eq!(r.route(4, exact).unwrap(), 2);
        r.check_invariants().unwrap();
        // The waiting requests' uncached parts: 34 - 32, 34 - 24 on replica 0.
        assert_eq!(
            r.replicas()[0].queued_prefill_uncached_tokens,
            34 + (34 - 24)
        );
        assert_eq!(r.replicas()[2].queued_prefill_uncached_tokens, 2);
        r.on_progress(&4, 0).unwrap();
        assert_eq!(r.replicas()[2].queued_prefill_uncached_tokens, 0);
        r.check_invariants().unwrap();
    }

    #[test]
    fn dynamo_counts_active_blocks_once() {
        let mut r = router("dynamo_kv", 2);
        let a = chain(1, 8);
        fn with(hashes: &[BlockHash]) -> RouteRequest<'_> {
            RouteRequest {
                block_hashes: hashes,
                ..req(34)
            }
        }
        assert_eq!(r.route(1, with(&a)).unwrap(), 0);
        // 8 hashed blocks + 1 own (the partial block).
        assert_eq!(r.active_blocks(0), 9);
        // Replica 0: prefill (34 queued + 2) / 4 = 9, decode 9 + 1 = 10 -> 19;
        // replica 1: prefill 34 / 4 = 8.5, decode 9 -> 17.5. Replica 1 (the queue counts).
        assert_eq!(r.route(2, with(&a)).unwrap(), 1);
        r.on_progress(&1, 1).unwrap();
        r.on_progress(&2, 1).unwrap();
        // Replica 0 now: prefill 2 / 4 = 0.5, decode 9 + 1 = 10 -> 10.5; replica 1 the same.
        // A tie: equal records, equal requests, replica 0.
        assert_eq!(r.route(3, with(&a)).unwrap(), 0);
        assert_eq!(r.active_blocks(0), 8 + 2);
        r.on_progress(&1, 7).unwrap(); // 41 tokens: 11 blocks, 3 own
        assert_eq!(r.active_blocks(0), 8 + 3 + 1);
        r.check_invariants().unwrap();
        r.on_finish(&1, 7).unwrap();
        r.on_abort(&3).unwrap();
        assert_eq!(r.active_blocks(0), 0);
        assert_eq!(r.record_blocks(0), 8);
        r.check_invariants().unwrap();
    }

    #[test]
    fn prefix_arguments_are_checked() {
        let mut r = router("dynamo_kv", 2);
        let long = chain(1, 9);
        let too_many = RouteRequest {
            block_hashes: &long,
            ..req(35)
        };
        assert!(matches!(
            r.route(1, too_many),
            Err(Error::InvalidArgument {
                field: "block_hashes",
                ..
            })
        ));
        let short = [1, 2, 3];
        let wrong_len = RouteRequest {
            overlap_blocks: Some(&short),
            ..req(35)
        };
        assert!(matches!(
            r.route(1, wrong_len),
            Err(Error::InvalidArgument {
                field: "overlap_blocks",
                ..
            })
        ));
        let big = [0, 9];
        let too_big = RouteRequest {
            overlap_blocks: Some(&big),
            ..req(35)
        };
        assert!(matches!(
            r.route(1, too_big),
            Err(Error::InvalidArgument {
                field: "overlap_blocks",
                index: Some(1),
                ..
            })
        ));
        let mut cfg = RouterConfig::new("cache_aware", 2);
        cfg.replicas[1].block_size = 8;
        let mut mixed = Router::<u64>::new(cfg).unwrap();
        let h = [5];
        let hashed = RouteRequest {
            block_hashes: &h,
            ..req(100)
        };
        assert!(matches!(
            mixed.route(1, hashed),
            Err(Error::InvalidArgument {
                field: "block_hashes",
                ..
            })
        ));
        assert_eq!(mixed.route(1, req(100)).unwrap(), 0);
        assert_eq!(
            (r.num_live(), r.active_blocks(0), r.record_blocks(0)),
            (0, 0, 0)
        );
        let mut cfg = RouterConfig::new("cache_aware", 2);
        cfg.params.cache_threshold = 1.5;
        assert!(matches!(
            Router::<u64>::new(cfg).unwrap_err(),
            Error::Config {
                field: "cache_threshold",
                ..
            }
        ));
    }

    #[test]
    fn records_are_capped() {
        let mut cfg = RouterConfig::new("cache_aware", 1);
        cfg.max_record_blocks = Some(5);
        let mut r = Router::<u64>::new(cfg).unwrap();
        for f in 0..4 {
            let h = chain(f, 3);
            r.route(
                f as u64,
                RouteRequest {
                    block_hashes: &h,
                    ..req(64)
                },
            )
            .unwrap();
            assert!(r.record_blocks(0) <= 5);
        }
        // The newest request whole, the one before it minus its leaf (evicted first).
        assert_eq!(r.record_hashes(0), vec![2001, 2000, 3002, 3001, 3000]);
    }
}
