"""``halffull.traces.resolve``: one precedence for trace names (simulator and both CLIs), and
the one table of trace formats."""

from __future__ import annotations

import os

import pytest

from halffull import sim, traces
from halffull.errors import InvalidArgumentError, TraceError

HALFFULL_CSV = "arrival_time,prompt_tokens,output_tokens\n0.0,5,3\n0.5,7,2\n"


def test_none_a_trace_and_builtin_names():
    default = traces.resolve(None)
    assert default.name == "default" and len(default) == len(traces.builtin("default"))
    assert traces.resolve(default) is default
    assert traces.resolve("bursty").name == "bursty"
    assert traces.resolve("builtin:mooncake_like").name == "mooncake_like"


def test_an_existing_path_wins_over_a_builtin_name(tmp_path, monkeypatch):
    (tmp_path / "default").write_text(HALFFULL_CSV)
    monkeypatch.chdir(tmp_path)
    assert len(traces.resolve("default")) == 2             # the file in the working directory
    assert len(traces.resolve("builtin:default")) == 2000  # the prefix always means the built-in
    assert len(sim._as_trace("default")) == 2              # the simulator resolves the same way


def test_paths_and_formats(tmp_path):
    path = tmp_path / "t.log"
    path.write_text('{"timestamp": 0, "input_length": 5, "output_length": 6}\n')
    assert len(traces.resolve(path)) == 1
    assert len(traces.resolve(str(path), format="mooncake")) == 1
    with pytest.raises(TraceError, match="not a 'azure' header"):
        traces.resolve(os.fspath(path), format="azure")


def test_unknown_names_list_the_builtins(tmp_path):
    with pytest.raises(TraceError, match="no such trace file") as info:
        traces.resolve("nope")
    assert info.value.valid == tuple(traces.builtin_names())
    assert all(name in str(info.value) for name in traces.builtin_names())
    with pytest.raises(InvalidArgumentError) as bad:
        traces.resolve("builtin:nope")
    assert bad.value.valid == tuple(traces.builtin_names())
    with pytest.raises(TraceError, match="no such trace file"):
        traces.resolve(tmp_path / "default")                 # a Path is always a path
    with pytest.raises(InvalidArgumentError) as kind:
        traces.resolve(42)
    assert kind.value.field == "trace"


def test_one_table_of_formats():
    assert traces.FORMATS == tuple(traces.TRACE_FORMATS) == ("halffull", "azure", "mooncake", "burstgpt")
    for name, fmt in traces.TRACE_FORMATS.items():
        assert isinstance(fmt, traces.TraceFormat) and fmt.name == name
        assert fmt.zero_prompt in ("error", "clamp") and fmt.zero_output in ("error", "clamp", "skip")
