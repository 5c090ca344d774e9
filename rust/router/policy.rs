//! Routing policies (DESIGN §6): a trait, a registry, and the policies themselves.
//!
//! Adding a router = one `impl Policy` and one line in [`POLICIES`].
//!
//! Every load-based policy picks the replica minimizing
//! `(policy score, outstanding requests, replica index)` lexicographically: ties go to the
//! replica with fewer outstanding requests, then to the lowest index. Scores are computed
//! in integers or with IEEE-754 operations the Python reference repeats one for one, so the
//! two always choose the same replica.
//!
//! The cache-aware policies (`cache_aware`, `dynamo_kv`, `sal_uncached`) also see, per
//! replica, how many of the request's prompt tokens are cached there ([`Cluster::cached_tokens`]:
//! the caller's exact overlap, or the router's own [`super::prefix::PrefixRecord`]).

use std::cmp::Ordering;
use std::fmt;

use super::load::ReplicaLoad;
use super::rng::SplitMix64;
use crate::error::{Error, Result};
use crate::hash::BlockHash;

/// What a policy may look at about the request being routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteRequest<'a> {
    pub prompt_tokens: u64,
    /// The request's cap on generated tokens, when the caller knows it.
    pub max_output_tokens: Option<u64>,
    /// A length predictor's guess, when there is one.
    pub predicted_output_tokens: Option<u64>,
    /// Chained hashes of the prompt's full blocks ([`crate::hash`]) at the replicas' block
    /// size, first block first; empty when unknown.
    pub block_hashes: &'a [BlockHash],
    /// Per replica: how many leading blocks of this prompt are cached there, exactly (as the
    /// replicas' schedulers know it). `None`: the router's own record decides.
    pub overlap_blocks: Option<&'a [u64]>,
}

impl RouteRequest<'_> {
    pub fn new(prompt_tokens: u64) -> Self {
        RouteRequest {
            prompt_tokens,
            ..Default::default()
        }
    }
}

/// What a policy may look at about the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    /// Never empty.
    pub replicas: &'a [ReplicaLoad],
    /// KV tokens a running request frees per engine iteration, on average (SAL's β).
    pub beta: f64,
    /// Per replica: prompt tokens of this request cached there,
    /// `min(overlap blocks × block_size, prompt_tokens)`. Filled only for policies whose
    /// [`Policy::prefixes`] is not [`PrefixUse::None`]; empty otherwise.
    pub cached_tokens: &'a [u64],
    /// Per replica: blocks in the router's prefix record (SGLang's tree size). Same rule.
    pub record_blocks: &'a [u64],
    /// Per replica: KV blocks its live requests would hold with this request added, shared
    /// prefix blocks once (Dynamo's potential decode blocks). Only for
    /// [`PrefixUse::RecordAndActive`].
    pub decode_blocks: &'a [u64],
}

impl<'a> Cluster<'a> {
    /// A cluster view without prefix information.
    pub fn new(replicas: &'a [ReplicaLoad], beta: f64) -> Self {
        Cluster {
            replicas,
            beta,
            cached_tokens: &[],
            record_blocks: &[],
            decode_blocks: &[],
        }
    }

    #[inline]
    fn cached(&self, i: usize) -> u64 {
        self.cached_tokens.get(i).copied().unwrap_or(0)
    }

    #[inline]
    fn record(&self, i: usize) -> u64 {
        self.record_blocks.get(i).copied().unwrap_or(0)
    }
}

/// Which prefix state a policy needs the router to keep and to show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixUse {
    None,
    /// Per replica, the record of hashes sent there; `cached_tokens` and `record_blocks`.
    Record,
    /// Also the blocks its live requests hold; `decode_blocks`.
    RecordAndActive,
}

pub trait Policy: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;

    /// The replica for `request`: an index in `[0, cluster.replicas.len())`.
    /// Called only when the request is valid and will be dispatched; may advance the
    /// policy's own state (round-robin pointer, random generator).
    fn choose(&mut self, cluster: &Cluster<'_>, request: &RouteRequest<'_>) -> usize;

    fn prefixes(&self) -> PrefixUse {
        PrefixUse::None
    }

    /// The policy's own state as one number (the round-robin pointer, the generator's
    /// state; 0 for stateless policies), so a router can be saved and restored.
    fn state(&self) -> u64 {
        0
    }

    /// Restore what [`Policy::state`] returned.
    fn set_state(&mut self, _state: u64) {}
}

/// The cache-aware policies' settings (ignored by the others).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyParams {
    /// `cache_aware`: route by prefix when the best match covers more than this share of
    /// the prompt (SGLang's `--cache-threshold`, default 0.3).
    pub cache_threshold: f64,
    /// `cache_aware`: the load is imbalanced when `max - min > balance_abs_threshold` and
    /// `max > min × balance_rel_threshold`, load = outstanding requests (SGLang's defaults
    /// 64 and 1.5).
    pub balance_abs_threshold: u64,
    pub balance_rel_threshold: f64,
    /// `dynamo_kv`: weight of the prefill blocks in the cost (Dynamo's
    /// `--kv-overlap-score-weight`, default 1.0).
    pub overlap_score_weight: f64,
    /// `dynamo_kv`: 0 picks the cheapest replica; above 0, a softmax sample over the
    /// normalised costs (Dynamo's `--router-temperature`, default 0.0).
    pub router_temperature: f64,
}

impl Default for PolicyParams {
    /// SGLang's router launcher (`sglang_router.launch_router`) and Dynamo's frontend
    /// defaults.
    fn default() -> Self {
        PolicyParams {
            cache_threshold: 0.3,
            balance_abs_threshold: 64,
            balance_rel_threshold: 1.5,
            overlap_score_weight: 1.0,
            router_temperature: 0.0,
        }
    }
}

/// One registry entry.
pub struct PolicyInfo {
    pub name: &'static str,
    pub summary: &'static str,
    build: fn(seed: u64, params: &PolicyParams) -> Box<dyn Policy>,
}

/// The registry, in the order `policy_names()` lists them.
pub static POLICIES: &[PolicyInfo] = &[
    PolicyInfo {
        name: "round_robin",
        summary: "next replica in turn (0, 1, ..., n-1, 0, ...)",
        build: |_, _| Box::new(RoundRobin { next: 0 }),
    },
    PolicyInfo {
        name: "random",
        summary: "uniform over replicas, seeded SplitMix64",
        build: |seed, _| {
            Box::new(Random {
                rng: SplitMix64::new(seed),
            })
        },
    },
    PolicyInfo {
        name: "power_of_two",
        summary: "two distinct random replicas; the one with fewer outstanding requests",
        build: |seed, _| {
            Box::new(PowerOfTwo {
                rng: SplitMix64::new(seed),
            })
        },
    },
    PolicyInfo {
        name: "least_requests",
        summary: "fewest outstanding requests (join-shortest-queue)",
        build: |_, _| Box::new(LeastRequests),
    },
    PolicyInfo {
        name: "least_tokens",
        summary: "fewest outstanding tokens (queued prefill + remaining decode estimate)",
        build: |_, _| Box::new(LeastTokens),
    },
    PolicyInfo {
        name: "llumnix",
        summary: "most free KV per seat: (free blocks - queued blocks) / (running + 1)",
        build: |_, _| Box::new(Llumnix),
    },
    PolicyInfo {
        name: "sal",
        summary: "smallest expected start delay: max(memory wait, queue wait) in iterations",
        build: |_, _| Box::new(Sal),
    },
    PolicyInfo {
        name: "cache_aware",
        summary: "SGLang's: least loaded when imbalanced, else longest prefix match above \
                  cache_threshold, else smallest prefix record",
        build: |_, params| Box::new(CacheAware { params: *params }),
    },
    PolicyInfo {
        name: "dynamo_kv",
        summary: "Dynamo's KV router: least overlap_score_weight x prefill blocks + decode \
                  blocks (softmax-sampled at router_temperature > 0)",
        build: |seed, params| {
            Box::new(DynamoKv {
                params: *params,
                rng: SplitMix64::new(seed),
                logits: Vec::new(),
            })
        },
    },
    PolicyInfo {
        name: "sal_uncached",
        summary: "SAL counting only the uncached part of each prompt",
        build: |_, _| Box::new(SalUncached),
    },
];

pub fn policy_names() -> Vec<&'static str> {
    POLICIES.iter().map(|p| p.name).collect()
}

/// A policy with the default [`PolicyParams`].
pub fn make_policy(name: &str, seed: u64) -> Result<Box<dyn Policy>> {
    make_policy_with(name, seed, &PolicyParams::default())
}

pub fn make_policy_with(name: &str, seed: u64, params: &PolicyParams) -> Result<Box<dyn Policy>> {
    POLICIES
        .iter()
        .find(|p| p.name == name)
        .map(|p| (p.build)(seed, params))
        .ok_or_else(|| Error::UnknownName {
            field: "policy",
            name: name.to_string(),
            valid: policy_names(),
        })
}

/// The replica minimizing `(key(i, replica), outstanding requests, i)`; `cmp` orders keys.
#[inline]
fn best_by<T>(
    replicas: &[ReplicaLoad],
    key: impl Fn(usize, &ReplicaLoad) -> T,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> usize {
    let Some(first) = replicas.first() else {
        return 0;
    };
    let mut best = 0;
    let mut best_key = key(0, first);
    let mut best_outstanding = first.outstanding_requests();
    for (i, r) in replicas.iter().enumerate().skip(1) {
        let k = key(i, r);
        let better = match cmp(&k, &best_key) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => r.outstanding_requests() < best_outstanding,
        };
        if better {
            best = i;
            best_key = k;
            best_outstanding = r.outstanding_requests();
        }
    }
    best
}

#[derive(Debug)]
pub struct RoundRobin {
    next: usize,
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }
    fn choose(&mut self, cluster: &Cluster<'_>, _: &RouteRequest<'_>) -> usize {
        let n = cluster.replicas.len().max(1);
        let i = self.next % n;
        self.next = (i + 1) % n;
        i
    }
    fn state(&self) -> u64 {
        self.next as u64
    }
    fn set_state(&mut self, state: u64) {
        self.next = usize::try_from(state).unwrap_or(0);
    }
}

#[derive(Debug)]
pub struct Random {
    rng: SplitMix64,
}

impl Policy for Random {
    fn name(&self) -> &'static str {
        "random"
    }
    /// One draw per decision, also with a single replica.
    fn choose(&mut self, cluster: &Cluster<'_>, _: &RouteRequest<'_>) -> usize {
        self.rng.below(cluster.replicas.len() as u64) as usize
    }
    fn state(&self) -> u64 {
        self.rng.state()
    }
    fn set_state(&mut self, state: u64) {
        self.rng = SplitMix64::new(state);
    }
}

#[derive(Debug)]
pub struct PowerOfTwo {
    rng: SplitMix64,
}

impl Policy for PowerOfTwo {
    fn name(&self) -> &'static str {
        "power_of_two"
    }
    /// `i = below(n)`, `j = below(n - 1)`, `j += 1 if j >= i` (two distinct replicas,
    /// uniformly); the one with fewer outstanding requests, the lower index on a tie.
    /// With one replica: 0, and nothing is drawn.
    fn choose(&mut self, cluster: &Cluster<'_>, _: &RouteRequest<'_>) -> usize {
        let n = cluster.replicas.len() as u64;
        if n < 2 {
            return 0;
        }
        let i = self.rng.below(n);
        let mut j = self.rng.below(n - 1);
        if j >= i {
            j += 1;
        }
        let (lo, hi) = (i.min(j) as usize, i.max(j) as usize);
        match (cluster.replicas.get(lo), cluster.replicas.get(hi)) {
            (Some(a), Some(b)) if b.outstanding_requests() < a.outstanding_requests() => hi,
            _ => lo,
        }
    }
    fn state(&self) -> u64 {
        self.rng.state()
    }
    fn set_state(&mut self, state: u64) {
        self.rng = SplitMix64::new(state);
    }
}

#[derive(Debug)]
pub struct LeastRequests;

impl Policy for LeastRequests {
    fn name(&self) -> &'static str {
        "least_requests"
    }
    fn choose(&mut self, cluster: &Cluster<'_>, _: &RouteRequest<'_>) -> usize {
        best_by(cluster.replicas, |_, _| (), |_, _| Ordering::Equal)
    }
}

#[derive(Debug)]
pub struct LeastTokens;

impl Policy for LeastTokens {
    fn name(&self) -> &'static str {
        "least_tokens"
    }
    fn choose(&mut self, cluster: &Cluster<'_>, _: &RouteRequest<'_>) -> usize {
        best_by(cluster.replicas, |_, r| r.outstanding_tokens(), u64::cmp)
    }
}

/// Llumnix's freeness as an exact fraction `(free_blocks - queued_blocks) / (running + 1)`
/// (the numerator may be negative). Compared by cross-multiplication, never in floats.
pub fn llumnix_freeness(load: &ReplicaLoad) -> (i128, i128) {
    let num = i128::from(load.free_blocks()) - i128::from(load.queued_blocks());
    let den = i128::from(load.running) + 1;
    (num, den)
}

#[derive(Debug)]
pub struct Llumnix;

impl Policy for Llumnix {
    fn name(&self) -> &'static str {
        "llumnix"
    }
    fn choose(&mut self, cluster: &Cluster<'_>, _: &RouteRequest<'_>) -> usize {
        // Most free per seat first: a before b when a.num / a.den > b.num / b.den.
        best_by(
            cluster.replicas,
            |_, r| llumnix_freeness(r),
            |a, b| (b.0 * a.1).cmp(&(a.0 * b.1)),
        )
    }
}

/// Expected iterations before a request can start when `queued` tokens (those ahead and its
/// own) must be prefilled there; see [`sal_start_delay`].
fn start_delay(load: &ReplicaLoad, queued: u128, beta: f64) -> f64 {
    let queue_wait = queued as f64 / load.max_num_batched_tokens as f64;
    let free_tokens = u128::from(load.free_blocks()) * u128::from(load.block_size);
    let mem_wait = if queued <= free_tokens {
        0.0
    } else if load.running == 0 {
        f64::INFINITY
    } else {
        (queued - free_tokens) as f64 / (load.running as f64 * beta)
    };
    mem_wait.max(queue_wait)
}

/// SAL's expected start delay (engine iterations) of a request with `prompt_tokens` on a
/// replica:
///
/// ```text
/// queued      = queued_prefill_tokens + prompt                     (tokens ahead, and its own)
/// queue_wait  = queued / max_num_batched_tokens
/// deficit     = queued - free_blocks * block_size                  (= mem(r) - free_kv_tokens(s),
///                                                                    free_kv_tokens = free - queued demand)
/// mem_wait    = 0                              if deficit <= 0
///             = +inf                           if running == 0    (nothing runs, nothing frees)
///             = deficit / (running * beta)     otherwise
/// delay       = max(mem_wait, queue_wait)
/// ```
///
/// The Python reference evaluates the same expression with the same float operations.
pub fn sal_start_delay(load: &ReplicaLoad, prompt_tokens: u64, beta: f64) -> f64 {
    let queued = u128::from(load.queued_prefill_tokens) + u128::from(prompt_tokens);
    start_delay(load, queued, beta)
}

/// [`sal_start_delay`] counting only tokens to compute: `queued = queued_prefill_uncached_tokens
/// + uncached_prompt_tokens` (cached blocks need neither compute nor new memory).
pub fn sal_uncached_start_delay(load: &ReplicaLoad, uncached_prompt_tokens: u64, beta: f64) -> f64 {
    let queued =
        u128::from(load.queued_prefill_uncached_tokens) + u128::from(uncached_prompt_tokens);
    start_delay(load, queued, beta)
}

#[derive(Debug)]
pub struct Sal;

impl Policy for Sal {
    fn name(&self) -> &'static str {
        "sal"
    }
    fn choose(&mut self, cluster: &Cluster<'_>, request: &RouteRequest<'_>) -> usize {
        let (prompt, beta) = (request.prompt_tokens, cluster.beta);
        best_by(
            cluster.replicas,
            |_, r| sal_start_delay(r, prompt, beta),
            f64::total_cmp,
        )
    }
}

#[derive(Debug)]
pub struct SalUncached;

impl Policy for SalUncached {
    fn name(&self) -> &'static str {
        "sal_uncached"
    }
    fn choose(&mut self, cluster: &Cluster<'_>, request: &RouteRequest<'_>) -> usize {
        let (prompt, beta) = (request.prompt_tokens, cluster.beta);
        best_by(
            cluster.replicas,
            |i, r| sal_uncached_start_delay(r, prompt.saturating_sub(cluster.cached(i)), beta),
            f64::total_cmp,
        )
    }
    fn prefixes(&self) -> PrefixUse {
        PrefixUse::Record
    }
}

/// SGLang's `cache_aware` router, on block hashes instead of request text:
///
/// ```text
/// load(i)     = outstanding requests of replica i
/// imbalanced  = max load - min load > balance_abs_threshold
///               and max load > min load * balance_rel_threshold
/// imbalanced:   the least loaded replica (lowest index on a tie)
/// otherwise:    best = most cached tokens (ties: fewer outstanding requests, lower index)
///               best                              if cached(best) / prompt > cache_threshold
///               the smallest prefix record        otherwise (ties: as above)
/// ```
///
/// Either way the router then records the request's hashes on the chosen replica.
#[derive(Debug)]
pub struct CacheAware {
    params: PolicyParams,
}

impl CacheAware {
    pub fn is_imbalanced(&self, replicas: &[ReplicaLoad]) -> bool {
        let loads = replicas.iter().map(ReplicaLoad::outstanding_requests);
        let max = loads.clone().max().unwrap_or(0);
        let min = loads.min().unwrap_or(0);
        max - min > self.params.balance_abs_threshold
            && max as f64 > min as f64 * self.params.balance_rel_threshold
    }
}

impl Policy for CacheAware {
    fn name(&self) -> &'static str {
        "cache_aware"
    }
    fn choose(&mut self, cluster: &Cluster<'_>, request: &RouteRequest<'_>) -> usize {
        let replicas = cluster.replicas;
        if self.is_imbalanced(replicas) {
            return best_by(replicas, |_, _| (), |_, _| Ordering::Equal);
        }
        let best = best_by(replicas, |i, _| cluster.cached(i), |a, b| b.cmp(a));
        let rate = cluster.cached(best) as f64 / request.prompt_tokens.max(1) as f64;
        if rate > self.params.cache_threshold {
            best
        } else {
            best_by(replicas, |i, _| cluster.record(i), u64::cmp)
        }
    }
    fn prefixes(&self) -> PrefixUse {
        PrefixUse::Record
    }
}

/// Costs within this of the smallest tie at temperature 0 (Dynamo's epsilon).
pub const DYNAMO_TIE_EPSILON: f64 = 1e-5;

/// Dynamo's KV-router cost of sending a request to a replica (lower is better):
///
/// ```text
/// prefill_tokens = queued_prefill_uncached_tokens + (prompt - cached tokens there)
/// prefill_blocks = prefill_tokens / block_size                   (a float)
/// decode_blocks  = blocks its live requests hold with this one added (shared blocks once)
/// cost           = overlap_score_weight * prefill_blocks + decode_blocks
/// ```
pub fn dynamo_cost(
    load: &ReplicaLoad,
    uncached_prompt_tokens: u64,
    decode_blocks: u64,
    overlap_score_weight: f64,
) -> f64 {
    let prefill_tokens = load
        .queued_prefill_uncached_tokens
        .saturating_add(uncached_prompt_tokens);
    let prefill_blocks = prefill_tokens as f64 / load.block_size as f64;
    overlap_score_weight * prefill_blocks + decode_blocks as f64
}

/// Dynamo's KV router (`--router-mode kv`):
///
/// ```text
/// temperature 0:  among replicas within DYNAMO_TIE_EPSILON of the least cost, the smallest
///                 prefix record, then fewer outstanding requests, then the lowest index
/// temperature t:  lo, hi = min, max cost;  all equal: p_i = 1/n
///                 else  s_i = -(cost_i / (hi - lo)) / t;  e_i = exp(s_i - max s);
///                       p_i = e_i / sum e        (sums in index order)
///                 u = uniform [0, 1) (53 bits of SplitMix64);  first i with u <= p_0+..+p_i
///                 (the last replica if rounding leaves u above the total)
/// ```
#[derive(Debug)]
pub struct DynamoKv {
    params: PolicyParams,
    rng: SplitMix64,
    logits: Vec<f64>,
}

impl Policy for DynamoKv {
    fn name(&self) -> &'static str {
        "dynamo_kv"
    }
    fn choose(&mut self, cluster: &Cluster<'_>, request: &RouteRequest<'_>) -> usize {
        let prompt = request.prompt_tokens;
        let w = self.params.overlap_score_weight;
        self.logits.clear();
        self.logits
            .extend(cluster.replicas.iter().enumerate().map(|(i, r)| {
                let decode = cluster.decode_blocks.get(i).copied().unwrap_or(0);
                dynamo_cost(r, prompt.saturating_sub(cluster.cached(i)), decode, w)
            }));
        let t = self.params.router_temperature;
        if t > 0.0 {
            let u = self.rng.next_f64();
            return softmax_pick(&self.logits, t, u);
        }
        let lo = self.logits.iter().copied().fold(f64::INFINITY, f64::min);
        let logits = &self.logits;
        best_by(
            cluster.replicas,
            |i, _| {
                let tied = logits
                    .get(i)
                    .is_some_and(|&c| (c - lo).abs() < DYNAMO_TIE_EPSILON);
                (!tied, cluster.record(i))
            },
            |a, b| a.cmp(b),
        )
    }
    fn prefixes(&self) -> PrefixUse {
        PrefixUse::RecordAndActive
    }
}

/// Dynamo's softmax sample over costs (see [`DynamoKv`]) with the uniform draw `u`.
pub fn softmax_pick(costs: &[f64], temperature: f64, u: f64) -> usize {
    let n = costs.len();
    if n == 0 {
        return 0;
    }
    let lo = costs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = costs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut cumulative = 0.0;
    if lo == hi {
        let p = 1.0 / n as f64;
        for i in 0..n {
            cumulative += p;
            if u <= cumulative {
                return i;
            }
        }
        return n - 1;
    }
    let scaled: Vec<f64> = costs
        .iter()
        .map(|&c| -(c / (hi - lo)) / temperature)
        .collect();
    let top = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scaled.iter().map(|&s| (s - top).exp()).collect();
    let mut total = 0.0;
    for &e in &exps {
        total += e;
    }
    for (i, &e) in exps.iter().enumerate() {
        cumulative += e / total;
        if u <= cumulative {
            return i;
        }
    }
    n - 1
}

#[cfg(test)]
mod tests {
    use super::super::load::ReplicaSpec;
    use super::*;

    fn loads(n: usize) -> Vec<ReplicaLoad> {
        vec![ReplicaLoad::new(ReplicaSpec::default()); n]
    }

    fn pick(name: &str, replicas: &[ReplicaLoad], prompt: u64) -> usize {
        let mut p = make_policy(name, 0).unwrap();
        p.choose(&Cluster::new(replicas, 5.0), &RouteRequest::new(prompt))
    }

    #[test]
    fn registry_names_match_policies() {
        for info in POLICIES {
            assert_eq!((info.build)(0, &PolicyParams::default()).name(), info.name);
        }
        let err = make_policy("nope", 0).unwrap_err();
        assert!(matches!(err, Error::UnknownName { ref valid, .. } if valid.len() == 10));
        assert!(err.to_string().contains("least_requests"));
    }

    #[test]
    fn round_robin_cycles() {
        let r = loads(3);
        let mut p = make_policy("round_robin", 0).unwrap();
        let c = Cluster::new(&r, 1.0);
        let got: Vec<usize> = (0..7)
            .map(|_| p.choose(&c, &RouteRequest::new(1)))
            .collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn ties_go_to_fewer_requests_then_lowest_index() {
        let mut r = loads(4);
        assert_eq!(pick("least_requests", &r, 10), 0);
        assert_eq!(pick("least_tokens", &r, 10), 0);
        assert_eq!(pick("llumnix", &r, 10), 0);
        assert_eq!(pick("sal", &r, 10), 0);
        r[0].waiting = 1;
        r[1].waiting = 1;
        assert_eq!(pick("least_requests", &r, 10), 2);
        // Same tokens everywhere: fewer outstanding requests wins.
        assert_eq!(pick("least_tokens", &r, 10), 2);
        assert_eq!(pick("sal", &r, 10), 2);
    }

    #[test]
    fn least_tokens_counts_tokens_not_requests() {
        let mut r = loads(2);
        r[0].waiting = 1;
        r[0].queued_prefill_tokens = 5000;
        r[1].running = 3;
        r[1].remaining_decode_tokens = 300;
        assert_eq!(pick("least_tokens", &r, 10), 1);
        assert_eq!(pick("least_requests", &r, 10), 0);
    }

    #[test]
    fn llumnix_compares_fractions_exactly() {
        let mut r = loads(2);
        // 10/3 vs 7/2: 3.33 < 3.5, so replica 1.
        r[0].used_blocks = r[0].num_gpu_blocks - 10;
        r[0].running = 2;
        r[1].used_blocks = r[1].num_gpu_blocks - 7;
        r[1].running = 1;
        assert_eq!(pick("llumnix", &r, 1), 1);
        // Queued demand counts against free blocks: 7 - ceil(33/16) = 4 -> 4/2 < 10/3.
        r[1].queued_prefill_tokens = 33;
        assert_eq!(pick("llumnix", &r, 1), 0);
    }

    #[test]
    fn sal_prefers_free_memory_over_a_short_full_queue() {
        let spec = ReplicaSpec {
            num_gpu_blocks: 100,
            block_size: 16,
            max_num_batched_tokens: 2048,
        };
        let mut r = vec![ReplicaLoad::new(spec); 2];
        // Replica 0: nothing queued but the cache is full.
        r[0].running = 4;
        r[0].used_blocks = 100;
        // Replica 1: 1000 tokens queued, plenty of memory.
        r[1].waiting = 3;
        r[1].queued_prefill_tokens = 1000;
        assert_eq!(pick("sal", &r, 500), 1);
        assert_eq!(pick("least_tokens", &r, 500), 0);
        // Full and idle: cannot start until something runs; infinite delay.
        r[0].running = 0;
        assert_eq!(sal_start_delay(&r[0], 500, 5.0), f64::INFINITY);
        assert_eq!(sal_start_delay(&r[1], 100, 5.0), 1100.0 / 2048.0);
    }

    #[test]
    fn power_of_two_picks_two_distinct_and_the_lighter() {
        let mut r = loads(2);
        r[1].waiting = 5;
        let mut p = make_policy("power_of_two", 3).unwrap();
        for _ in 0..50 {
            assert_eq!(p.choose(&Cluster::new(&r, 1.0), &RouteRequest::new(1)), 0);
        }
        let one = loads(1);
        assert_eq!(p.choose(&Cluster::new(&one, 1.0), &RouteRequest::new(1)), 0);
    }

    fn prefix_cluster<'a>(
        replicas: &'a [ReplicaLoad],
        cached: &'a [u64],
        record: &'a [u64],
        decode: &'a [u64],
    ) -> Cluster<'a> {
        Cluster {
            cached_tokens: cached,
            record_blocks: record,
            decode_blocks: decode,
            ..Cluster::new(replicas, 5.0)
        }
    }

    #[test]
    fn cache_aware_follows_sglang_rules() {
        let mut r = loads(3);
        let params = PolicyParams {
            balance_abs_threshold: 4,
            balance_rel_threshold: 1.5,
            cache_threshold: 0.5,
            ..PolicyParams::default()
        };
        let mut p = make_policy_with("cache_aware", 0, &params).unwrap();
        let req = RouteRequest::new(100);
        // Balanced: the longest match wins when it covers more than half the prompt.
        let c = prefix_cluster(&r, &[0, 64, 48], &[5, 9, 1], &[]);
        assert_eq!(p.choose(&c, &req), 1);
        // At or below the threshold: the smallest record.
        let c = prefix_cluster(&r, &[0, 50, 48], &[5, 9, 1], &[]);
        assert_eq!(p.choose(&c, &req), 2);
        // Imbalanced (10 - 5 > 4 and 10 > 5 * 1.5): the least loaded.
        r[0].waiting = 5;
        r[1].waiting = 10;
        r[2].waiting = 6;
        let c = prefix_cluster(&r, &[0, 64, 48], &[5, 9, 1], &[]);
        assert_eq!(p.choose(&c, &req), 0);
        // 26 - 20 > 4 but not 26 > 20 * 1.5: balanced again.
        r[0].waiting = 20;
        r[1].waiting = 26;
        r[2].waiting = 20;
        let c = prefix_cluster(&r, &[0, 64, 48], &[5, 9, 1], &[]);
        assert_eq!(p.choose(&c, &req), 1);
    }

    #[test]
    fn dynamo_cost_and_temperature() {
        let spec = ReplicaSpec {
            num_gpu_blocks: 100,
            block_size: 10,
            max_num_batched_tokens: 100,
        };
        let mut r = vec![ReplicaLoad::new(spec); 3];
        r[0].queued_prefill_uncached_tokens = 55;
        // cost = 1.0 * (queued + prompt - cached) / 10 + decode
        assert_eq!(dynamo_cost(&r[0], 40, 7, 1.0), 9.5 + 7.0);
        assert_eq!(dynamo_cost(&r[1], 40, 7, 2.0), 8.0 + 7.0);
        let mut p = make_policy("dynamo_kv", 0).unwrap();
        let req = RouteRequest::new(100);
        // Costs 16.5, 10 + 6 = 16, 6 + 12 = 18.
        let c = prefix_cluster(&r, &[0, 0, 40], &[0, 0, 0], &[7, 6, 12]);
        assert_eq!(p.choose(&c, &req), 1);
        // A tie within epsilon goes to the smaller record.
        let c = prefix_cluster(&r, &[0, 0, 0], &[3, 3, 2], &[7, 6, 6]);
        assert_eq!(p.choose(&c, &req), 2);
        // At a high temperature every replica gets picked; at a low one, the cheapest.
        let hot = PolicyParams {
            router_temperature: 100.0,
            ..PolicyParams::default()
        };
        let mut p = make_policy_with("dynamo_kv", 7, &hot).unwrap();
        let c = prefix_cluster(&r, &[0, 0, 40], &[0, 0, 0], &[7, 6, 12]);
        let mut seen = [0; 3];
        for _ in 0..300 {
            seen[p.choose(&c, &req)] += 1;
        }
        assert!(seen.iter().all(|&k| k > 50), "{seen:?}");
        assert_eq!(softmax_pick(&[1.0, 2.0, 3.0], 1e-3, 0.999), 0);
        assert_eq!(softmax_pick(&[3.0, 2.0, 1.0], 1e-3, 0.5), 2);
        assert_eq!(softmax_pick(&[1.0, 1.0], 1.0, 0.5), 0);
        assert_eq!(softmax_pick(&[1.0, 1.0], 1.0, 0.75), 1);
    }

    #[test]
    fn sal_uncached_counts_only_the_uncached_part() {
        let spec = ReplicaSpec {
            num_gpu_blocks: 1000,
            block_size: 16,
            max_num_batched_tokens: 1000,
        };
        let mut r = vec![ReplicaLoad::new(spec); 2];
        r[0].queued_prefill_tokens = 900;
        r[0].queued_prefill_uncached_tokens = 100;
        r[1].queued_prefill_tokens = 300;
        r[1].queued_prefill_uncached_tokens = 300;
        let c = prefix_cluster(&r, &[600, 0], &[], &[]);
        // Uncached: (100 + 200) / 1000 vs (300 + 800) / 1000; plain SAL: 1700 vs 1100.
        assert_eq!(pick("sal", &r, 800), 1);
        assert_eq!(
            make_policy("sal_uncached", 0)
                .unwrap()
                .choose(&c, &RouteRequest::new(800)),
            0
        );
        assert_eq!(sal_uncached_start_delay(&r[0], 200, 1.0), 0.3);
    }
}
