"""Tiny factories shared by the tests (imported as ``support``), and ``junk``: arbitrary
values a careless or adversarial caller passes (Hypothesis strategy)."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
from hypothesis import strategies as st

import halffull
from halffull import reference

IMPLS = {"rust": halffull.Scheduler, "reference": reference.Scheduler}


def make_config(**overrides) -> halffull.SchedulerConfig:
    """A tiny config where preemption and edge cases are easy to reach."""
    base = dict(num_gpu_blocks=8, block_size=4, num_cpu_blocks=8, max_num_seqs=4,
                max_num_batched_tokens=32, watermark=0.0)
    base.update(overrides)
    return halffull.SchedulerConfig(**base)


def run_to_completion(s, *, max_steps: int = 100_000, dt: float = 0.01, finish=None) -> list:
    """Step until every request has ended; returns the plans. ``finish(plan)`` may name ids
    to end on EOS."""
    plans = []
    t = s.now
    for _ in range(max_steps):
        if not s.has_unfinished_requests():
            return plans
        plan = s.schedule(now=t)
        plans.append(plan)
        t += dt
        s.update(plan, finished=finish(plan) if finish else (), now=t)
        s.check_invariants()
    raise AssertionError(f"did not drain in {max_steps} steps: {s!r}")


# ---------------------------------------------------------------------------- arbitrary values

class RaisesOnIter:
    """An iterable whose ``__iter__`` raises."""

    def __iter__(self):
        raise RuntimeError("boom in __iter__")

    def __repr__(self) -> str:
        return "RaisesOnIter()"


class RaisesMidway:
    """An iterable that yields one valid item, then raises (a fresh iterator each time)."""

    def __init__(self, first: Any = 0) -> None:
        self.first = first

    def __iter__(self):
        yield self.first
        raise ValueError("boom mid-iteration")

    def __repr__(self) -> str:
        return f"RaisesMidway({self.first!r})"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr raises too")


class Indexable:
    """Not an int, though it has ``__index__`` (the boundary takes ints and numpy ints only)."""

    def __index__(self) -> int:
        return 3


SCALARS = [
    None, True, False, np.True_, np.False_, 0, 1, 3, -1, 2**40, 2**40 + 1, 2**63, 2**64, -(2**63) - 1,
    2**1100, -(2**1100), 0.0, -0.0, 1.5, 3.0, 1e12, 1e13, -1.0, math.nan, math.inf, -math.inf, 5e-324,
    np.int8(3), np.int64(-1), np.int64(3), np.uint64(2**64 - 1), np.uint8(7), np.float16(2.5), np.float32(3.0),
    np.float64(math.nan), np.float64(2.0), np.complex128(1 + 0j), complex(3, 0), Decimal("3"), Fraction(3, 1),
    np.array(3), np.datetime64(1, "s"), "", "3", "fcfs", "sal", "llama-3-8b/h100", "\ud800", "a\udfffb",
    b"", b"\x07", bytearray(b"\x01"), object(), BadRepr(), Indexable(), Ellipsis,
]

CONTAINERS = [
    [], [0], [1, 2], [None], [1.5], ["a"], ["\ud800"], [b"x"], (3,), {1: 1}, {"a": 1}, set(), {1}, frozenset({2}),
    np.array([1, 2]), np.array([[1]]), np.array([True]), np.array(["a"]), range(3), RaisesOnIter(),
    RaisesMidway(0), RaisesMidway("a"),
]

def junk_of(scalars: list[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(scalars),
        st.sampled_from(CONTAINERS),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=4),
        st.binary(max_size=3),
        st.lists(st.one_of(st.integers(-3, 2**41), st.text(max_size=2), st.none()), max_size=3),
    )


junk = junk_of(SCALARS)
#: ``junk`` without the object whose ``__repr__`` raises (Hypothesis's stateful runner prints
#: every step's arguments).
printable_junk = junk_of([v for v in SCALARS if not isinstance(v, BadRepr)])
