"""The torch engine loop: a halffull scheduler driving a small Llama-style decoder with a paged
KV cache, on CPU or CUDA (``pip install halffull[engine]``).

>>> from halffull import SchedulerConfig
>>> from halffull.engine import Engine, ModelConfig
>>> eng = Engine(ModelConfig.preset("tiny"), SchedulerConfig(num_gpu_blocks=64), device="cpu")
>>> rid = eng.add_request([1, 2, 3], max_output_tokens=8)
>>> for outputs in eng.run():        # {request id: [token ids sampled this step]}
...     pass
>>> report = eng.serve_trace(trace, time_scale=10.0, max_requests=100)
>>> report.summary()["ttft_s"]["p50"]

Names are loaded lazily: ``halffull.engine.calibrate`` (the cost-model fit) needs only numpy,
so the simulator can use it without torch installed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Engine": ".engine",
    "RequestResult": ".engine",
    "SCHEDULERS": ".engine",
    "STEP_FIELDS": ".engine",
    "resolve_device": ".engine",
    "ModelConfig": ".model",
    "LlamaModel": ".model",
    "PRESETS": ".model",
    "PagedKVCache": ".kv_cache",
    "ServeReport": ".serve",
    "serve_trace": ".serve",
    "fit_linear_cost_model": ".calibrate",
    "fit_quality": ".calibrate",
    "predict_step_time": ".calibrate",
    "cli_main": ".cli",
}

__all__ = [
    "Engine",
    "LlamaModel",
    "ModelConfig",
    "PRESETS",
    "PagedKVCache",
    "RequestResult",
    "SCHEDULERS",
    "STEP_FIELDS",
    "ServeReport",
    "cli_main",
    "fit_linear_cost_model",
    "fit_quality",
    "predict_step_time",
    "resolve_device",
    "serve_trace",
]

if TYPE_CHECKING:
    from .calibrate import fit_linear_cost_model, fit_quality, predict_step_time
    from .cli import cli_main
    from .engine import SCHEDULERS, STEP_FIELDS, Engine, RequestResult, resolve_device
    from .kv_cache import PagedKVCache
    from .model import PRESETS, LlamaModel, ModelConfig
    from .serve import ServeReport, serve_trace


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'halffull.engine' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
