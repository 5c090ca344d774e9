//! Engine policies: the waiting queue's order, the victim choice and the admission rule
//! (DESIGN §5). Each policy owns its waiting queue; every order is kept in an O(log n)
//! structure (a B-tree, or for LARRY a kinetic tournament), never re-sorted per step.
//!
//! To add a policy: implement [`Policy`] below, give it a [`PolicyKind`] variant and name
//! (`rust/config.rs`) and an arm in [`make_policy`].
//!
//! Under `semantics = "vllm_v1"` the scheduler offers every policy *all* running requests as
//! victim candidates (vLLM's rule; one already scheduled this step is un-scheduled), and:
//! - `fcfs` is vLLM's deque: arrivals at the tail, preempted requests back at the head;
//!   victim the last running (vLLM's `running[-1]`).
//! - `priority` is vLLM's heap: `(priority, arrival_time, str(request_id))`, then add order;
//!   victim the worst `(priority, arrival_time)`, exact ties to the first in running order
//!   (Python's `max`).
//! - `sjf`, `oracle_srpt`: their own waiting key (preempted requests re-enter by it) and
//!   victim rule (the largest remaining, ties to later arrival, then later add), over all
//!   running.
//! - `larry`, `larry_tail`, `larry_slack`: their own order; victim the last running, as
//!   `fcfs`.
//! - `no_preempt`: FCFS order by arrival; admission also needs its full reservation to fit in
//!   the usable blocks; it never needs a victim.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::blocks::LinkedIds;
use super::kinetic::{KineticTournament, Line};
use super::request::{Request, RequestId};
use crate::config::{Named, PolicyKind, SchedulerConfig, Semantics};

/// What a policy needs to see of the live requests: the slab, indexed by slot.
pub type Slab = [Option<Request>];

pub trait Policy: Send + Sync {
    fn name(&self) -> &'static str;
    /// May this policy preempt running requests?
    fn preempts(&self) -> bool {
        true
    }
    /// Does admission reserve blocks for prompt + max_output_tokens (no-evict)?
    fn reserves_full_output(&self) -> bool {
        false
    }
    /// A request enters the waiting queue (its tokens do not change while it waits).
    fn push(&mut self, slot: u32, req: &Request);
    /// A preempted request re-enters the waiting queue. Default: as a new one.
    fn requeue(&mut self, slot: u32, req: &Request) {
        self.push(slot, req);
    }
    /// A waiting request leaves the queue (admitted or aborted).
    fn remove(&mut self, slot: u32, req: &Request);
    /// The request to admit next, at load signal `load`.
    fn peek(&mut self, load: u64) -> Option<u32>;
    /// The request to admit next, at load signal `load` and clock `now` (s): what the
    /// scheduler asks. Default: the clock does not matter ([`Policy::peek`]).
    fn peek_at(&mut self, load: u64, _now: f64) -> Option<u32> {
        self.peek(load)
    }
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Victim among `candidates` (running, not yet scheduled this step, in admission order;
    /// never empty). Default: the most recently admitted (vLLM's rule).
    fn choose_victim(&self, candidates: &[u32], _reqs: &Slab) -> Option<u32> {
        candidates.last().copied()
    }
}

/// The names of every policy, in registry order.
pub fn policy_names() -> Vec<&'static str> {
    PolicyKind::names()
}

/// The policy `cfg.policy` names, with its parameters from `cfg`.
pub fn make_policy(cfg: &SchedulerConfig) -> Box<dyn Policy> {
    if cfg.semantics == Semantics::VllmV1 {
        match cfg.policy {
            PolicyKind::Fcfs => return Box::new(V1Fcfs::default()),
            PolicyKind::Priority => return Box::new(V1Priority::default()),
            _ => {}
        }
    }
    match cfg.policy {
        PolicyKind::Fcfs => Box::new(Ordered::new("fcfs", fcfs_key, None, true)),
        PolicyKind::Priority => Box::new(Ordered::new(
            "priority",
            priority_key,
            Some(priority_victim),
            true,
        )),
        PolicyKind::NoPreempt => Box::new(Ordered::new("no_preempt", fcfs_key, None, false)),
        PolicyKind::Sjf => {
            let aging = cfg.sjf_aging;
            Box::new(Ordered::new_with(
                "sjf",
                move |r| sjf_key(r, aging),
                Some(sjf_victim),
            ))
        }
        PolicyKind::OracleSrpt => Box::new(Ordered::new(
            "oracle_srpt",
            srpt_key,
            Some(srpt_victim),
            true,
        )),
        PolicyKind::Larry => Box::new(Larry::new(cfg.larry_alpha)),
        PolicyKind::LarryTail => Box::new(LarryTail::new(cfg.larry_alpha, cfg.larry_deadline)),
        PolicyKind::LarrySlack => Box::new(LarrySlack::new(cfg.larry_alpha, cfg.larry_slack)),
    }
}

// ------------------------------------------------------------------ keys

/// A total-ordered f64 (inputs are validated finite).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct F64(pub f64);

impl Eq for F64 {}
impl PartialOrd for F64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for F64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Waiting-order key: smaller is admitted first. Policies fill the leading fields they use;
/// every key ends with (arrival, seq) so ties break the same way everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WaitKey {
    pub int: i128,
    pub float: F64,
    pub arrival: F64,
    pub seq: u64,
}

fn base_key(r: &Request) -> WaitKey {
    WaitKey {
        int: 0,
        float: F64(0.0),
        arrival: F64(r.arrival_time),
        seq: r.seq,
    }
}

fn fcfs_key(r: &Request) -> WaitKey {
    base_key(r)
}

fn priority_key(r: &Request) -> WaitKey {
    WaitKey {
        int: r.priority as i128,
        ..base_key(r)
    }
}

/// `pred_remaining - aging*wait` orders as the static `pred_remaining + aging*arrival`.
fn sjf_key(r: &Request, aging: f64) -> WaitKey {
    WaitKey {
        float: F64(r.predicted_remaining() as f64 + aging * r.arrival_time),
        ..base_key(r)
    }
}

fn srpt_key(r: &Request) -> WaitKey {
    WaitKey {
        int: r.true_remaining() as i128,
        ..base_key(r)
    }
}

/// The candidate with the largest `key` (ties: later arrival, then later seq).
fn max_victim<K: Ord>(candidates: &[u32], reqs: &Slab, key: impl Fn(&Request) -> K) -> Option<u32> {
    candidates
        .iter()
        .filter_map(|&s| {
            reqs.get(s as usize)?
                .as_ref()
                .map(|r| (key(r), F64(r.arrival_time), r.seq, s))
        })
        .max()
        .map(|(_, _, _, s)| s)
}

fn priority_victim(c: &[u32], reqs: &Slab) -> Option<u32> {
    max_victim(c, reqs, |r| r.priority)
}

fn sjf_victim(c: &[u32], reqs: &Slab) -> Option<u32> {
    max_victim(c, reqs, |r| r.predicted_remaining())
}

fn srpt_victim(c: &[u32], reqs: &Slab) -> Option<u32> {
    max_victim(c, reqs, |r| r.true_remaining())
}

// ------------------------------------------------------------------ B-tree ordered policies

type Victim = fn(&[u32], &Slab) -> Option<u32>;

/// A policy whose waiting order is a static key per request: a `BTreeSet` of (key, slot).
pub struct Ordered<F: Fn(&Request) -> WaitKey + Send + Sync> {
    name: &'static str,
    key: F,
    victim: Option<Victim>,
    preempts: bool,
    queue: BTreeSet<(WaitKey, u32)>,
}

impl Ordered<fn(&Request) -> WaitKey> {
    fn new(
        name: &'static str,
        key: fn(&Request) -> WaitKey,
        victim: Option<Victim>,
        preempts: bool,
    ) -> Self {
        Ordered {
            name,
            key,
            victim,
            preempts,
            queue: BTreeSet::new(),
        }
    }
}

impl<F: Fn(&Request) -> WaitKey + Send + Sync> Ordered<F> {
    fn new_with(name: &'static str, key: F, victim: Option<Victim>) -> Self {
        Ordered {
            name,
            key,
            victim,
            preempts: true,
            queue: BTreeSet::new(),
        }
    }
}

impl<F: Fn(&Request) -> WaitKey + Send + Sync> Policy for Ordered<F> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn preempts(&self) -> bool {
        self.preempts
    }
    fn reserves_full_output(&self) -> bool {
        !self.preempts
    }
    fn push(&mut self, slot: u32, req: &Request) {
        self.queue.insert(((self.key)(req), slot));
    }
    fn remove(&mut self, slot: u32, req: &Request) {
        self.queue.remove(&((self.key)(req), slot));
    }
    fn peek(&mut self, _load: u64) -> Option<u32> {
        self.queue.first().map(|&(_, slot)| slot)
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
    fn choose_victim(&self, candidates: &[u32], reqs: &Slab) -> Option<u32> {
        match self.victim {
            Some(f) => f(candidates, reqs),
            None => candidates.last().copied(),
        }
    }
}

// ------------------------------------------------------------------ vLLM V1's queues

/// vLLM V1's FCFS waiting queue: a deque over slots (arrivals at the tail, preempted
/// requests at the head), O(1) everywhere through [`LinkedIds`].
#[derive(Default)]
pub struct V1Fcfs {
    queue: LinkedIds,
}

impl Policy for V1Fcfs {
    fn name(&self) -> &'static str {
        "fcfs"
    }
    fn push(&mut self, slot: u32, _req: &Request) {
        self.queue.push_back(slot);
    }
    fn requeue(&mut self, slot: u32, _req: &Request) {
        self.queue.push_front(slot);
    }
    fn remove(&mut self, slot: u32, _req: &Request) {
        self.queue.remove(slot);
    }
    fn peek(&mut self, _load: u64) -> Option<u32> {
        self.queue.front()
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
}

/// vLLM V1's priority heap order: `(priority, arrival_time, str(request_id))`, then add
/// order (vLLM's last tie-breaker is the object's address).
type V1PriorityKey = (i64, F64, Arc<str>, u64, u32);

#[derive(Default)]
pub struct V1Priority {
    queue: BTreeSet<V1PriorityKey>,
}

/// The request id as Python's `str()` spells it (vLLM compares request ids as strings).
fn id_string(id: &RequestId) -> Arc<str> {
    match id {
        RequestId::Str(s) => s.clone(),
        RequestId::Int(n) => Arc::from(n.to_string()),
    }
}

impl V1Priority {
    fn key(slot: u32, r: &Request) -> V1PriorityKey {
        (
            r.priority,
            F64(r.arrival_time),
            id_string(&r.id),
            r.seq,
            slot,
        )
    }
}

impl Policy for V1Priority {
    fn name(&self) -> &'static str {
        "priority"
    }
    fn push(&mut self, slot: u32, req: &Request) {
        self.queue.insert(Self::key(slot, req));
    }
    fn remove(&mut self, slot: u32, req: &Request) {
        self.queue.remove(&Self::key(slot, req));
    }
    fn peek(&mut self, _load: u64) -> Option<u32> {
        self.queue.first().map(|k| k.4)
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
    /// The worst `(priority, arrival_time)`; exact ties go to the first in running order.
    fn choose_victim(&self, candidates: &[u32], reqs: &Slab) -> Option<u32> {
        let mut best: Option<((i64, F64), u32)> = None;
        for &s in candidates {
            let Some(r) = reqs.get(s as usize).and_then(Option::as_ref) else {
                continue;
            };
            let k = (r.priority, F64(r.arrival_time));
            if best.is_none_or(|(b, _)| k > b) {
                best = Some((k, s));
            }
        }
        best.map(|(_, s)| s)
    }
}

// ------------------------------------------------------------------ LARRY

/// LARRY: admit the smallest `alpha*arrival + L*mem` (= the highest `alpha*wait - L*mem`),
/// `mem` = tokens to (re)compute. The key is compared exactly (no rounding; see
/// `kinetic::Intercept`), as the reference does with `Fraction`.
///
/// Requests with equal `mem` keep their (arrival, seq) order at every `L` (the intercept
/// `alpha*arrival` is monotone in arrival), so only the head of each equal-`mem` group is a
/// line in the kinetic tournament. Prompt lengths repeat, so the tournament holds far fewer
/// lines than there are waiting requests, and an arrival behind its group's head does not
/// touch it at all.
pub struct Larry {
    alpha: f64,
    tree: KineticTournament,
    groups: HashMap<u64, Group>,
    len: usize,
}

struct Group {
    leaf: u32,
    members: BTreeSet<(F64, u64, u32)>,
}

impl Larry {
    fn new(alpha: f64) -> Self {
        Larry {
            alpha,
            tree: KineticTournament::new(alpha),
            groups: HashMap::new(),
            len: 0,
        }
    }

    fn line(&self, mem: u64, head: &(F64, u64, u32)) -> Line {
        let &(arrival, seq, slot) = head;
        Line {
            slope: mem,
            intercept: self.alpha * arrival.0,
            arrival: arrival.0,
            seq,
            slot,
        }
    }
}

impl Policy for Larry {
    fn name(&self) -> &'static str {
        "larry"
    }
    fn push(&mut self, slot: u32, req: &Request) {
        let mem = req.num_tokens();
        let key = (F64(req.arrival_time), req.seq, slot);
        self.len += 1;
        match self.groups.get_mut(&mem) {
            Some(group) => {
                group.members.insert(key);
                if group.members.first() == Some(&key) {
                    let leaf = group.leaf;
                    let line = self.line(mem, &key);
                    self.tree.replace(leaf, line);
                }
            }
            None => {
                let leaf = self.tree.insert(self.line(mem, &key));
                self.groups.insert(
                    mem,
                    Group {
                        leaf,
                        members: BTreeSet::from([key]),
                    },
                );
            }
        }
    }
    fn remove(&mut self, slot: u32, req: &Request) {
        let mem = req.num_tokens();
        let key = (F64(req.arrival_time), req.seq, slot);
        let Some(group) = self.groups.get_mut(&mem) else {
            return;
        };
        let was_head = group.members.first() == Some(&key);
        if !group.members.remove(&key) {
            return;
        }
        self.len -= 1;
        if !was_head {
            return;
        }
        let leaf = group.leaf;
        match group.members.first().copied() {
            Some(head) => {
                let line = self.line(mem, &head);
                self.tree.replace(leaf, line);
            }
            None => {
                self.tree.remove(leaf);
                self.groups.remove(&mem);
            }
        }
    }
    fn peek(&mut self, load: u64) -> Option<u32> {
        self.tree
            .min_at(load.min(i64::MAX as u64) as i64)
            .map(|l| l.slot)
    }
    fn len(&self) -> usize {
        self.len
    }
}

// ------------------------------------------------------------------ tail-safe LARRY

/// `larry_tail`: LARRY with a deadline. A waiting request that has waited `deadline`
/// seconds or more (`now - arrival >= deadline`) is *due*; due requests are admitted first,
/// oldest first (FCFS among them), and LARRY orders the rest. Urgency is monotone in
/// arrival (float subtraction is), so the oldest waiting request is due exactly when any
/// is: the decision is one look at the oldest (a B-tree by `(arrival, seq)`), then LARRY's
/// kinetic tournament. Both O(log n).
///
/// The bound: a request stops yielding to smaller ones after `deadline` seconds; from then
/// on only older due requests (and whatever already runs) go before it, as under FCFS.
/// Victims as `fcfs`.
pub struct LarryTail {
    larry: Larry,
    deadline: f64,
    by_arrival: BTreeSet<(F64, u64, u32)>,
}

impl LarryTail {
    fn new(alpha: f64, deadline: f64) -> Self {
        LarryTail {
            larry: Larry::new(alpha),
            deadline,
            by_arrival: BTreeSet::new(),
        }
    }
}

impl Policy for LarryTail {
    fn name(&self) -> &'static str {
        "larry_tail"
    }
    fn push(&mut self, slot: u32, req: &Request) {
        self.larry.push(slot, req);
        self.by_arrival
            .insert((F64(req.arrival_time), req.seq, slot));
    }
    fn remove(&mut self, slot: u32, req: &Request) {
        self.larry.remove(slot, req);
        self.by_arrival
            .remove(&(F64(req.arrival_time), req.seq, slot));
    }
    /// Without a clock nothing is due: LARRY's choice.
    fn peek(&mut self, load: u64) -> Option<u32> {
        self.larry.peek(load)
    }
    fn peek_at(&mut self, load: u64, now: f64) -> Option<u32> {
        match self.by_arrival.first() {
            Some(&(arrival, _, slot)) if now - arrival.0 >= self.deadline => Some(slot),
            _ => self.larry.peek(load),
        }
    }
    fn len(&self) -> usize {
        self.larry.len()
    }
}

/// `larry_slack`: LARRY with a starvation bound relative to the backlog, counted in tokens
/// (no clock, no throughput estimate). The policy counts `left`, the tokens that have left the
/// waiting queue (admitted, or aborted while waiting), and `waiting_tokens`, those in it; a
/// request joining the queue is stamped with `left` (0 after a recompute preemption: it
/// rejoins at the head of the due order, as FCFS puts it back by its arrival). It is
/// *due* once `left - stamp >= slack * waiting_tokens` (both sides as f64): the work admitted
/// since it joined has reached `slack` times the backlog now. Due requests go first, in stamp
/// order (then arrival, seq); LARRY orders the rest. The earliest stamp is due exactly when
/// any is, so a decision is one look at a B-tree by stamp, then LARRY's tournament.
///
/// The bound: FCFS admits a request once the backlog ahead of it has been admitted; here a
/// request yields to later, smaller ones until `slack` times the current backlog has been
/// admitted since it joined, then only earlier-stamped due requests go before it. `slack = 0`
/// is FCFS by stamp; a large slack is LARRY. Victims as `fcfs`.
pub struct LarrySlack {
    larry: Larry,
    slack: f64,
    left: u64,
    waiting_tokens: u64,
    stamps: HashMap<u32, u64>,
    by_stamp: BTreeSet<(u64, F64, u64, u32)>,
}

impl LarrySlack {
    fn new(alpha: f64, slack: f64) -> Self {
        LarrySlack {
            larry: Larry::new(alpha),
            slack,
            left: 0,
            waiting_tokens: 0,
            stamps: HashMap::new(),
            by_stamp: BTreeSet::new(),
        }
    }
}

impl Policy for LarrySlack {
    fn name(&self) -> &'static str {
        "larry_slack"
    }
    fn push(&mut self, slot: u32, req: &Request) {
        self.larry.push(slot, req);
        // A preempted request rejoins at the head of the due order.
        let stamp = if req.num_preemptions > 0 {
            0
        } else {
            self.left
        };
        self.stamps.insert(slot, stamp);
        self.by_stamp
            .insert((stamp, F64(req.arrival_time), req.seq, slot));
        self.waiting_tokens += req.num_tokens();
    }
    fn remove(&mut self, slot: u32, req: &Request) {
        let Some(stamp) = self.stamps.remove(&slot) else {
            return;
        };
        self.larry.remove(slot, req);
        self.by_stamp
            .remove(&(stamp, F64(req.arrival_time), req.seq, slot));
        self.waiting_tokens -= req.num_tokens();
        self.left += req.num_tokens();
    }
    fn peek(&mut self, load: u64) -> Option<u32> {
        match self.by_stamp.first() {
            Some(&(stamp, _, _, slot))
                if (self.left - stamp) as f64 >= self.slack * self.waiting_tokens as f64 =>
            {
                Some(slot)
            }
            _ => self.larry.peek(load),
        }
    }
    fn len(&self) -> usize {
        self.larry.len()
    }
}
