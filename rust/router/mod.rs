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
//! A call that returns an error changes nothing (and draws no random numbers). No decision
//! depends on a `HashMap`'s order: the map only answers "which replica holds this request".

pub mod load;
pub mod policy;
pub mod rng;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

use crate::error::Value;
pub use crate::error::{Error, Result};
use crate::id::RequestId;
use crate::limits::{self, check_count, Blame};
pub use load::{ReplicaLoad, ReplicaSnapshot, ReplicaSpec};
pub use policy::{
    llumnix_freeness, make_policy, policy_names, sal_start_delay, Cluster, Policy, PolicyInfo,
    RouteRequest, POLICIES,
};
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
        Ok(())
    }
}

fn check_config_count(field: &'static str, value: u64) -> Result<()> {
    limits::count_in(Blame::Config, field, &Value::from(value), 1, MAX_COUNT).map(|_| ())
}

fn check_request(request: &RouteRequest) -> Result<()> {
    check_count("prompt_tokens", request.prompt_tokens, 1)?;
    if let Some(m) = request.max_output_tokens {
        check_count("max_output_tokens", m, 1)?;
    }
    if let Some(p) = request.predicted_output_tokens {
        check_count("predicted_output_tokens", p, 0)?;
    }
    Ok(())
}

/// A live request: where it went and what it was charged there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    pub replica: usize,
    pub prompt_tokens: u64,
    pub max_output_tokens: Option<u64>,
    pub decode_estimate: u64,
    pub output_tokens: u64,
    pub started: bool,
    /// Blocks charged to the replica's `used_blocks` (0 until started).
    pub used_blocks: u64,
}

/// Everything a [`Router`] has learned since it was built, as plain data: with its
/// [`RouterConfig`], [`Router::from_state`] rebuilds a router that decides exactly as this
/// one would (pickling). Live requests are sorted by id.
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
}

impl<K: RequestKey> Router<K> {
    pub fn new(config: RouterConfig) -> Result<Self> {
        config.validate()?;
        let policy = make_policy(&config.policy, config.seed)?;
        let replicas: Vec<ReplicaLoad> = config
            .replicas
            .iter()
            .map(|s| ReplicaLoad::new(*s))
            .collect();
        Ok(Router {
            snapshotted: vec![false; replicas.len()],
            replicas,
            policy,
            live: HashMap::new(),
            num_finished: 0,
            sum_input_tokens: 0,
            sum_output_tokens: 0,
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
        let mut live: Vec<(K, Live)> = self.live.iter().map(|(k, l)| (k.clone(), *l)).collect();
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
    pub fn decode_estimate(&self, request: &RouteRequest) -> u64 {
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
    pub fn route(&mut self, id: K, request: RouteRequest) -> Result<usize> {
        check_request(&request)?;
        if self.live.contains_key(&id) {
            return Err(Error::DuplicateRequest {
                id: id.request_id(),
            });
        }
        Ok(self.dispatch(id, request))
    }

    /// `route` for each request in order; all are checked first, so on error nothing is routed.
    pub fn route_many(&mut self, requests: Vec<(K, RouteRequest)>) -> Result<Vec<usize>> {
        {
            let mut seen: HashSet<&K> = HashSet::with_capacity(requests.len());
            for (id, request) in &requests {
                check_request(request)?;
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

    fn dispatch(&mut self, id: K, request: RouteRequest) -> usize {
        let estimate = self.decode_estimate(&request);
        let cluster = Cluster {
            replicas: &self.replicas,
            beta: self.beta(),
        };
        let last = self.replicas.len().saturating_sub(1);
        let index = self.policy.choose(&cluster, &request).min(last);
        if let Some(load) = self.replicas.get_mut(index) {
            load.waiting = load.waiting.saturating_add(1);
            load.queued_prefill_tokens = load
                .queued_prefill_tokens
                .saturating_add(request.prompt_tokens);
            load.remaining_decode_tokens = load.remaining_decode_tokens.saturating_add(estimate);
        }
        self.live.insert(
            id,
            Live {
                replica: index,
                prompt_tokens: request.prompt_tokens,
                max_output_tokens: request.max_output_tokens,
                decode_estimate: estimate,
                output_tokens: 0,
                started: false,
                used_blocks: 0,
            },
        );
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
        }
        load.remaining_decode_tokens = load
            .remaining_decode_tokens
            .saturating_sub(live.remaining_decode());
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
                load.remaining_decode_tokens,
                load.used_blocks,
            );
            let want = (
                sum.waiting,
                sum.running,
                sum.queued_prefill_tokens,
                sum.remaining_decode_tokens,
                sum.used_blocks,
            );
            if got != want {
                return Err(Error::Invariant {
                    message: format!(
                        "replica {i}: (waiting, running, queued_prefill_tokens, \
                         remaining_decode_tokens, used_blocks) = {got:?}, but its live requests sum to {want:?}"
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

    fn req(prompt: u64) -> RouteRequest {
        RouteRequest::new(prompt)
    }

    #[test]
    fn a_restored_router_decides_as_the_original() {
        for policy in policy_names() {
            let mut a = router(policy, 3);
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
}
