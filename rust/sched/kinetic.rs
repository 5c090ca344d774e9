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
//! Exactness: values are compared exactly, as the Python reference does with `Fraction`:
//! `alpha*arrival + x*slope` as a real number, ties broken on (arrival, seq). No rounding
//! happens anywhere, so the result holds over the whole validated range (arrivals up to
//! `MAX_TIME` = 1e12 s, `alpha` up to `MAX_RATE` = 1e9, slopes and `x` up to 2^40 and
//! more); see [`Intercept`] for the argument. The comparison "a beats b" is then a threshold
//! function of the integer `x` (the difference of two lines is linear in `x`), so the
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

use std::cmp::Ordering;

/// The exact value of `alpha * arrival` (both finite and >= 0), split as an integer part and
/// a fraction in `[0, 1)`: `int + frac_m * 2^frac_e`.
///
/// Why this is exact over the whole validated range: a finite f64 `v >= 0` is `m * 2^e` with
/// an integer `m < 2^53` and `e >= -1074`. So `alpha * arrival = ma*mr * 2^(ea + er)` with
/// `ma*mr < 2^106`, which a `u128` holds exactly. Its integer part is at most
/// `MAX_RATE * MAX_TIME = 1e21 < 2^70`; adding `x * slope <= 2^40 * 2^64 = 2^104` keeps it
/// below `2^105`, well inside an `i128`. The fraction keeps all its bits (mantissa and
/// exponent) and two fractions compare exactly by their leading bit, then aligned bits. Since
/// `x * slope` is an integer, `a + x*sa < b + x*sb` holds exactly when the integer parts
/// compare that way, or they are equal and the fractions do: no value is ever rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Intercept {
    int: i128,
    frac_m: u128,
    frac_e: i32,
}

/// `v = m * 2^e` exactly (`v` finite; the sign is ignored: callers pass `v >= 0`).
fn decompose(v: f64) -> (u64, i32) {
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let mant = bits & ((1 << 52) - 1);
    if exp == 0 {
        (mant, -1074)
    } else {
        (mant | (1 << 52), exp - 1075)
    }
}

impl Intercept {
    pub(crate) const ZERO: Intercept = Intercept {
        int: 0,
        frac_m: 0,
        frac_e: 0,
    };

    /// `alpha * arrival`, exactly (inputs validated finite, >= 0 and within the limits;
    /// anything larger saturates rather than wrapping).
    pub(crate) fn product(alpha: f64, arrival: f64) -> Intercept {
        let ((ma, ea), (mr, er)) = (decompose(alpha), decompose(arrival));
        let p = u128::from(ma) * u128::from(mr);
        let e = ea + er;
        if p == 0 {
            return Intercept::ZERO;
        }
        if e >= 0 {
            // An integer; below 2^70 in the validated range.
            let int = if e < 127 && p.leading_zeros() > e as u32 + 1 {
                (p << e) as i128
            } else {
                i128::MAX >> 2
            };
            return Intercept {
                int,
                ..Intercept::ZERO
            };
        }
        let sh = e.unsigned_abs();
        if sh >= 128 {
            return Intercept {
                int: 0,
                frac_m: p,
                frac_e: e,
            };
        }
        let frac_m = p & ((1u128 << sh) - 1);
        Intercept {
            int: (p >> sh) as i128,
            frac_m,
            frac_e: if frac_m == 0 { 0 } else { e },
        }
    }

    /// Compare the fractional parts exactly.
    fn cmp_frac(&self, other: &Intercept) -> Ordering {
        let (a, b) = (self, other);
        match (a.frac_m == 0, b.frac_m == 0) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        // Position of the leading bit: the larger one is the larger fraction.
        let lead = |m: u128, e: i32| e + (128 - m.leading_zeros() as i32);
        match lead(a.frac_m, a.frac_e).cmp(&lead(b.frac_m, b.frac_e)) {
            Ordering::Equal => {}
            other => return other,
        }
        // Same leading bit, both mantissas below 2^106: the exponents differ by < 106.
        // Shift the one with the lower exponent right and compare; its dropped bits break
        // a tie upwards.
        let (lo, hi, flip) = if a.frac_e <= b.frac_e {
            (a, b, false)
        } else {
            (b, a, true)
        };
        let d = (hi.frac_e - lo.frac_e) as u32;
        let shifted = lo.frac_m >> d;
        let dropped = d > 0 && lo.frac_m & ((1u128 << d) - 1) != 0;
        let ord = match shifted.cmp(&hi.frac_m) {
            Ordering::Equal if dropped => Ordering::Greater,
            o => o,
        };
        if flip {
            ord.reverse()
        } else {
            ord
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Line {
    pub(crate) slope: u64,
    /// `alpha * arrival` rounded to f64 (exactly this product: the fast path's error bound
    /// in [`beats`] relies on it).
    pub(crate) intercept: f64,
    pub(crate) arrival: f64,
    pub(crate) seq: u64,
    /// The caller's handle (the request's slot).
    pub(crate) slot: u32,
}

impl Line {
    /// `fl(fl(alpha*arrival) + fl(x*slope))`: the value rounded, for the fast path.
    #[inline]
    fn value(&self, x: i64) -> f64 {
        let product = match (x as u64).checked_mul(self.slope) {
            Some(p) => p as f64,
            None => ((x as u128) * (self.slope as u128)) as f64,
        };
        self.intercept + product
    }

    /// The integer part of the exact value at `x` (the fraction does not depend on `x`).
    #[inline]
    fn int_at(&self, exact: &Intercept, x: i64) -> i128 {
        exact
            .int
            .saturating_add((x as i128).saturating_mul(i128::from(self.slope)))
    }
}

/// `2^-50`: four times the bound below on the relative error of a rounded value.
const ROUNDING_MARGIN: f64 = 1.0 / (1u64 << 50) as f64;

/// Does `a` come before `b` at `x`? (smaller exact value, then earlier arrival, then seq)
///
/// Fast path: a rounded value `v = fl(fl(A) + fl(B))` of an exact `A + B` (`A` =
/// `alpha*arrival`, `B` = `x*slope`, both >= 0) is within `2u(A + B) + 2^-1074` of it
/// (`u = 2^-53`: one rounding in each term, one in the sum; an underflowing `A` loses at
/// most `2^-1075`). So when the rounded values differ by more than `2^-50 (va + vb)` plus
/// the smallest normal f64, their order is the exact order. Otherwise (close values, ties)
/// compare exactly with [`Intercept`].
#[inline]
fn beats(a: &Line, b: &Line, x: i64, alpha: f64) -> bool {
    let (va, vb) = (a.value(x), b.value(x));
    if (va - vb).abs() > (va + vb) * ROUNDING_MARGIN + f64::MIN_POSITIVE {
        return va < vb;
    }
    let (ea, eb) = (
        Intercept::product(alpha, a.arrival),
        Intercept::product(alpha, b.arrival),
    );
    let ord = a
        .int_at(&ea, x)
        .cmp(&b.int_at(&eb, x))
        .then_with(|| ea.cmp_frac(&eb))
        .then_with(|| a.arrival.total_cmp(&b.arrival))
        .then_with(|| a.seq.cmp(&b.seq));
    ord == Ordering::Less
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
    /// LARRY's `alpha`: every line's intercept is `alpha * arrival`.
    alpha: f64,
    cap: usize,
    /// 1-based heap layout: node `i` has children `2i` and `2i + 1`; leaves at `cap + leaf`.
    nodes: Vec<Node>,
    free_leaves: Vec<u32>,
}

impl KineticTournament {
    pub(crate) fn new(alpha: f64) -> Self {
        let mut t = KineticTournament {
            alpha,
            ..KineticTournament::default()
        };
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
                let (w, l) = if beats(&a.line, &b.line, x, self.alpha) {
                    (a.line, b.line)
                } else {
                    (b.line, a.line)
                };
                let (lo, hi) = certificate(&w, &l, x, self.alpha);
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
fn certificate(w: &Line, l: &Line, x: i64, alpha: f64) -> (i64, i64) {
    if w.slope == l.slope {
        // Same slope: the intercept order is the arrival order (alpha >= 0), which is also
        // the tie-break order, so the winner never changes.
        return (i64::MIN, i64::MAX);
    }
    // Estimated crossing of the two lines, refined below by the exact predicate.
    let est = (w.intercept - l.intercept) / (l.slope as f64 - w.slope as f64);
    let beats_at = |t: i64| beats(w, l, t, alpha);
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
        let not_beats = |t: i64| !beats(w, l, t, alpha);
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

    const ALPHA: f64 = 2.7;

    fn brute(lines: &[Line], x: i64) -> Option<u32> {
        let mut best: Option<&Line> = None;
        for l in lines {
            if best.is_none_or(|b| beats(l, b, x, ALPHA)) {
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
            let mut t = KineticTournament::new(ALPHA);
            let mut live: Vec<(u32, Line)> = Vec::new();
            let mut seq = 0;
            let mut x: i64 = 0;
            for _ in 0..600 {
                match rng.next() % 4 {
                    0 | 1 => {
                        let arrival = (rng.next() % 100) as f64 * 0.37;
                        let line = Line {
                            slope: 1 + rng.next() % 50,
                            intercept: ALPHA * arrival,
                            arrival,
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

    /// `alpha * arrival` against the same product done in exact integers, where the inputs
    /// are small multiples of powers of two (so the integer product is easy to form).
    #[test]
    fn intercepts_compare_exactly_at_any_scale() {
        let line = |alpha: f64, arrival: f64, slope: u64, seq: u64| Line {
            slope,
            intercept: alpha * arrival,
            arrival,
            seq,
            slot: seq as u32,
        };
        // The issue's scale: alpha*arrival ~ 1.7e18, where f64 steps are 256 apart.
        let (a, b) = (1_699_999_999.999_684_f64, 1_699_999_999.999_128_f64);
        let (la, lb) = (line(1e9, a, 25, 0), line(1e9, b, 40, 1));
        // Exact: 1e9*a + 25x < 1e9*b + 40x  <=>  x > 1e9*(a - b)/15 (a - b is exact here).
        let cross = 1e9 * (a - b) / 15.0;
        let x0 = cross.floor() as i64;
        assert!(!beats(&la, &lb, x0 - 1, 1e9) && beats(&la, &lb, x0 + 2, 1e9));
        // Tiny values: only the fractions tell them apart.
        let tiny = line(1e-300, 3e-300, 1, 0);
        let tinier = line(1e-300, 2e-300, 1, 1);
        assert!(beats(&tinier, &tiny, 7, 1e-300) && !beats(&tiny, &tinier, 7, 1e-300));
        assert_eq!(
            Intercept::product(1e-300, 0.0).cmp_frac(&Intercept::ZERO),
            Ordering::Equal
        );
        // An integer part plus a fraction: 3 * 0.5 = 1.5 against 1 + 0.75 = 1.75.
        let (h, q) = (Intercept::product(3.0, 0.5), Intercept::product(7.0, 0.25));
        assert_eq!((h.int, q.int), (1, 1));
        assert_eq!(h.cmp_frac(&q), Ordering::Less);
        // The largest validated values saturate nothing.
        let big = Intercept::product(1e9, 1e12);
        assert_eq!(big.int, 1_000_000_000_000_000_000_000);
    }

    /// The fast path and the exact path together against plain integer arithmetic: arrivals
    /// in [2^30, 2^31) are multiples of 2^-22, so with an integer alpha every value times
    /// 2^22 is an integer a u128 holds.
    #[test]
    fn beats_is_exact_at_unix_time_scale() {
        let mut rng = SplitMix(7);
        let alpha = 1e9;
        let scaled = |l: &Line, x: i64| {
            let arr = (l.arrival * (1u64 << 22) as f64) as u128; // exact: a multiple of 2^-22
            1_000_000_000u128 * arr + ((x as u128 * l.slope as u128) << 22)
        };
        let mut line = |seq: u64| {
            let arrival = 1.7e9 - (rng.next() % 400) as f64 * 2.0f64.powi(-22);
            Line {
                slope: 1 + rng.next() % 60,
                intercept: alpha * arrival,
                arrival,
                seq,
                slot: seq as u32,
            }
        };
        let lines: Vec<Line> = (0..200).map(&mut line).collect();
        let mut exact_path = 0;
        for (i, a) in lines.iter().enumerate() {
            for b in &lines[i + 1..] {
                for x in [0, 1, 5, 11, 40] {
                    let (va, vb) = (scaled(a, x), scaled(b, x));
                    let want = (va, a.arrival.to_bits(), a.seq) < (vb, b.arrival.to_bits(), b.seq);
                    assert_eq!(beats(a, b, x, alpha), want, "{a:?} {b:?} x={x}");
                    let (fa, fb) = (a.value(x), b.value(x));
                    if (fa - fb).abs() <= (fa + fb) * ROUNDING_MARGIN + f64::MIN_POSITIVE {
                        exact_path += 1;
                    }
                }
            }
        }
        assert!(exact_path > 1000, "the exact path ran {exact_path} times");
    }

    #[test]
    fn empty_tree_has_no_minimum() {
        let mut t = KineticTournament::new(1.0);
        assert!(t.min_at(5).is_none());
        assert!(t.is_empty());
    }
}
