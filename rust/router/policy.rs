//! Routing policies (DESIGN §6): a trait, a registry, and the policies themselves.
//!
//! Adding a router = one `impl Policy` and one line in [`POLICIES`].
//!
//! Every load-based policy picks the replica minimizing
//! `(policy score, outstanding requests, replica index)` lexicographically: ties go to the
//! replica with fewer outstanding requests, then to the lowest index. Scores are computed
//! in integers or with IEEE-754 operations the Python reference repeats one for one, so the
//! two always choose the same replica.

use std::cmp::Ordering;
use std::fmt;

use super::load::ReplicaLoad;
use super::rng::SplitMix64;
use crate::error::{Error, Result};

/// What a policy may look at about the request being routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRequest {
    pub prompt_tokens: u64,
    /// The request's cap on generated tokens, when the caller knows it.
    pub max_output_tokens: Option<u64>,
    /// A length predictor's guess, when there is one.
    pub predicted_output_tokens: Option<u64>,
}

impl RouteRequest {
    pub fn new(prompt_tokens: u64) -> Self {
        RouteRequest {
            prompt_tokens,
            max_output_tokens: None,
            predicted_output_tokens: None,
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
}

pub trait Policy: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;

    /// The replica for `request`: an index in `[0, cluster.replicas.len())`.
    /// Called only when the request is valid and will be dispatched; may advance the
    /// policy's own state (round-robin pointer, random generator).
    fn choose(&mut self, cluster: &Cluster<'_>, request: &RouteRequest) -> usize;

    /// The policy's own state as one number (the round-robin pointer, the generator's
    /// state; 0 for stateless policies), so a router can be saved and restored.
    fn state(&self) -> u64 {
        0
    }

    /// Restore what [`Policy::state`] returned.
    fn set_state(&mut self, _state: u64) {}
}

/// One registry entry.
pub struct PolicyInfo {
    pub name: &'static str,
    pub summary: &'static str,
    build: fn(seed: u64) -> Box<dyn Policy>,
}

/// The registry, in the order `policy_names()` lists them.
pub static POLICIES: &[PolicyInfo] = &[
    PolicyInfo {
        name: "round_robin",
        summary: "next replica in turn (0, 1, ..., n-1, 0, ...)",
        build: |_| Box::new(RoundRobin { next: 0 }),
    },
    PolicyInfo {
        name: "random",
        summary: "uniform over replicas, seeded SplitMix64",
        build: |seed| {
            Box::new(Random {
                rng: SplitMix64::new(seed),
            })
        },
    },
    PolicyInfo {
        name: "power_of_two",
        summary: "two distinct random replicas; the one with fewer outstanding requests",
        build: |seed| {
            Box::new(PowerOfTwo {
                rng: SplitMix64::new(seed),
            })
        },
    },
    PolicyInfo {
        name: "least_requests",
        summary: "fewest outstanding requests (join-shortest-queue)",
        build: |_| Box::new(LeastRequests),
    },
    PolicyInfo {
        name: "least_tokens",
        summary: "fewest outstanding tokens (queued prefill + remaining decode estimate)",
        build: |_| Box::new(LeastTokens),
    },
    PolicyInfo {
        name: "llumnix",
        summary: "most free KV per seat: (free blocks - queued blocks) / (running + 1)",
        build: |_| Box::new(Llumnix),
    },
    PolicyInfo {
        name: "sal",
        summary: "smallest expected start delay: max(memory wait, queue wait) in iterations",
        build: |_| Box::new(Sal),
    },
];

pub fn policy_names() -> Vec<&'static str> {
    POLICIES.iter().map(|p| p.name).collect()
}

pub fn make_policy(name: &str, seed: u64) -> Result<Box<dyn Policy>> {
    POLICIES
        .iter()
        .find(|p| p.name == name)
        .map(|p| (p.build)(seed))
        .ok_or_else(|| Error::UnknownName {
            field: "policy",
            name: name.to_string(),
            valid: policy_names(),
        })
}

/// The replica minimizing `(key, outstanding requests, index)`; `cmp` orders keys.
#[inline]
fn best_by<T>(
    replicas: &[ReplicaLoad],
    key: impl Fn(&ReplicaLoad) -> T,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> usize {
    let Some(first) = replicas.first() else {
        return 0;
    };
    let mut best = 0;
    let mut best_key = key(first);
    let mut best_outstanding = first.outstanding_requests();
    for (i, r) in replicas.iter().enumerate().skip(1) {
        let k = key(r);
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
    fn choose(&mut self, cluster: &Cluster<'_>, _: &RouteRequest) -> usize {
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
    fn choose(&mut self, cluster: &Cluster<'_>, _: &RouteRequest) -> usize {
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
    fn choose(&mut self, cluster: &Cluster<'_>, _: &RouteRequest) -> usize {
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
    fn choose(&mut self, cluster: &Cluster<'_>, _: &RouteRequest) -> usize {
        best_by(cluster.replicas, |_| (), |_, _| Ordering::Equal)
    }
}

#[derive(Debug)]
pub struct LeastTokens;

impl Policy for LeastTokens {
    fn name(&self) -> &'static str {
        "least_tokens"
    }
    fn choose(&mut self, cluster: &Cluster<'_>, _: &RouteRequest) -> usize {
        best_by(cluster.replicas, ReplicaLoad::outstanding_tokens, u64::cmp)
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
    fn choose(&mut self, cluster: &Cluster<'_>, _: &RouteRequest) -> usize {
        // Most free per seat first: a before b when a.num / a.den > b.num / b.den.
        best_by(cluster.replicas, llumnix_freeness, |a, b| {
            (b.0 * a.1).cmp(&(a.0 * b.1))
        })
    }
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

#[derive(Debug)]
pub struct Sal;

impl Policy for Sal {
    fn name(&self) -> &'static str {
        "sal"
    }
    fn choose(&mut self, cluster: &Cluster<'_>, request: &RouteRequest) -> usize {
        let (prompt, beta) = (request.prompt_tokens, cluster.beta);
        best_by(
            cluster.replicas,
            |r| sal_start_delay(r, prompt, beta),
            f64::total_cmp,
        )
    }
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
        p.choose(
            &Cluster {
                replicas,
                beta: 5.0,
            },
            &RouteRequest::new(prompt),
        )
    }

    #[test]
    fn registry_names_match_policies() {
        for info in POLICIES {
            assert_eq!((info.build)(0).name(), info.name);
        }
        let err = make_policy("nope", 0).unwrap_err();
        assert!(matches!(err, Error::UnknownName { ref valid, .. } if valid.len() == 7));
        assert!(err.to_string().contains("least_requests"));
    }

    #[test]
    fn round_robin_cycles() {
        let r = loads(3);
        let mut p = make_policy("round_robin", 0).unwrap();
        let c = Cluster {
            replicas: &r,
            beta: 1.0,
        };
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
            assert_eq!(
                p.choose(
                    &Cluster {
                        replicas: &r,
                        beta: 1.0
                    },
                    &RouteRequest::new(1)
                ),
                0
            );
        }
        let one = loads(1);
        assert_eq!(
            p.choose(
                &Cluster {
                    replicas: &one,
                    beta: 1.0
                },
                &RouteRequest::new(1)
            ),
            0
        );
    }
}
