"""``Engine``: a halffull scheduler driving a real transformer with a paged KV cache.

One step (``Engine.step``)::

    plan = scheduler.schedule(now)                      schedule_s
    block tables: preempted -> cleared; admitted and swapped-in -> start empty;
                  new_blocks appended; finished dropped
    copy swap-outs (device -> host), then swap-ins      swap_s
    flat batch: tokens [c, c+n) of each request's       build_s
                prompt + generated tokens, slots, masks
    forward through the paged cache                     forward_s
    greedy sample (argmax); EOS check                   sample_s
    scheduler.update(plan, finished=eos_ids, now)       update_s

The engine keeps each request's full token list (prompt + generated) because a recompute
preemption makes the scheduler prefill all of it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import numpy as np
import torch

from .._util import unknown_name
from ..config import SchedulerConfig
from ..errors import ConfigError, InvalidArgumentError, InvariantError, UnknownRequestError
from .batch import build_batch
from .kv_cache import PagedKVCache
from .model import LlamaModel, ModelConfig
from .serve import ServeReport, serve_trace

RequestId = str | int

SCHEDULERS = ("rust", "reference")

STEP_FIELDS = ("step", "start_s", "num_seqs", "prefill_tokens", "prefill_seqs", "decode_seqs",
               "batched_tokens", "kv_tokens", "num_preempted", "num_swapped_blocks",
               "schedule_s", "build_s", "swap_s", "forward_s", "sample_s", "update_s", "step_s")

_TIMING_KEYS = ("schedule_s", "build_s", "swap_s", "forward_s", "sample_s", "update_s")


def resolve_device(device: str | torch.device) -> torch.device:
    """A usable torch device, or ``ConfigError`` saying why not."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f"invalid device {device!r}: {e}", field="device", value=device) from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available "
                              f"(torch {torch.__version__})", field="device", value=device)
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)",
                              field="device", value=device)
        return torch.device("cuda", index)
    raise ConfigError(f"unsupported device type {dev.type!r}; valid: cpu, cuda", field="device",
                      value=device, valid=("cpu", "cuda"))


def make_scheduler(kind: str | Callable[[SchedulerConfig], Any], config: SchedulerConfig) -> Any:
    if callable(kind):
        return kind(config)
    if kind == "rust":
        from .. import Scheduler
        return Scheduler(config)
    if kind == "reference":
        from ..reference import Scheduler as ReferenceScheduler
        return ReferenceScheduler(config)
    raise unknown_name(ConfigError, "scheduler", kind, SCHEDULERS, field="scheduler")


@dataclass(eq=False)
class RequestResult:
    """What the engine knows about one request (times in seconds on the engine clock)."""

    request_id: RequestId
    prompt_token_ids: list[int]
    output_token_ids: list[int] = field(default_factory=list)
    arrival_time: float = 0.0
    first_token_time: float = float("nan")
    finish_time: float = float("nan")
    num_preemptions: int = 0
    finish_reason: str | None = None      # "length" | "eos" | "abort"; None while live

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class _Seq:
    __slots__ = ("result", "tokens", "table")

    def __init__(self, result: RequestResult) -> None:
        self.result = result
        self.tokens: list[int] = list(result.prompt_token_ids)   # prompt + generated
        self.table: list[int] = []


def _check_prompt(prompt_token_ids: Any, vocab_size: int) -> list[int]:
    if isinstance(prompt_token_ids, (str, bytes)):
        raise InvalidArgumentError("prompt_token_ids must be a sequence of token ids, not a string",
                                   field="prompt_token_ids", value=prompt_token_ids)
    if isinstance(prompt_token_ids, torch.Tensor):
        prompt_token_ids = prompt_token_ids.detach().cpu().numpy()
    try:
        arr = np.asarray(prompt_token_ids)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"prompt_token_ids is not a sequence of ints: {e}",
                                   field="prompt_token_ids", value=None) from None
    if arr.ndim != 1:
        raise InvalidArgumentError(f"prompt_token_ids must be 1-D, got shape {arr.shape}",
                                   field="prompt_token_ids", value=None)
    if arr.size == 0:
        raise InvalidArgumentError("prompt_token_ids is empty: a request needs at least one prompt token",
                                   field="prompt_token_ids", value=[])
    if arr.dtype == object:
        bad = [t for t in arr.tolist() if isinstance(t, bool) or not isinstance(t, (int, np.integer))]
        if bad:
            raise InvalidArgumentError(f"prompt_token_ids must be ints, got {bad[0]!r}",
                                       field="prompt_token_ids", value=bad[0])
        arr = arr.astype(np.int64)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(f"prompt_token_ids must be ints, got dtype {arr.dtype}",
                                   field="prompt_token_ids", value=None)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        bad_tok = lo if lo < 0 else hi
        raise InvalidArgumentError(
            f"token id {bad_tok} is outside the vocabulary [0, {vocab_size})",
            field="prompt_token_ids", value=bad_tok)
    return [int(t) for t in arr.tolist()]


class Engine:
    """A scheduler, a seeded Llama-style model and its paged KV cache, stepped together.

    >>> eng = Engine(ModelConfig.preset("tiny"), SchedulerConfig(num_gpu_blocks=64), device="cpu")
    >>> rid = eng.add_request([1, 2, 3], max_output_tokens=4)
    >>> outputs = [out for out in eng.run()]          # per step: {request id: [token ids]}
    >>> eng.result(rid).output_token_ids               # 4 tokens

    ``scheduler``: ``"rust"`` (``halffull.Scheduler``, default), ``"reference"``
    (``halffull.reference.Scheduler``), or a callable taking the ``SchedulerConfig``.
    ``eos_token_id``: greedy sampling of this id ends the request (the id is kept in its
    output). ``record_logits``: keep every computed position's logits per request (tests).
    """

    def __init__(self, model_config: ModelConfig, scheduler_config: SchedulerConfig,
                 device: str | torch.device = "cpu", *,
                 scheduler: str | Callable[[SchedulerConfig], Any] = "rust",
                 eos_token_id: int | None = None, record_logits: bool = False) -> None:
        if not isinstance(model_config, ModelConfig):
            raise ConfigError(f"expected a ModelConfig, got {type(model_config).__name__}",
                              field="model_config", value=model_config)
        if not isinstance(scheduler_config, SchedulerConfig):
            raise ConfigError(f"expected a SchedulerConfig, got {type(scheduler_config).__name__}",
                              field="scheduler_config", value=scheduler_config)
        self.device = resolve_device(device)
        self.model_config = model_config
        self.scheduler_config = scheduler_config
        self.scheduler = make_scheduler(scheduler, scheduler_config)
        self.eos_token_id = self._check_eos(eos_token_id)
        self.record_logits = bool(record_logits)
        self.model = LlamaModel(model_config, self.device)
        assert model_config.head_dim is not None
        self.cache = PagedKVCache(
            num_layers=model_config.num_layers, num_blocks=scheduler_config.num_gpu_blocks,
            block_size=scheduler_config.block_size, num_kv_heads=model_config.num_kv_heads,
            head_dim=model_config.head_dim, dtype=model_config.torch_dtype, device=self.device,
            num_cpu_blocks=scheduler_config.num_cpu_blocks)
        self._seqs: dict[RequestId, _Seq] = {}
        self._done: dict[RequestId, RequestResult] = {}
        self._ids = count()
        self._t0 = time.perf_counter()
        self._empty_steps = 0
        self.logits: dict[RequestId, list[tuple[int, torch.Tensor]]] = {}
        self.num_preemptions = 0
        self.num_swapped_out_blocks = 0
        self.num_swapped_in_blocks = 0
        self.reset_timings()

    # -- clock and counters

    def now(self) -> float:
        """Seconds since the engine was built (the clock handed to the scheduler)."""
        return time.perf_counter() - self._t0

    def _check_eos(self, eos: Any) -> int | None:
        if eos is None:
            return None
        if isinstance(eos, bool) or not isinstance(eos, (int, np.integer)) \
                or not 0 <= int(eos) < self.model_config.vocab_size:
            raise InvalidArgumentError(f"eos_token_id must be None or a token id in [0, "
                                       f"{self.model_config.vocab_size}), got {eos!r}",
                                       field="eos_token_id", value=eos)
        return int(eos)

    def set_eos_token_id(self, eos_token_id: int | None) -> None:
        self.eos_token_id = self._check_eos(eos_token_id)

    def reset_timings(self) -> None:
        """Zero ``timings()`` and forget the per-step records."""
        self._timings = {k: 0.0 for k in _TIMING_KEYS}
        self._num_steps = 0
        self._total_s = 0.0
        self._steps: list[tuple] = []

    def timings(self) -> dict[str, float]:
        """Wall time per phase summed over steps since the last ``reset_timings``:
        ``steps``, ``schedule_s``, ``build_s``, ``swap_s``, ``forward_s`` (CUDA synchronized),
        ``sample_s``, ``update_s``, ``total_s``, and ``scheduler_share`` =
        (schedule_s + update_s) / total_s."""
        out: dict[str, float] = {"steps": self._num_steps, **self._timings, "total_s": self._total_s}
        sched = self._timings["schedule_s"] + self._timings["update_s"]
        out["scheduler_share"] = sched / self._total_s if self._total_s > 0 else float("nan")
        return out

    def step_records(self) -> dict[str, np.ndarray]:
        """One entry per non-empty step since ``reset_timings``, as numpy columns
        (``STEP_FIELDS``): prefill tokens, decode seqs, KV tokens in the batch (sum of c + n), phase times and
        ``step_s`` (the whole step). Input of ``fit_linear_cost_model``."""
        cols = list(zip(*self._steps, strict=True)) if self._steps else [()] * len(STEP_FIELDS)
        out: dict[str, np.ndarray] = {}
        for name, col in zip(STEP_FIELDS, cols, strict=True):
            dtype = np.float64 if name.endswith("_s") else np.int64
            out[name] = np.asarray(col, dtype=dtype)
        return out

    # -- requests

    def add_request(self, prompt_token_ids: Sequence[int] | np.ndarray | torch.Tensor,
                    max_output_tokens: int = 64, *, request_id: RequestId | None = None,
                    arrival_time: float | None = None,
                    **scheduler_kwargs: Any) -> RequestId:
        """Queue a request; returns its id (a fresh int unless ``request_id`` is given).

        Raises ``InvalidArgumentError`` for an empty prompt or a token id outside the
        vocabulary, and whatever the scheduler raises (``RequestTooLargeError`` for a prompt
        the cache can never hold, ``DuplicateRequestError`` ...); the engine is unchanged then.
        ``scheduler_kwargs`` (``priority``, ``predicted_output_tokens`` ...) go to the scheduler.
        """
        prompt = _check_prompt(prompt_token_ids, self.model_config.vocab_size)
        if request_id is None:
            request_id = next(self._ids)
            while request_id in self._seqs:
                request_id = next(self._ids)
        now = self.now()
        arrival = now if arrival_time is None else arrival_time
        self.scheduler.add_request(request_id, len(prompt), max_output_tokens, arrival, **scheduler_kwargs)
        self._done.pop(request_id, None)        # a reused id starts a new result
        self._seqs[request_id] = _Seq(RequestResult(request_id, prompt, arrival_time=float(arrival)))
        if self.record_logits:
            self.logits[request_id] = []
        return request_id

    def abort(self, request_id: RequestId) -> None:
        """End a live request now; its blocks go back to the scheduler."""
        if request_id not in self._seqs:
            raise UnknownRequestError(f"no live request {request_id!r}", request_id=request_id)
        self.scheduler.abort(request_id)
        self._end(request_id, "abort", self.now())

    def has_unfinished_requests(self) -> bool:
        return bool(self._seqs)

    @property
    def num_live(self) -> int:
        return len(self._seqs)

    def result(self, request_id: RequestId) -> RequestResult:
        """The request's tokens and times (live or finished)."""
        seq = self._seqs.get(request_id)
        if seq is not None:
            return seq.result
        if request_id in self._done:
            return self._done[request_id]
        raise UnknownRequestError(f"no request {request_id!r}", request_id=request_id)

    def pop_result(self, request_id: RequestId) -> RequestResult:
        """Return and forget a finished request's result."""
        if request_id not in self._done:
            raise UnknownRequestError(f"no finished request {request_id!r}", request_id=request_id)
        return self._done.pop(request_id)

    def block_table(self, request_id: RequestId) -> list[int]:
        """The request's current device block table (a copy)."""
        seq = self._seqs.get(request_id)
        if seq is None:
            raise UnknownRequestError(f"no live request {request_id!r}", request_id=request_id)
        return list(seq.table)

    def _end(self, rid: RequestId, reason: str, t: float) -> None:
        seq = self._seqs.pop(rid, None)
        if seq is None:
            return
        seq.result.finish_reason = reason
        seq.result.finish_time = t
        self._done[rid] = seq.result

    # -- the loop

    def run(self, max_steps: int | None = None) -> Iterator[dict[RequestId, list[int]]]:
        """Step until no request is live (or ``max_steps``); yields each step's outputs."""
        steps = 0
        while self._seqs and (max_steps is None or steps < max_steps):
            yield self.step()
            steps += 1

    def generate(self, prompts: Sequence[Sequence[int]], max_output_tokens: int = 64) -> list[list[int]]:
        """Add the prompts, run until idle, return each prompt's generated tokens."""
        ids = [self.add_request(p, max_output_tokens) for p in prompts]
        for _ in self.run():
            pass
        return [self.pop_result(i).output_token_ids for i in ids]

    def step(self) -> dict[RequestId, list[int]]:
        """One engine step; returns ``{request id: [token ids sampled this step]}``."""
        sched = self.scheduler
        t_start = time.perf_counter()
        plan = sched.schedule(t_start - self._t0)
        t_sched = time.perf_counter()

        seqs = self._seqs
        for rid in plan.finished:           # ended since the previous plan (already handled)
            if rid in seqs:
                self._end(rid, "abort", t_sched - self._t0)
        num_preempted = len(plan.preempted)
        for rid, _mode in plan.preempted:
            seqs[rid].table = []
            seqs[rid].result.num_preemptions += 1
        self.num_preemptions += num_preempted
        for rid in plan.admitted:
            seqs[rid].table = []
        for rid, _ in plan.swapped_in:
            seqs[rid].table = []
        for rid, blocks in plan.new_blocks:
            seqs[rid].table.extend(int(b) for b in blocks)

        swapped_blocks = 0
        t_swap0 = time.perf_counter()
        if plan.swapped_out:
            out_map = np.concatenate([np.asarray(m, dtype=np.int64).reshape(-1, 2) for _, m in plan.swapped_out])
            self.cache.swap_out(out_map)
            swapped_blocks += len(out_map)
            self.num_swapped_out_blocks += len(out_map)
        if plan.swapped_in:
            in_map = np.concatenate([np.asarray(m, dtype=np.int64).reshape(-1, 2) for _, m in plan.swapped_in])
            self.cache.swap_in(in_map)
            swapped_blocks += len(in_map)
            self.num_swapped_in_blocks += len(in_map)
        if swapped_blocks and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t_swap1 = time.perf_counter()

        tokens = {rid: s.tokens for rid, s in seqs.items()}
        tables = {rid: s.table for rid, s in seqs.items()}
        batch = build_batch(plan, tokens, tables, self.cache.block_size, self.device, self.record_logits)
        t_build = time.perf_counter()

        outputs: dict[RequestId, list[int]] = {}
        eos_ids: list[RequestId] = []
        if batch is None:
            t_fwd = t_sample = t_build
            self._empty_steps += 1
            if self._empty_steps > 100 and seqs:
                sched.update(plan, finished=[], now=time.perf_counter() - self._t0)
                raise InvariantError(f"the scheduler made no progress for {self._empty_steps} steps "
                                     f"with {len(seqs)} live requests")
        else:
            self._empty_steps = 0
            logits = self.model.forward_paged(batch, self.cache)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            t_fwd = time.perf_counter()
            if batch.sample_index:
                index = torch.as_tensor([j for _, j in batch.sample_index], device=logits.device)
                sampled = logits.index_select(0, index).argmax(dim=-1).tolist()
            else:
                sampled = []
            t_first = t_fwd - self._t0
            eos = self.eos_token_id
            for (rid, _), tok in zip(batch.sample_index, sampled, strict=True):
                seq = seqs[rid]
                seq.tokens.append(tok)
                res = seq.result
                if not res.output_token_ids:
                    res.first_token_time = t_first
                res.output_token_ids.append(tok)
                outputs[rid] = [tok]
                if tok == eos:
                    eos_ids.append(rid)
            if self.record_logits:
                cpu_logits = logits.detach().to("cpu")
                for rid, r0, n, c, _ in batch.rows:
                    self.logits[rid].append((c, cpu_logits[r0: r0 + n].clone()))
            t_sample = time.perf_counter()

        ended = sched.update(plan, finished=eos_ids, now=time.perf_counter() - self._t0)
        t_update = time.perf_counter()
        eos_set = set(eos_ids)
        for rid in ended:
            self._end(rid, "eos" if rid in eos_set else "length", t_update - self._t0)
        t_end = time.perf_counter()

        tm = self._timings
        tm["schedule_s"] += t_sched - t_start
        tm["swap_s"] += t_swap1 - t_swap0
        build_s = (t_swap0 - t_sched) + (t_build - t_swap1)
        tm["build_s"] += build_s
        tm["forward_s"] += t_fwd - t_build
        tm["sample_s"] += (t_sample - t_fwd) + (t_end - t_update)
        tm["update_s"] += t_update - t_sample
        self._num_steps += 1
        self._total_s += t_end - t_start
        if batch is not None:
            nseq = len(batch.rows)
            self._steps.append((
                int(plan.step), t_start - self._t0, nseq, batch.prefill_tokens,
                nseq - batch.decode_seqs, batch.decode_seqs, batch.num_tokens, batch.kv_tokens,
                num_preempted, swapped_blocks, t_sched - t_start, build_s, t_swap1 - t_swap0,
                t_fwd - t_build, (t_sample - t_fwd) + (t_end - t_update), t_update - t_sample,
                t_end - t_start))
        return outputs

    # -- traces

    def serve_trace(self, trace: Any, time_scale: float = 1.0, max_requests: int | None = None,
                    **kwargs: Any) -> ServeReport:
        """Replay ``trace`` in real time; see ``halffull.engine.serve.serve_trace``."""
        return serve_trace(self, trace, time_scale=time_scale, max_requests=max_requests, **kwargs)

    def __repr__(self) -> str:
        cfg = self.model_config
        return (f"Engine(layers={cfg.num_layers}, hidden={cfg.hidden_size}, device={self.device}, "
                f"blocks={self.scheduler_config.num_gpu_blocks}x{self.scheduler_config.block_size}, "
                f"live={len(self._seqs)})")
