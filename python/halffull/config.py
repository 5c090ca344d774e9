"""``SchedulerConfig``: the one description of a scheduler, shared by the Rust core and the
pure-Python reference. Values are checked here, at construction, so a bad config fails where
it is written rather than on the first step."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ConfigError

PREEMPTION_MODES = ("recompute", "swap")
LARRY_LOADS = ("waiting", "outstanding")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"{name} must be an int, got {type(value).__name__} {value!r}", field=name, value=value
        )
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}", field=name, value=value)
    if value >= 2**40:
        raise ConfigError(f"{name} = {value} is unreasonably large (>= 2**40)", field=name, value=value)


def _check_float(name: str, value: Any, lo: float, hi: float, hi_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"{name} must be a number, got {type(value).__name__} {value!r}", field=name, value=value
        )
    v = float(value)
    if not math.isfinite(v) or v < lo or v > hi or (hi_open and v == hi):
        bound = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
        raise ConfigError(f"{name} must be finite and in {bound}, got {value!r}", field=name, value=value)


@dataclass(frozen=True)
class SchedulerConfig:
    """Capacity, limits and policy of one engine's scheduler.

    - ``num_gpu_blocks`` KV blocks of ``block_size`` tokens each on the GPU;
      ``num_cpu_blocks`` host blocks for swap (0: swap always falls back to recompute).
    - ``max_num_seqs`` seats (running requests), ``max_num_batched_tokens`` tokens per step.
    - ``policy``: one of ``halffull.POLICIES``; ``preemption_mode``: ``recompute`` or ``swap``.
    - ``watermark``: fraction of GPU blocks kept free when admitting new work, so running
      requests can grow (ignored when nothing runs, so a lone request is always admissible).
    - ``larry_alpha`` (tokens/s) trades waiting time against memory demand in LARRY;
      ``larry_load`` is LARRY's load signal L: ``waiting`` (number of waiting requests) or
      ``outstanding`` (waiting + running + swapped).
    - ``sjf_aging`` (tokens/s): SJF's priority of a request improves by this much per second
      waited, so long requests are eventually served.
    """

    num_gpu_blocks: int
    block_size: int = 16
    num_cpu_blocks: int = 0
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    policy: str = "fcfs"
    preemption_mode: str = "recompute"
    watermark: float = 0.01
    larry_alpha: float = 1000.0
    larry_load: str = "waiting"
    sjf_aging: float = 10.0

    def __post_init__(self) -> None:
        _check_int("num_gpu_blocks", self.num_gpu_blocks, 1)
        _check_int("block_size", self.block_size, 1)
        _check_int("num_cpu_blocks", self.num_cpu_blocks, 0)
        _check_int("max_num_seqs", self.max_num_seqs, 1)
        _check_int("max_num_batched_tokens", self.max_num_batched_tokens, 1)
        _check_float("watermark", self.watermark, 0.0, 1.0, hi_open=True)
        _check_float("larry_alpha", self.larry_alpha, 0.0, 1e9)
        _check_float("sjf_aging", self.sjf_aging, 0.0, 1e9)
        from .reference.policies import POLICIES  # late: reference imports this module

        if self.policy not in POLICIES:
            raise ConfigError(
                f"unknown policy {self.policy!r}; valid: {', '.join(POLICIES)}",
                field="policy", value=self.policy, valid=tuple(POLICIES),
            )
        if self.preemption_mode not in PREEMPTION_MODES:
            raise ConfigError(
                f"unknown preemption_mode {self.preemption_mode!r}; valid: {', '.join(PREEMPTION_MODES)}",
                field="preemption_mode", value=self.preemption_mode, valid=PREEMPTION_MODES,
            )
        if self.larry_load not in LARRY_LOADS:
            raise ConfigError(
                f"unknown larry_load {self.larry_load!r}; valid: {', '.join(LARRY_LOADS)}",
                field="larry_load", value=self.larry_load, valid=LARRY_LOADS,
            )
        if self.block_size * self.num_gpu_blocks >= 2**40:
            raise ConfigError("num_gpu_blocks * block_size must be < 2**40 tokens", field="num_gpu_blocks")

    @property
    def watermark_blocks(self) -> int:
        """GPU blocks kept free when admitting: ``floor(watermark * num_gpu_blocks)``."""
        return int(self.watermark * self.num_gpu_blocks)

    @property
    def capacity_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size

    def replace(self, **changes: Any) -> "SchedulerConfig":
        d = asdict(self)
        d.update(changes)
        return SchedulerConfig(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
