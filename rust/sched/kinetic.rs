//! A kinetic tournament over lines: the minimum of `intercept + x * slope` at an integer
//! query point `x`, under insertions and deletions. It serves LARRY's waiting queue.
//!
//! LARRY admits the request with the smallest `alpha*arrival + L*mem`: a line in the load
//! signal `L` with slope `mem` and intercept `alpha*arrival`. `L` moves by one at every
//! arrival, admission or preemption, so re-scoring every waiting request per decision would
//! cost O(n). Instead each internal node of a complete binary tree over the lines keeps the
//! winner of its two children *and the integer interval of `x` over which that comparison
//! holds* (its certificate). A query at `x` only descends into subtrees holding a certificate
//! that `x` has left; an insertion or deletion recomputes one root path. Per decision that is
//! O(log n) plus O(log n) per certificate that fails; as `L` moves by one, few fail.
//!
//! Exactness: values are computed exactly as the Python reference does,
//! `fl(fl(alpha*arrival) + fl(x*slope))`, and ties break on (arrival, seq). For values below
//! 2^50 the comparison "a beats b" is a threshold function of the integer `x`, so the
//! certificates are exact integer intervals (found by evaluating the same predicate).
//!
//! ```text
//!            [w=B, valid x in 3..=9]            root: winner of winners
//!           /                        \
//!   [w=A, 0..=MAX]            [w=B, 3..=9]      internal: winner of two children
//!    /        \                /       \
//!   A          C              B         D       leaves: one line each (or empty)
//! ```

pub(crate) const X_MAX: i64 = 1 << 40;
const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Line {
    pub(crate) slope: u64,
    pub(crate) intercept: f64,
    pub(crate) arrival: f64,
    pub(crate) seq: u64,
    /// The caller's handle (the request's slot).
    pub(crate) slot: u32,
}

impl Line {
    #[inline]
    fn value(&self, x: i64) -> f64 {
        // x * slope exactly, then rounded once to f64, as Python's float(L * mem) does.
        let product = match (x as u64).checked_mul(self.slope) {
            Some(p) => p as f64,
            None => ((x as u128) * (self.slope as u128)) as f64,
        };
        self.intercept + product
    }
}

/// Does `a` come before `b` at `x`? (smaller value, then earlier arrival, then seq)
#[inline]
fn beats(a: &Line, b: &Line, x: i64) -> bool {
    let (va, vb) = (a.value(x), b.value(x));
    match va.total_cmp(&vb) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => match a.arrival.total_cmp(&b.arrival) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => a.seq < b.seq,
        },
    }
}

/// One tree node: the winning line of its subtree (inlined, so a recomputation reads two
/// adjacent nodes and nothing else) and the aggregate certificate of its subtree: the query
/// point may move within `[sub_lo, sub_hi]` without any comparison below changing.
#[derive(Debug, Clone, Copy)]
struct Node {
    line: Line,
    sub_lo: i64,
    sub_hi: i64,
}

const EMPTY_LINE: Line = Line {
    slope: 0,
    intercept: 0.0,
    arrival: 0.0,
    seq: 0,
    slot: NONE,
};
const DIRTY: Node = Node {
    line: EMPTY_LINE,
    sub_lo: i64::MAX,
    sub_hi: i64::MIN,
};
const EMPTY_LEAF: Node = Node {
    line: EMPTY_LINE,
    sub_lo: i64::MIN,
    sub_hi: i64::MAX,
};

#[derive(Debug, Default)]
pub(crate) struct KineticTournament {
    cap: usize,
    /// 1-based heap layout: node `i` has children `2i` and `2i + 1`; leaves at `cap + leaf`.
    nodes: Vec<Node>,
    free_leaves: Vec<u32>,
}

impl KineticTournament {
    pub(crate) fn new() -> Self {
        let mut t = KineticTournament::default();
        t.resize(16);
        t
    }

    /// Lines held: every leaf not free. (Only the tests ask; the policy counts its own.)
    #[cfg(test)]
    fn len(&self) -> usize {
        self.cap - self.free_leaves.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Grow to `cap` leaves. Every line keeps its leaf index (callers hold them as handles);
    /// all internal nodes become dirty and are recomputed by the next query.
    fn resize(&mut self, cap: usize) {
        let old_cap = self.cap;
        let mut nodes = vec![DIRTY; 2 * cap];
        for leaf in 0..cap {
            nodes[cap + leaf] = if leaf < old_cap {
                self.nodes[old_cap + leaf]
            } else {
                EMPTY_LEAF
            };
        }
        self.free_leaves = (0..cap as u32)
            .rev()
            .filter(|&i| nodes[cap + i as usize].line.slot == NONE)
            .collect();
        self.nodes = nodes;
        self.cap = cap;
    }

    /// Insert a line; returns its leaf index (the handle for `remove`).
    pub(crate) fn insert(&mut self, line: Line) -> u32 {
        let leaf = match self.free_leaves.pop() {
            Some(leaf) => leaf,
            None => {
                self.resize((self.cap * 2).max(16));
                return self.insert(line);
            }
        };
        self.nodes[self.cap + leaf as usize].line = line;
        self.dirty_path(leaf);
        leaf
    }

    /// Put `line` in place of the line at `leaf` (which must hold one).
    pub(crate) fn replace(&mut self, leaf: u32, line: Line) {
        if let Some(node) = self.nodes.get_mut(self.cap + leaf as usize) {
            if node.line.slot != NONE {
                node.line = line;
                self.dirty_path(leaf);
            }
        }
    }

    /// Remove the line at `leaf`; returns it (None if the leaf was empty).
    pub(crate) fn remove(&mut self, leaf: u32) -> Option<Line> {
        let node = self.nodes.get_mut(self.cap + leaf as usize)?;
        if node.line.slot == NONE {
            return None;
        }
        let line = std::mem::replace(&mut node.line, EMPTY_LINE);
        self.free_leaves.push(leaf);
        self.dirty_path(leaf);
        Some(line)
    }

    fn dirty_path(&mut self, leaf: u32) {
        let mut node = (self.cap + leaf as usize) / 2;
        while node >= 1 {
            self.nodes[node].sub_lo = i64::MAX;
            self.nodes[node].sub_hi = i64::MIN;
            node /= 2;
        }
    }

    /// The line with the smallest value at `x` (ties: arrival, then seq).
    pub(crate) fn min_at(&mut self, x: i64) -> Option<Line> {
        let x = x.clamp(0, X_MAX);
        self.refresh(1, x);
        let line = self.nodes[1].line;
        (line.slot != NONE).then_some(line)
    }

    fn refresh(&mut self, node: usize, x: i64) {
        let n = &self.nodes[node];
        if node >= self.cap || (n.sub_lo <= x && x <= n.sub_hi) {
            return;
        }
        self.refresh(2 * node, x);
        self.refresh(2 * node + 1, x);
        let (a, b) = (self.nodes[2 * node], self.nodes[2 * node + 1]);
        let (line, lo, hi) = match (a.line.slot != NONE, b.line.slot != NONE) {
            (false, false) => (EMPTY_LINE, i64::MIN, i64::MAX),
            (true, false) => (a.line, i64::MIN, i64::MAX),
            (false, true) => (b.line, i64::MIN, i64::MAX),
            (true, true) => {
                let (w, l) = if beats(&a.line, &b.line, x) {
                    (a.line, b.line)
                } else {
                    (b.line, a.line)
                };
                let (lo, hi) = certificate(&w, &l, x);
                (w, lo, hi)
            }
        };
        self.nodes[node] = Node {
            line,
            sub_lo: lo.max(a.sub_lo).max(b.sub_lo),
            sub_hi: hi.min(a.sub_hi).min(b.sub_hi),
        };
    }
}

/// The integer interval around `x` over which `w` (which beats `l` at `x`) keeps beating `l`.
fn certificate(w: &Line, l: &Line, x: i64) -> (i64, i64) {
    if w.slope == l.slope {
        // Same slope: the intercept order is the arrival order (alpha >= 0), which is also
        // the tie-break order, so the winner never changes.
        return (i64::MIN, i64::MAX);
    }
    // Estimated crossing of the two lines, refined below by the exact predicate.
    let est = (w.intercept - l.intercept) / (l.slope as f64 - w.slope as f64);
    let beats_at = |t: i64| beats(w, l, t);
    if w.slope < l.slope {
        // w wins from some threshold t <= x upwards: find the smallest t in [0, x].
        let guess = if est.is_finite() {
            est.ceil().clamp(0.0, x as f64) as i64
        } else {
            0
        };
        (first_true(beats_at, 0, x, guess), i64::MAX)
    } else {
        // w wins up to some threshold t >= x: find the largest t in [x, X_MAX].
        let guess = if est.is_finite() {
            est.floor().clamp(x as f64, X_MAX as f64) as i64
        } else {
            X_MAX
        };
        let not_beats = |t: i64| !beats(w, l, t);
        let first_loss = first_true(not_beats, x + 1, X_MAX + 1, guess.saturating_add(1));
        (i64::MIN, first_loss - 1)
    }
}

/// Smallest `t` in `[lo, hi]` with `pred(t)`, for a predicate false below a threshold and
/// true from it on (`pred(hi)` is taken as true). Tries `guess` and its neighbours first.
fn first_true(pred: impl Fn(i64) -> bool, lo: i64, hi: i64, guess: i64) -> i64 {
    let g = guess.clamp(lo, hi);
    if (g == hi || pred(g)) && (g == lo || !pred(g - 1)) {
        return g;
    }
    let (mut lo, mut hi) = (lo, hi);
    if g > lo && g < hi {
        if pred(g) {
            hi = g;
        } else {
            lo = g + 1;
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(lines: &[Line], x: i64) -> Option<u32> {
        let mut best: Option<&Line> = None;
        for l in lines {
            if best.is_none_or(|b| beats(l, b, x)) {
                best = Some(l);
            }
        }
        best.map(|l| l.slot)
    }

    /// A small deterministic generator (no rand dependency).
    struct SplitMix(u64);
    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn matches_brute_force_under_random_operations() {
        for seed in 0..30 {
            let mut rng = SplitMix(seed);
            let mut t = KineticTournament::new();
            let mut live: Vec<(u32, Line)> = Vec::new();
            let mut seq = 0;
            let mut x: i64 = 0;
            for _ in 0..600 {
                match rng.next() % 4 {
                    0 | 1 => {
                        let line = Line {
                            slope: 1 + rng.next() % 50,
                            intercept: (rng.next() % 1000) as f64 * 0.37,
                            arrival: (rng.next() % 100) as f64,
                            seq,
                            slot: seq as u32,
                        };
                        seq += 1;
                        let leaf = t.insert(line);
                        live.push((leaf, line));
                    }
                    2 if !live.is_empty() => {
                        let i = (rng.next() % live.len() as u64) as usize;
                        let (leaf, _) = live.swap_remove(i);
                        assert!(t.remove(leaf).is_some());
                    }
                    _ => {
                        x = (x + (rng.next() % 7) as i64 - 3).clamp(0, 200);
                    }
                }
                let lines: Vec<Line> = live.iter().map(|(_, l)| *l).collect();
                assert_eq!(
                    t.min_at(x).map(|l| l.slot),
                    brute(&lines, x),
                    "seed {seed} x {x}"
                );
                assert_eq!(t.len(), live.len());
            }
        }
    }

    #[test]
    fn empty_tree_has_no_minimum() {
        let mut t = KineticTournament::new();
        assert!(t.min_at(5).is_none());
        assert!(t.is_empty());
    }
}
