"""The validated ranges, in one place: the Rust core checks against these very numbers
(``halffull._core.LIMITS``), and the reference and the pure-Python modules import them from
here, so a limit is written once."""

from __future__ import annotations

from ._core import LIMITS as _LIMITS

#: Largest count of tokens, blocks or requests an argument may hold (``2**40``).
MAX_COUNT: int = int(_LIMITS["MAX_COUNT"])
#: Largest time in seconds (arrivals, ``now``): ``1e12`` keeps every key exact in float64.
MAX_TIME: float = float(_LIMITS["MAX_TIME"])
#: Largest rate-like parameter (``larry_alpha``, ``sjf_aging``: tokens per second).
MAX_RATE: float = float(_LIMITS["MAX_RATE"])
#: Largest number of blocks in one pool (block ids are 32-bit): ``2**32 - 2``.
MAX_BLOCKS: int = int(_LIMITS["MAX_BLOCKS"])
#: Largest number of replicas behind one router (``2**16``).
MAX_REPLICAS: int = int(_LIMITS["MAX_REPLICAS"])
#: Largest number of replica snapshots one simulation may take (``snapshot_interval`` bound).
MAX_SNAPSHOTS: int = int(_LIMITS["MAX_SNAPSHOTS"])

__all__ = ["MAX_BLOCKS", "MAX_COUNT", "MAX_RATE", "MAX_REPLICAS", "MAX_SNAPSHOTS", "MAX_TIME"]
