"""Trace loading, synthetic traces and built-ins (``halffull.traces``)."""

from __future__ import annotations

import ast
import gzip
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from halffull.errors import InvalidArgumentError, TraceError
from halffull.traces import (
    FORMATS,
    Trace,
    builtin,
    builtin_names,
    load,
    synthetic,
)

SHARED_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
AZURE_CONV = SHARED_TRACES / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE = SHARED_TRACES / "mooncake-fast25" / "synthetic_trace.jsonl"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def tiny(**changes) -> Trace:
    fields = dict(
        arrival_time=[0.0, 1.0, 3.0, 6.0],
        prompt_tokens=[10, 20, 30, 100],
        output_tokens=[1, 2, 3, 10],
        name="tiny",
    )
    fields.update(changes)
    return Trace(**fields)


# --------------------------------------------------------------------------------------------
# Azure
# --------------------------------------------------------------------------------------------

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def test_azure_seven_digit_timestamps_relative_to_first_row(tmp_path):
    path = write(
        tmp_path,
        "az.csv",
        AZURE_HEADER
        + "2023-11-16 18:15:46.6805900,374,44\n"
        + "2023-11-16 18:15:46.6805901,396,109\n"  # 100 ns later: needs the 7th digit
        + "2023-11-16 18:15:50.9951690,10,5\n"
        + "2023-11-17 00:00:00.0000000,7,7",  # no trailing newline, as in the real file
    )
    trace = load(path)
    assert len(trace) == 4
    assert trace.name == "az" and trace.source == str(path)
    assert trace.arrival_time[0] == 0.0
    assert trace.arrival_time[1] == pytest.approx(1e-7, abs=1e-12)
    assert trace.arrival_time[2] == pytest.approx(4.314579, abs=1e-9)
    midnight = 24 * 3600 - (18 * 3600 + 15 * 60 + 46.68059)
    assert trace.arrival_time[3] == pytest.approx(midnight, abs=1e-6)
    assert trace.prompt_tokens.tolist() == [374, 396, 10, 7]
    assert trace.output_tokens.tolist() == [44, 109, 5, 7]
    assert trace.hash_ids is None


def test_azure_unsorted_rows_are_sorted_stably(tmp_path):
    path = write(
        tmp_path,
        "az.csv",
        AZURE_HEADER
        + "2023-11-16 18:00:02.0000000,3,1\n"
        + "2023-11-16 18:00:01.0000000,1,1\n"
        + "2023-11-16 18:00:02.0000000,4,1\n"  # ties with the first row: keeps file order
        + "2023-11-16 18:00:01.5,2,1\n",  # fewer fractional digits are fine
    )
    trace = load(path)
    assert trace.arrival_time.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert trace.prompt_tokens.tolist() == [1, 2, 3, 4]


def test_azure_zero_output_is_read_as_one_and_counted(tmp_path):
    path = write(tmp_path, "az.csv", AZURE_HEADER + "2023-11-16 18:00:00.0,5,0\n2023-11-16 18:00:01.0,5,3\n")
    trace = load(path)
    assert trace.output_tokens.tolist() == [1, 3]
    assert trace.clamped_rows == 1 and trace.skipped_rows == 0


def test_azure_timestamps_with_zone(tmp_path):
    path = write(
        tmp_path,
        "az.csv",
        AZURE_HEADER + "2024-05-10 00:00:00.5+00:00,5,3\n2024-05-10 02:00:01.5+02:00,5,3\n",
    )
    assert load(path).arrival_time.tolist() == [0.0, 1.0]


@pytest.mark.parametrize(
    "row, fragment",
    [
        ("2023-11-16 18:00:01.0,abc,3", "ContextTokens"),
        ("2023-11-16 18:00:01.0,5,-2", "negative"),
        ("2023-11-16 18:00:01.0,0,3", "0 prompt tokens"),
        ("2023-11-16 18:00:01.0,5,nan", "GeneratedTokens"),
        ("2023-11-16 18:00:01.0,5,2.5", "whole"),
        ("2023-11-16 18:00:01.0,5", "missing column"),
        ("yesterday,5,3", "TIMESTAMP"),
        ("2023-13-16 18:00:01.0,5,3", "month"),
        ("2023-11-16 25:00:01.0,5,3", "out of range"),
    ],
)
def test_azure_malformed_row_names_file_and_line(tmp_path, row, fragment):
    path = write(tmp_path, "az.csv", AZURE_HEADER + "2023-11-16 18:00:00.0,5,3\n" + row + "\n")
    with pytest.raises(TraceError) as info:
        load(path)
    error = info.value
    assert error.line == 3
    assert error.path == str(path)
    assert f"{path}:3:" in str(error)
    assert fragment in str(error)


# --------------------------------------------------------------------------------------------
# Mooncake
# --------------------------------------------------------------------------------------------


def test_mooncake_milliseconds_and_hash_ids(tmp_path):
    path = write(
        tmp_path,
        "mc.jsonl",
        '{"timestamp": 1000, "input_length": 1000, "output_length": 6, "hash_ids": [0, 1]}\n'
        '{"timestamp": 1000, "input_length": 600, "output_length": 4, "hash_ids": [0, 2]}\n'
        "\n"
        '{"timestamp": 1500, "input_length": 20, "output_length": 0, "hash_ids": [3]}\n',
    )
    trace = load(path)
    assert trace.arrival_time.tolist() == [0.0, 0.0, 0.5]
    assert trace.prompt_tokens.tolist() == [1000, 600, 20]
    assert trace.output_tokens.tolist() == [6, 4, 1]
    assert trace.clamped_rows == 1
    assert trace.hash_ids == [[0, 1], [0, 2], [3]]
    assert trace.summary()["prefix_block_reuse"] == pytest.approx(1 / 5)


def test_mooncake_without_hash_ids(tmp_path):
    path = write(tmp_path, "mc.jsonl", '{"timestamp": 0, "input_length": 5, "output_length": 6}\n')
    assert load(path).hash_ids is None


@pytest.mark.parametrize(
    "row, fragment",
    [
        ('{"timestamp": 5, "input_length": 5', "not valid JSON"),
        ('{"timestamp": 5, "output_length": 5, "hash_ids": []}', "input_length"),
        ('{"timestamp": "soon", "input_length": 5, "output_length": 5, "hash_ids": []}', "timestamp"),
        ('{"timestamp": 5, "input_length": true, "output_length": 5, "hash_ids": []}', "input_length"),
        ('{"timestamp": 5, "input_length": 5, "output_length": 5, "hash_ids": ["a"]}', "hash_ids"),
        ('{"timestamp": 5, "input_length": 5, "output_length": 5}', "lacks hash_ids"),
        ("[1, 2, 3]", "JSON object"),
        ('{"timestamp": 5, "input_length": 12.5, "output_length": 5, "hash_ids": []}', "whole"),
        ('{"timestamp": 5, "input_length": 1e300, "output_length": 5, "hash_ids": []}', "large"),
        ('{"timestamp": NaN, "input_length": 5, "output_length": 5, "hash_ids": []}', "finite"),
    ],
)
def test_mooncake_malformed_row_names_file_and_line(tmp_path, row, fragment):
    good = '{"timestamp": 0, "input_length": 5, "output_length": 6, "hash_ids": [0]}\n'
    path = write(tmp_path, "mc.jsonl", good + good + row + "\n")
    with pytest.raises(TraceError) as info:
        load(path)
    assert info.value.line == 3
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------------------------
# BurstGPT
# --------------------------------------------------------------------------------------------

BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def test_burstgpt_skips_and_counts_failures(tmp_path):
    path = write(
        tmp_path,
        "burst.csv",
        BURST_HEADER
        + "5,ChatGPT,472,18,490,Conversation log\n"
        + "45,ChatGPT,0,0,0,Conversation log\n"  # a failure
        + "118,GPT-4,417,0,417,API log\n"  # a failure with a prompt
        + "185,ChatGPT,0,647,647,Conversation log\n",  # empty prompt, not a failure
    )
    trace = load(path)
    assert trace.arrival_time.tolist() == [0.0, 180.0]
    assert trace.prompt_tokens.tolist() == [472, 1]
    assert trace.output_tokens.tolist() == [18, 647]
    assert trace.skipped_rows == 2 and trace.clamped_rows == 1


def test_burstgpt_only_failures_is_an_error(tmp_path):
    path = write(tmp_path, "burst.csv", BURST_HEADER + "5,ChatGPT,0,0,0,Conversation log\n")
    with pytest.raises(TraceError, match="1 failed requests skipped") as info:
        load(path)
    assert info.value.line == 2


def test_burstgpt_malformed_row(tmp_path):
    path = write(tmp_path, "burst.csv", BURST_HEADER + "5,ChatGPT,10,18,28,Conversation log\nx,ChatGPT,1,1,2,API log\n")
    with pytest.raises(TraceError, match="Timestamp") as info:
        load(path)
    assert info.value.line == 3


# --------------------------------------------------------------------------------------------
# The project's own format, detection, file-level errors
# --------------------------------------------------------------------------------------------


def test_halffull_round_trip_with_hash_ids(tmp_path):
    trace = tiny(arrival_time=[0.1, 1 / 3, 2.0, 1e-7 + 5], hash_ids=[[1, 2], [], [3], [1, 2, 4]])
    path = trace.save(tmp_path / "mine.csv")
    assert path.read_text().splitlines()[0] == "arrival_time,prompt_tokens,output_tokens,hash_ids"
    back = load(path)
    assert np.array_equal(back.arrival_time, trace.arrival_time)
    assert np.array_equal(back.prompt_tokens, trace.prompt_tokens)
    assert np.array_equal(back.output_tokens, trace.output_tokens)
    assert back.hash_ids == trace.hash_ids


def test_halffull_gzip_round_trip(tmp_path):
    trace = synthetic(50, 3.0, seed=4)
    back = load(trace.save(tmp_path / "mine.csv.gz"))
    assert back.name == "mine"
    assert np.array_equal(back.arrival_time, trace.arrival_time)
    assert np.array_equal(back.output_tokens, trace.output_tokens)


@given(
    st.lists(
        st.tuples(
            st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
            st.integers(1, 10**6),
            st.integers(1, 10**5),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_halffull_round_trip_is_exact(rows):
    import tempfile

    rows.sort(key=lambda row: row[0])
    arrival, prompt, output = (list(column) for column in zip(*rows, strict=True))
    trace = Trace(arrival, prompt, output)
    with tempfile.TemporaryDirectory() as tmp:
        back = load(trace.save(Path(tmp) / "t.csv"))
    assert back.arrival_time.tolist() == trace.arrival_time.tolist()
    assert back.prompt_tokens.tolist() == prompt and back.output_tokens.tolist() == output


def test_halffull_columns_by_name_and_times_as_written(tmp_path):
    path = write(tmp_path, "t.csv", "output_tokens,arrival_time,prompt_tokens,comment\n3,2.5,10,x\n4,1.5,20,y\n")
    trace = load(path)
    assert trace.arrival_time.tolist() == [1.5, 2.5]  # sorted, not shifted to 0
    assert trace.prompt_tokens.tolist() == [20, 10]


def test_halffull_zero_output_is_an_error(tmp_path):
    path = write(tmp_path, "t.csv", "arrival_time,prompt_tokens,output_tokens\n0,1,1\n1,1,0\n")
    with pytest.raises(TraceError, match="0 output tokens") as info:
        load(path)
    assert info.value.line == 3


def test_halffull_nan_time_is_an_error(tmp_path):
    path = write(tmp_path, "t.csv", "arrival_time,prompt_tokens,output_tokens\nnan,1,1\n")
    with pytest.raises(TraceError, match="finite") as info:
        load(path)
    assert info.value.line == 2


def test_header_detected_whatever_the_extension(tmp_path):
    path = write(tmp_path, "trace.txt", AZURE_HEADER + "2023-11-16 18:00:00.0,5,3\n")
    assert len(load(path)) == 1


def test_format_override(tmp_path):
    # A JSON-lines file with a .log name is still sniffed; forcing a CSV format fails at line 1.
    path = write(tmp_path, "trace.log", '{"timestamp": 0, "input_length": 5, "output_length": 6}\n')
    assert len(load(path)) == 1
    assert len(load(path, format="mooncake")) == 1
    with pytest.raises(TraceError, match="not a 'azure' header") as info:
        load(path, format="azure")
    assert info.value.line == 1
    # An Azure file forced through the project's format also fails at its header.
    azure = write(tmp_path, "az.csv", AZURE_HEADER + "2023-11-16 18:00:00.0,5,3\n")
    with pytest.raises(TraceError, match="arrival_time"):
        load(azure, format="halffull")


def test_unknown_format_name_lists_valid_names(tmp_path):
    path = write(tmp_path, "t.csv", "arrival_time,prompt_tokens,output_tokens\n0,1,1\n")
    with pytest.raises(TraceError) as info:
        load(path, format="parquet")
    assert info.value.valid == FORMATS
    for name in FORMATS:
        assert name in str(info.value)


def test_unknown_header(tmp_path):
    path = write(tmp_path, "t.csv", "\n\ntime,tokens\n1,2\n")
    with pytest.raises(TraceError, match="unknown trace format") as info:
        load(path)
    assert info.value.line == 3


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(TraceError, match="no such trace file") as info:
        load(path)
    assert info.value.path == str(path) and info.value.line is None
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text, line",
    [("", None), ("\n\n", None), (AZURE_HEADER, 1), ("arrival_time,prompt_tokens,output_tokens\n\n", 2)],
)
def test_empty_trace(tmp_path, text, line):
    path = write(tmp_path, "t.csv", text)
    with pytest.raises(TraceError) as info:
        load(path)
    assert info.value.line == line
    assert str(path) in str(info.value)


def test_empty_jsonl(tmp_path):
    with pytest.raises(TraceError, match="empty"):
        load(write(tmp_path, "t.jsonl", ""))


def test_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffarrival_time,prompt_tokens,output_tokens\n0,1,1\n".encode())
    assert len(load(path)) == 1


def test_gzipped_azure(tmp_path):
    path = tmp_path / "az.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(AZURE_HEADER + "2023-11-16 18:00:00.0,5,3\n2023-11-16 18:00:02.0,6,4\n")
    trace = load(path)
    assert trace.arrival_time.tolist() == [0.0, 2.0] and trace.name == "az"


# --------------------------------------------------------------------------------------------
# Trace
# --------------------------------------------------------------------------------------------


def test_summary_by_hand():
    # gaps 1, 2, 3: mean 2, std sqrt(2/3); numpy's linear percentiles of [10, 20, 30, 100]:
    # p50 = 25, p99 at rank 2.97 = 30 + 0.97 * 70 = 97.9.
    summary = tiny(hash_ids=[[1, 2], [1, 3], [4], [1, 2, 5]]).summary()
    assert summary["requests"] == 4
    assert summary["span"] == 6.0
    assert summary["rate"] == pytest.approx(0.5)
    assert summary["interarrival_cv"] == pytest.approx(math.sqrt(2 / 3) / 2)
    assert summary["prompt_mean"] == 40.0
    assert summary["prompt_p50"] == 25.0
    assert summary["prompt_p99"] == pytest.approx(97.9)
    assert summary["prompt_max"] == 100
    assert summary["output_mean"] == 4.0
    assert summary["output_p50"] == 2.5
    assert summary["output_p99"] == pytest.approx(3 + 0.97 * 7)
    assert summary["output_max"] == 10
    assert summary["prefix_block_reuse"] == pytest.approx(3 / 8)  # 1 | 1, 2 of 8 blocks
    assert tiny().summary()["prefix_block_reuse"] is None


def test_summary_of_tiny_traces():
    one = tiny().head(1)
    assert one.duration == 0.0 and math.isnan(one.rate)
    assert math.isnan(one.summary()["interarrival_cv"])
    empty = tiny().head(0)
    assert len(empty) == 0 and empty.summary()["requests"] == 0
    assert math.isnan(empty.summary()["prompt_mean"])
    burst = Trace([1.0, 1.0], [1, 1], [1, 1])
    assert burst.rate == math.inf


def test_scale_rate():
    trace = tiny()
    faster = trace.scale_rate(2)
    assert faster.arrival_time.tolist() == [0.0, 0.5, 1.5, 3.0]
    assert faster.rate == pytest.approx(2 * trace.rate)
    assert faster.duration == pytest.approx(trace.duration / 2)
    assert np.array_equal(faster.prompt_tokens, trace.prompt_tokens)
    assert trace.arrival_time.tolist() == [0.0, 1.0, 3.0, 6.0]  # unchanged
    assert trace.scale_rate(0.5).duration == 12.0
    for bad in (0, -1.0, math.nan, math.inf, "2"):
        with pytest.raises(InvalidArgumentError):
            trace.scale_rate(bad)


def test_head_and_slice_time():
    trace = tiny(hash_ids=[[1], [2], [3], [4]])
    assert trace.head(2).prompt_tokens.tolist() == [10, 20]
    assert trace.head(2).hash_ids == [[1], [2]]
    assert len(trace.head(100)) == 4
    window = trace.slice_time(1.0, 6.0)  # [1, 6): 6.0 is out
    assert window.arrival_time.tolist() == [1.0, 3.0]
    assert window.hash_ids == [[2], [3]]
    assert trace.slice_time(0.5, 6.5, rebase=True).arrival_time.tolist() == [0.5, 2.5, 5.5]
    assert len(trace.slice_time(7, 8)) == 0
    with pytest.raises(InvalidArgumentError):
        trace.head(-1)
    with pytest.raises(InvalidArgumentError):
        trace.slice_time(3, 1)


def test_trace_checks_its_arrays():
    with pytest.raises(InvalidArgumentError, match="sorted"):
        Trace([1.0, 0.0], [1, 1], [1, 1])
    with pytest.raises(InvalidArgumentError, match=">= 1"):
        Trace([0.0, 1.0], [1, 0], [1, 1])
    with pytest.raises(InvalidArgumentError, match="length"):
        Trace([0.0, 1.0], [1], [1, 1])
    with pytest.raises(InvalidArgumentError, match="finite"):
        Trace([0.0, math.nan], [1, 1], [1, 1])
    with pytest.raises(InvalidArgumentError, match="whole"):
        Trace([0.0], [1.5], [1])
    with pytest.raises(InvalidArgumentError, match="hash_ids"):
        Trace([0.0], [1], [1], hash_ids=[[1], [2]])
    trace = Trace([0, 1], [1.0, 2.0], np.array([3, 4], dtype=np.int32))
    assert trace.arrival_time.dtype == np.float64 and trace.prompt_tokens.dtype == np.int64
    assert trace.output_tokens.dtype == np.int64
    with pytest.raises(ValueError):
        trace.arrival_time[0] = 5.0  # read-only
    assert "requests=2" in repr(trace)


# --------------------------------------------------------------------------------------------
# Synthetic
# --------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic():
    a = synthetic(500, 4.0, seed=7)
    b = synthetic(500, 4.0, seed=7)
    c = synthetic(500, 4.0, seed=8)
    for column in ("arrival_time", "prompt_tokens", "output_tokens"):
        assert np.array_equal(getattr(a, column), getattr(b, column))
        assert not np.array_equal(getattr(a, column), getattr(c, column))
    assert a.arrival_time[0] == 0.0 and len(a) == 500 and a.source == "synthetic"


def test_synthetic_rate_only_rescales_arrivals():
    slow = synthetic(300, 2.0, arrival="gamma", cv=2.0, seed=3)
    fast = synthetic(300, 8.0, arrival="gamma", cv=2.0, seed=3)
    assert np.allclose(fast.arrival_time * 4, slow.arrival_time)
    assert np.array_equal(fast.prompt_tokens, slow.prompt_tokens)


@pytest.mark.parametrize("arrival, cv", [("poisson", 1.0), ("gamma", 0.5), ("gamma", 2.0), ("gamma", 4.0)])
def test_synthetic_interarrival_cv_and_rate(arrival, cv):
    trace = synthetic(20_000, 10.0, arrival=arrival, cv=cv, prompt=1, output=1, seed=11)
    summary = trace.summary()
    assert summary["interarrival_cv"] == pytest.approx(cv, rel=0.1)
    assert summary["rate"] == pytest.approx(10.0, rel=0.1)


def test_synthetic_evenly_spaced():
    trace = synthetic(5, 2.0, arrival="gamma", cv=0.0, prompt=1, output=1)
    assert trace.arrival_time.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_synthetic_length_specs():
    n = 20_000
    trace = synthetic(n, 1.0, prompt=("uniform", 3, 5), output=("constant", 7), seed=1)
    assert set(trace.prompt_tokens.tolist()) == {3, 4, 5}
    assert set(trace.output_tokens.tolist()) == {7}
    assert set(synthetic(10, 1.0, prompt=12, output=3).prompt_tokens.tolist()) == {12}
    lognormal = synthetic(n, 1.0, prompt=("lognormal", 1000, 0.5), output=("lognormal", 50, 1.0), seed=2)
    assert lognormal.prompt_tokens.mean() == pytest.approx(1000, rel=0.03)
    assert np.median(lognormal.prompt_tokens) == pytest.approx(1000 * math.exp(-0.125), rel=0.03)
    assert lognormal.output_tokens.mean() == pytest.approx(50, rel=0.05)
    assert lognormal.output_tokens.min() >= 1


def test_synthetic_default_lengths_are_azure_like():
    summary = synthetic(20_000, 5.0, max_output_tokens=1000, seed=5).summary()
    assert summary["prompt_mean"] == pytest.approx(1155, rel=0.05)
    assert summary["prompt_p50"] == pytest.approx(1020, rel=0.05)
    assert summary["output_p50"] == pytest.approx(129, rel=0.08)
    assert summary["output_max"] == 1000


def test_synthetic_clipping():
    trace = synthetic(
        2000, 1.0, prompt=("lognormal", 1000, 2.0), output=("uniform", 1, 100),
        max_prompt_tokens=4096, max_output_tokens=10, seed=3,
    )
    assert trace.prompt_tokens.max() == 4096 and trace.prompt_tokens.min() >= 1
    assert trace.output_tokens.max() == 10


def test_synthetic_resamples_pairs_jointly():
    source = Trace([0.0, 1.0, 2.0], [10, 200, 3000], [1, 20, 300])
    pairs = set(zip(source.prompt_tokens.tolist(), source.output_tokens.tolist(), strict=True))
    trace = synthetic(1000, 2.0, prompt=source, seed=9)
    drawn = set(zip(trace.prompt_tokens.tolist(), trace.output_tokens.tolist(), strict=True))
    assert drawn == pairs
    mixed = synthetic(1000, 2.0, prompt=source, output=("constant", 5), seed=9)
    assert set(mixed.prompt_tokens.tolist()) == {10, 200, 3000}
    assert set(mixed.output_tokens.tolist()) == {5}
    assert np.array_equal(synthetic(1000, 2.0, prompt=source, seed=9).prompt_tokens, trace.prompt_tokens)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_requests=0),
        dict(num_requests=2.5),
        dict(rate=0),
        dict(rate=math.inf),
        dict(arrival="uniform"),
        dict(cv=2.0),  # Poisson has CV 1
        dict(arrival="gamma", cv=-1.0),
        dict(prompt=("normal", 5, 1)),
        dict(prompt=("uniform", 5, 1)),
        dict(prompt=("constant", 0)),
        dict(output=("lognormal", -1, 1)),
        dict(prompt=0),
        dict(max_output_tokens=0),
        dict(seed=-1),
        dict(prompt=Trace([], [], [])),
    ],
)
def test_synthetic_rejects_bad_arguments(kwargs):
    arguments = dict(num_requests=10, rate=1.0)
    arguments.update(kwargs)
    with pytest.raises(InvalidArgumentError):
        synthetic(**arguments)


# --------------------------------------------------------------------------------------------
# Built-ins
# --------------------------------------------------------------------------------------------


def test_builtin_default():
    assert {"default", "bursty", "mooncake_like"} <= set(builtin_names())
    trace = builtin()
    assert trace.name == "default"
    assert len(trace) == 2000
    summary = trace.summary()
    assert summary["rate"] == pytest.approx(5.0, rel=0.1)
    assert summary["interarrival_cv"] == pytest.approx(1.0, rel=0.1)
    assert summary["prompt_mean"] == pytest.approx(1155, rel=0.1)
    assert summary["output_mean"] == pytest.approx(211, rel=0.1)
    assert summary["output_max"] <= 1000


def test_builtins_are_small_and_load():
    for name in builtin_names():
        trace = builtin(name)
        assert len(trace) >= 1000 and trace.arrival_time[0] == 0.0
        assert Path(trace.source).stat().st_size < 200_000
    assert builtin("mooncake_like").summary()["prompt_mean"] > 10_000
    assert builtin("bursty").summary()["interarrival_cv"] > 2


def test_unknown_builtin():
    with pytest.raises(InvalidArgumentError, match="default") as info:
        builtin("nope")
    assert "default" in info.value.valid


def test_module_imports_only_numpy_and_the_stdlib():
    import halffull.traces as module

    for file in sorted(Path(module.__file__).parent.glob("*.py")):  # the package's modules
        tree = ast.parse(file.read_text())
        for node in tree.body:
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 1:  # from ..errors import ...
                    assert node.module in ("errors", "limits", "_util"), (file.name, node.module)
                    continue
                if node.level == 1:  # from .trace import ...: the package's own modules
                    continue
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                assert root == "numpy" or root in sys.stdlib_module_names or root == "__future__", root


# --------------------------------------------------------------------------------------------
# The real public traces (../shared/traces), when present
# --------------------------------------------------------------------------------------------


def test_real_azure_conv_trace():
    if not AZURE_CONV.is_file():
        pytest.skip(f"public Azure conv trace not found at {AZURE_CONV}")
    trace = load(AZURE_CONV)
    assert len(trace) == 19_366
    assert trace.clamped_rows == 0 and trace.skipped_rows == 0
    summary = trace.summary()
    assert summary["span"] == pytest.approx(3502, abs=1)
    assert summary["rate"] == pytest.approx(5.53, abs=0.005)
    assert summary["interarrival_cv"] == pytest.approx(1.09, abs=0.005)
    assert summary["prompt_mean"] == pytest.approx(1155, abs=1)
    assert (summary["prompt_p50"], summary["prompt_p99"], summary["prompt_max"]) == (1020, 4142, 14050)
    assert summary["output_mean"] == pytest.approx(211, abs=1)
    assert (summary["output_p50"], summary["output_p99"], summary["output_max"]) == (129, 601, 1000)


def test_real_mooncake_trace():
    if not MOONCAKE.is_file():
        pytest.skip(f"public Mooncake trace not found at {MOONCAKE}")
    trace = load(MOONCAKE)
    assert len(trace) == 3_993
    assert all(
        len(blocks) == math.ceil(p / 512)
        for blocks, p in zip(trace.hash_ids, trace.prompt_tokens.tolist(), strict=True)
    )
    summary = trace.summary()
    assert summary["span"] == pytest.approx(1022, abs=1)
    assert summary["rate"] == pytest.approx(3.91, abs=0.005)
    assert summary["interarrival_cv"] == pytest.approx(1.01, abs=0.005)
    assert summary["prompt_mean"] == pytest.approx(15_325, abs=1)
    assert (summary["prompt_p50"], summary["prompt_max"]) == (11_587, 191_378)
    assert summary["prompt_p99"] == pytest.approx(66_456, abs=1)
    assert summary["output_mean"] == pytest.approx(149, abs=1)
    assert (summary["output_p50"], summary["output_max"]) == (69, 893)
    assert summary["output_p99"] == pytest.approx(768, abs=1)
    assert summary["prefix_block_reuse"] == pytest.approx(0.64, abs=0.005)
