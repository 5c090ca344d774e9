"""Engine policies of the reference scheduler: waiting order, victim choice, admission rule.

Each policy answers three questions (DESIGN §5):

- ``waiting_key(req, load, now)``: the waiting queue's order at load signal ``load`` and
  clock ``now``; the smallest key is admitted next.
  Every key ends with ``(arrival_time, seq)`` so ties break the same way everywhere.
- ``choose_victim(candidates)``: which running request to preempt when blocks run out;
  ``candidates`` are the running requests not yet scheduled this step, in admission order
  (the one asking for blocks included).
- ``preempts`` / ``reserves_full_output``: whether it may preempt at all, and whether
  admission reserves blocks for prompt plus ``max_output_tokens`` (TensorRT-LLM's
  guaranteed-no-evict) instead of for the prompt only.

With ``semantics="vllm_v1"`` two more (vLLM's ``request_queue.py`` and the victim rule of ``Scheduler.schedule``):

- ``v1_next_waiting(waiting, load, now)``: the request admission tries next. ``waiting`` is kept in
  vLLM's deque order (new requests at the tail, preempted ones at the head); FCFS takes the
  head, priority vLLM's heap top ``(priority, arrival, str(id))``, every other policy the
  smallest ``waiting_key``.
- ``v1_victim(running)``: the victim among ALL running requests, also those already scheduled
  this step (the step un-schedules them). FCFS and both LARRYs: the last admitted; priority: the
  worst ``(priority, arrival)``, ties to the first in running order; SJF and oracle SRPT their
  own rule.

The reference re-scores every waiting request at each decision (O(n)): simple to read and
exact. The Rust core keeps the same orders in O(log n) structures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import SchedulerConfig
    from .request import Request


class Policy:
    name = ""
    preempts = True
    reserves_full_output = False

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config

    def waiting_key(self, req: Request, load: int, now: float) -> tuple:
        return (req.arrival_time, req.seq)

    def choose_victim(self, candidates: Sequence[Request]) -> Request:
        # vLLM's rule: preempt the most recently admitted running request.
        return candidates[-1]

    def v1_next_waiting(self, waiting: Sequence[Request], load: int, now: float) -> Request:
        return min(waiting, key=lambda r: self.waiting_key(r, load, now))

    def v1_victim(self, running: Sequence[Request]) -> Request:
        return self.choose_victim(running)

    def enqueued(self, req: Request) -> None:
        """``req`` joined the waiting queue (it arrived, or a recompute preemption sent it back)."""

    def dequeued(self, req: Request) -> None:
        """``req`` left the waiting queue (admitted, or aborted while waiting)."""


class Fcfs(Policy):
    """First come, first served (vLLM's default)."""

    name = "fcfs"

    def v1_next_waiting(self, waiting: Sequence[Request], load: int, now: float) -> Request:
        return waiting[0]                 # the deque's head: a preempted request, or the oldest


class Priority(Policy):
    """Lower ``priority`` runs first; the worst (priority, arrival) is preempted first."""

    name = "priority"

    def waiting_key(self, req: Request, load: int, now: float) -> tuple:
        return (req.priority, req.arrival_time, req.seq)

    def choose_victim(self, candidates: Sequence[Request]) -> Request:
        return max(candidates, key=lambda r: (r.priority, r.arrival_time, r.seq))

    def v1_next_waiting(self, waiting: Sequence[Request], load: int, now: float) -> Request:
        # vLLM's Request.__lt__ compares ids as strings; seq only separates 1 from "1"
        return min(waiting, key=lambda r: (r.priority, r.arrival_time, str(r.request_id), r.seq))

    def v1_victim(self, running: Sequence[Request]) -> Request:
        # max() keeps the first of equal keys: the earliest in running order
        return max(running, key=lambda r: (r.priority, r.arrival_time))


class NoPreempt(Policy):
    """Reserve prompt + max_output_tokens blocks at admission; never preempt."""

    name = "no_preempt"
    preempts = False
    reserves_full_output = True

    def choose_victim(self, candidates: Sequence[Request]) -> Request:
        raise AssertionError("no_preempt never preempts: its reservations make it unnecessary")


class Sjf(Policy):
    """Shortest predicted remaining output first, aged: ``pred_remaining - aging * wait``.

    ``pred_remaining - aging*(now - arrival) = (pred_remaining + aging*arrival) - aging*now``,
    so the order is the static key ``pred_remaining + aging*arrival``.
    """

    name = "sjf"

    def waiting_key(self, req: Request, load: int, now: float) -> tuple:
        aged = float(req.predicted_remaining) + self.config.sjf_aging * req.arrival_time
        return (aged, req.arrival_time, req.seq)

    def choose_victim(self, candidates: Sequence[Request]) -> Request:
        return max(candidates, key=lambda r: (r.predicted_remaining, r.arrival_time, r.seq))


class OracleSrpt(Policy):
    """Shortest true remaining output first (simulation only: the clairvoyant bound)."""

    name = "oracle_srpt"

    def waiting_key(self, req: Request, load: int, now: float) -> tuple:
        return (req.true_remaining, req.arrival_time, req.seq)

    def choose_victim(self, candidates: Sequence[Request]) -> Request:
        return max(candidates, key=lambda r: (r.true_remaining, r.arrival_time, r.seq))


class Larry(Policy):
    """LARRY: admit the waiting request with the highest ``alpha*wait - L*mem``.

    ``mem`` = tokens to (re)compute (prompt plus generated tokens after a recompute
    preemption), ``L`` the load signal (``config.larry_load``), ``alpha`` in tokens/s. As
    ``alpha*(now - arrival) - L*mem = alpha*now - (alpha*arrival + L*mem)``, the best request
    has the smallest ``alpha*arrival + L*mem``. Victims as FCFS.

    The key is the exact real number (a ``Fraction``; every float is one), not its float
    rounding: with unix-time arrivals and a large ``alpha`` the sum is near 1e18, where
    floats are 128 apart and rounding would reorder requests.
    """

    name = "larry"

    def waiting_key(self, req: Request, load: int, now: float) -> tuple:
        alpha, arrival = Fraction(self.config.larry_alpha), Fraction(req.arrival_time)
        return (alpha * arrival + load * req.num_tokens, req.arrival_time, req.seq)


class LarryTail(Larry):
    """LARRY with a deadline: a request that has waited ``larry_deadline`` seconds is *due*.

    Due requests come first, oldest first (FCFS among them); LARRY orders the rest. So a
    request yields to smaller ones for at most ``larry_deadline`` seconds; after that only
    older due requests go before it. Victims as FCFS.
    """

    name = "larry_tail"

    def waiting_key(self, req: Request, load: int, now: float) -> tuple:
        if now - req.arrival_time >= self.config.larry_deadline:
            return (0, req.arrival_time, req.seq)                        # due: FCFS
        return (1, *super().waiting_key(req, load, now))                 # LARRY's key


class LarrySlack(Larry):
    """LARRY with a starvation bound relative to the backlog, counted in tokens.

    ``left`` counts the tokens that have left the waiting queue (admitted, or aborted while
    waiting), ``waiting_tokens`` those in it; a request joining the queue is stamped with
    ``left`` (0 after a recompute preemption: it rejoins at the head of the due order, as
    FCFS puts it back by its arrival). It is *due* once ``left - stamp >= larry_slack * waiting_tokens`` (as floats):
    the work admitted since it joined has reached ``larry_slack`` times the backlog now. Due
    requests come first, in stamp order; LARRY orders the rest. Victims as FCFS.
    """

    name = "larry_slack"

    def __init__(self, config: SchedulerConfig) -> None:
        super().__init__(config)
        self.left = 0
        self.waiting_tokens = 0
        self.stamp: dict[int, int] = {}                                   # seq -> left when it joined

    def enqueued(self, req: Request) -> None:
        # a preempted request rejoins at the head of the due order
        self.stamp[req.seq] = 0 if req.num_preemptions > 0 else self.left
        self.waiting_tokens += req.num_tokens

    def dequeued(self, req: Request) -> None:
        del self.stamp[req.seq]
        self.waiting_tokens -= req.num_tokens
        self.left += req.num_tokens

    def waiting_key(self, req: Request, load: int, now: float) -> tuple:
        stamp = self.stamp[req.seq]
        if float(self.left - stamp) >= self.config.larry_slack * float(self.waiting_tokens):
            return (0, stamp, req.arrival_time, req.seq)                  # due: in stamp order
        return (1, *super().waiting_key(req, load, now))                 # LARRY's key


POLICIES: dict[str, Callable[[SchedulerConfig], Policy]] = {
    cls.name: cls for cls in (Fcfs, Priority, NoPreempt, Sjf, OracleSrpt, Larry, LarryTail, LarrySlack)
}


def make_policy(config: SchedulerConfig) -> Policy:
    return POLICIES[config.policy](config)
