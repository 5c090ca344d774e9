"""Request traces: what arrives when, with how many prompt and output tokens.

A ``Trace`` is three aligned numpy arrays sorted by arrival (``arrival_time`` in seconds,
``prompt_tokens``, ``output_tokens``) plus, for Mooncake traces, each request's prefix-block
ids. Traces come from three places:

- ``load(path)`` reads a real trace: Azure LLM inference CSVs, Mooncake JSONL, BurstGPT CSVs,
  or the project's own CSV (``Trace.save``). The format is detected from the file; a bad row
  raises ``TraceError`` naming the file and line. The formats and what a zero token count
  means in each are in ``halffull.traces.formats``.
- ``synthetic(num_requests, rate, ...)`` draws one: Poisson or Gamma arrivals, lengths from a
  small distribution vocabulary or resampled from another trace, seeded.
- ``builtin(name)`` returns one of the small synthetic traces shipped inside the package
  (``builtin_names()`` lists them; ``traces/README.md`` says how they were made).

``resolve(spec)`` turns whatever names a trace (a ``Trace``, a path, a built-in name) into a
``Trace``, with one precedence for the simulator and the command lines.

Modules: ``trace`` (the type), ``formats`` (the table of file formats and their readers),
``files`` (``load``), ``generator`` (``synthetic``), ``catalog`` (built-ins, ``resolve``).
"""

from __future__ import annotations

from .catalog import BUILTIN_PREFIX, builtin, builtin_names, resolve
from .files import load
from .formats import FORMATS, TRACE_FORMATS, TraceFormat
from .generator import (
    ARRIVALS,
    AZURE_CONV_OUTPUT,
    AZURE_CONV_PROMPT,
    LENGTH_KINDS,
    MOONCAKE_OUTPUT,
    MOONCAKE_PROMPT,
    LengthSpec,
    synthetic,
)
from .trace import Trace

__all__ = [
    "ARRIVALS",
    "AZURE_CONV_OUTPUT",
    "AZURE_CONV_PROMPT",
    "BUILTIN_PREFIX",
    "FORMATS",
    "LENGTH_KINDS",
    "LengthSpec",
    "MOONCAKE_OUTPUT",
    "MOONCAKE_PROMPT",
    "TRACE_FORMATS",
    "Trace",
    "TraceFormat",
    "builtin",
    "builtin_names",
    "load",
    "resolve",
    "synthetic",
]
