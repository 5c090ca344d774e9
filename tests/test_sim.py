"""The trace simulator: invariants, agreement with a hand-written loop over the engine core,
determinism, load scaling and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import halffull
from halffull import _core, sim, sweep, traces
from halffull.errors import ConfigError, InvalidArgumentError, TraceError

POLICIES = ("fcfs", "no_preempt", "sjf", "larry", "oracle_srpt")
SUMMARY_KEYS = {
    "num_requests", "num_finished", "num_rejected", "ttft_mean", "ttft_p50", "ttft_p90", "ttft_p99",
    "tpot_mean", "tpot_p90", "tpot_p99", "e2e_mean", "e2e_p50", "e2e_p90", "e2e_p99",
    "throughput_tokens_per_s", "requests_per_s", "preemptions_per_request", "preempted_share",
    "goodput_requests_per_s", "ttft_p999", "ttft_max", "e2e_p999", "e2e_max", "starved_share",
    "starvation_threshold_s",
}


@pytest.fixture(scope="module")
def small() -> traces.Trace:
    return traces.builtin("default").head(300)


def tight(**kw):
    """A small KV cache, so that memory pressure and preemption happen."""
    return dict(num_gpu_blocks=600, max_num_seqs=64, **kw)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_row_accounted_and_clocks_monotone(small, policy):
    res = sim.simulate(small, replicas=3, policy=policy, router="sal", rate_scale=4.0, **tight())
    r, s = res.requests, res.steps
    assert len(res) == len(small)
    assert set(np.unique(r["status"])) <= {"finished", "rejected"}
    done = r["status"] == "finished"
    assert done.all()
    assert np.all(r["first_token_time"][done] > r["arrival_time"][done])
    assert np.all(r["finish_time"][done] >= r["first_token_time"][done])
    assert np.array_equal(r["output_tokens"], small.output_tokens)
    assert np.all(s["duration"] > 0)
    for rep in range(3):
        t, d = s["time"][s["replica"] == rep], s["duration"][s["replica"] == rep]
        assert np.all(t[1:] >= t[:-1] + d[:-1] - 1e-12)  # one step at a time, clocks never go back
    assert np.all(s["kv_blocks_used"] <= 600)
    if policy == "no_preempt":
        assert r["preemptions"].sum() == 0
    summary = res.summary()
    assert SUMMARY_KEYS <= set(summary)
    assert summary["num_finished"] + summary["num_rejected"] == len(small)


def test_summary_tail_metrics_match_the_request_table(small):
    """The tail figures are the request table's own: p99.9 between p99 and max, max the
    largest TTFT, the starved share counted against the stated threshold."""
    res = sim.simulate(small, replicas=1, policy="larry", rate_scale=6.0, **tight())
    s = res.summary()
    done = res.requests["status"] == "finished"
    ttft, e2e = res.requests["ttft"][done], res.requests["e2e"][done]
    assert s["ttft_max"] == ttft.max() and s["e2e_max"] == e2e.max()
    assert s["ttft_p99"] <= s["ttft_p999"] <= s["ttft_max"]
    assert s["e2e_p99"] <= s["e2e_p999"] <= s["e2e_max"]
    assert s["starvation_threshold_s"] == pytest.approx(sim.STARVATION_FACTOR * np.median(e2e - ttft))
    assert s["starved_share"] == np.mean(ttft > s["starvation_threshold_s"])
    # A fixed threshold: the share is what it counts.
    cut = float(np.median(ttft))
    fixed = res.summary(starvation_s=cut)
    assert fixed["starvation_threshold_s"] == cut
    assert fixed["starved_share"] == np.mean(ttft > cut) > 0


def _hand_loop(trace, cost, config, max_output_tokens=2048):
    """The engine core driven directly: one replica, steps back to back, arrivals queued
    before each step is planned, the trace's true length ending a request."""
    sched = halffull.Scheduler(config)
    arr, prompt, out = trace.arrival_time, trace.prompt_tokens, trace.output_tokens
    n = len(arr)
    first, finish = np.full(n, np.nan), np.full(n, np.nan)
    count = np.zeros(n, dtype=np.int64)
    t, i = 0.0, 0
    while i < n or sched.has_unfinished_requests():
        if not sched.has_unfinished_requests():
            t = max(t, float(arr[i]))
        while i < n and arr[i] <= t:
            sched.add_request(i, int(prompt[i]), max_output_tokens, float(arr[i]),
                              true_output_tokens=int(out[i]))
            i += 1
        plan = sched.schedule(t)
        t_end = t + cost.step_time(plan.num_new_tokens, plan.num_computed_tokens, plan.is_prefill)
        ended = []
        for rid, samples in zip(plan.req_ids, plan.samples, strict=True):
            if samples:
                count[rid] += 1
                if count[rid] == 1:
                    first[rid] = t_end
                if count[rid] >= out[rid]:
                    finish[rid] = t_end
                    ended.append(rid)
        sched.update(plan, ended, t_end)
        t = t_end
    return first, finish


@pytest.mark.parametrize("policy", ["fcfs", "larry"])
def test_one_replica_equals_the_core_driven_by_hand(small, policy):
    trace = small.head(150).scale_rate(3.0)
    cost = sim.CostModel.preset("llama-3-8b/a100")
    res = sim.simulate(trace, replicas=1, router="round_robin", policy=policy, preset="llama-3-8b/a100",
                       num_gpu_blocks=400, max_num_seqs=32)
    assert res.requests["preemptions"].sum() > 0  # the comparison covers preemption
    config = halffull.SchedulerConfig(num_gpu_blocks=400, max_num_seqs=32, policy=policy)
    first, finish = _hand_loop(trace, cost, config)
    np.testing.assert_array_equal(res.requests["first_token_time"], first)
    np.testing.assert_array_equal(res.requests["finish_time"], finish)


def test_deterministic_for_a_seed(small):
    kw = dict(replicas=4, policy="larry", router="power_of_two", rate_scale=3.0, snapshot_interval=0.5, **tight())
    a = sim.simulate(small, seed=3, **kw)
    b = sim.simulate(small, seed=3, **kw)
    for k in a.requests:
        np.testing.assert_array_equal(a.requests[k], b.requests[k])
    for k in a.steps:
        np.testing.assert_array_equal(a.steps[k], b.steps[k])
    c = sim.simulate(small, seed=4, **kw)
    assert not np.array_equal(a.requests["replica"], c.requests["replica"])


def test_load_is_relative_to_measured_capacity(small):
    res = sim.simulate(small, replicas=2, policy="fcfs", load=0.8)
    cap = sim.measure_capacity(small)
    assert res.config["capacity_requests_per_s"] == pytest.approx(2 * cap)
    assert res.config["offered_rate"] == pytest.approx(0.8 * 2 * cap)
    heavy = sim.simulate(small, replicas=2, policy="fcfs", load=1.5).summary()
    light = res.summary()
    assert heavy["ttft_p99"] > light["ttft_p99"]


def test_linear_cost_model_prices_steps(small):
    res = sim.simulate(small.head(50), replicas=1, cost_model={"c0": 0.01, "c1": 1e-5, "c2": 1e-4, "c3": 1e-7})
    s = res.steps
    # Without kv_tokens in the step series, check a lower bound and the pure-decode steps' floor.
    assert np.all(s["duration"] >= 0.01 + 1e-5 * s["prefill_tokens"] + 1e-4 * s["decode_tokens"] - 1e-12)
    cm = sim.CostModel.linear(0.01, 1e-5, 1e-4, 1e-7)
    assert cm.step_time([100, 1], [0, 50], [True, False]) == pytest.approx(0.01 + 1e-3 + 1e-4 + 1e-7 * 151)


def test_presets_list_numbers_and_sources():
    names = sim.preset_names()
    assert {"llama-3-8b/h100", "llama-3-8b/a100", "llama-2-7b/a100", "llama-3-70b/4xh100"} <= set(names)
    p = {d["name"]: d for d in sim.presets()}
    assert p["llama-3-8b/h100"]["kv_bytes_per_token"] == 2 * 32 * 8 * 128 * 2
    assert p["llama-3-70b/4xh100"]["tp"] == 4
    assert p["llama-2-7b/a100"]["num_gpu_blocks"] < p["llama-3-8b/a100"]["num_gpu_blocks"]  # MHA vs GQA
    assert sim.preset_name(model="llama-3-8b", gpu="H100") == "llama-3-8b/h100"


def test_request_that_fits_no_replica_is_a_rejected_row(small):
    prompt = np.array(small.prompt_tokens[:20])
    prompt[5] = 50_000
    trace = traces.Trace(small.arrival_time[:20], prompt, small.output_tokens[:20], name="big")
    res = sim.simulate(trace, replicas=2, router="sal", num_gpu_blocks=1000)
    r = res.requests
    assert r["status"][5] == "rejected" and r["replica"][5] == -1
    assert r["reject_reason"][5].startswith("request_too_large")
    assert (r["status"] == "finished").sum() == 19
    assert res.summary()["num_rejected"] == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "valid"),
    [
        (dict(replicas=0), ConfigError, None),
        (dict(preset="gpt-5/tpu"), ConfigError, "llama-3-8b/h100"),
        (dict(model="llama-3-8b", gpu="v100"), ConfigError, "llama-3-8b/a100"),
        (dict(policy="lifo"), ConfigError, "larry"),
        (dict(router="fastest"), ConfigError, "sal"),
        (dict(load=-0.5), InvalidArgumentError, None),
        (dict(load=float("nan")), InvalidArgumentError, None),
        (dict(load=1.0, rate_scale=2.0), InvalidArgumentError, None),
        (dict(num_gpu_blocks=0), ConfigError, None),
        (dict(engine_typo=3), ConfigError, "num_gpu_blocks"),
        (dict(cost_model={"c0": 0.0, "c1": 0, "c2": 0, "c3": 0}), ConfigError, None),
    ],
)
def test_bad_config(small, kwargs, error, valid):
    with pytest.raises(error) as info:
        sim.simulate(small.head(10), **kwargs)
    if valid is not None:
        assert valid in str(info.value)


def test_bad_traces(tmp_path):
    with pytest.raises(TraceError):
        sim.simulate(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,12,x\n")
    with pytest.raises(TraceError, match="bad.csv"):
        sim.simulate(bad)
    empty = traces.Trace(np.array([]), np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    with pytest.raises(InvalidArgumentError):
        sim.simulate(empty)
    with pytest.raises(InvalidArgumentError):
        sim.simulate(42)


def test_core_rejects_unsorted_columns():
    cm = sim.CostModel.preset("llama-3-8b/h100")
    with pytest.raises(InvalidArgumentError, match="sorted"):
        _core.simulate(np.array([1.0, 0.5]), np.array([10, 10]), np.array([5, 5]), replicas=1,
                       router="round_robin", cost=cm, engine={"num_gpu_blocks": 100})


def test_to_pandas_or_import_error(small):
    res = sim.simulate(small.head(20), replicas=1)
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError):
            res.to_pandas()
    else:
        assert len(res.to_pandas()) == 20


def test_cli_simulate_and_sweep(tmp_path):
    typer = pytest.importorskip("typer")
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    from halffull.cli import app

    assert typer
    runner = CliRunner()
    out = runner.invoke(app, ["simulate", "--out", str(tmp_path), "--replicas", "2"])
    assert out.exit_code == 0, out.output
    assert list(tmp_path.glob("simulate_*.png"))
    one = tmp_path / "one"
    out = runner.invoke(app, ["simulate", "--out", str(one), "--replicas", "2", "--policy", "larry",
                              "--engine", "num_gpu_blocks=2048", "--slo-ttft", "1.5", "--load", "1.0"])
    assert out.exit_code == 0, out.output
    [summary] = json.loads(next(one.glob("simulate_*.json")).read_text())
    assert summary["engine"]["num_gpu_blocks"] == 2048 and summary["slo_ttft"] == 1.5
    assert len(list(one.glob("simulate_*_larry_requests.*"))) == 1 and len(list(one.glob("*.png"))) == 1
    sw = tmp_path / "sweep"
    out = runner.invoke(app, ["sweep", "--policies", "fcfs,larry", "--routers", "round_robin",
                              "--loads", "0.6:1.0:0.4", "--replicas", "2", "--workers", "1", "--out", str(sw)])
    assert out.exit_code == 0, out.output
    assert len(sweep.read_journal(sw)) == 4
    assert len(list(sw.glob("report_*.png"))) == 2 and (sw / "report.md").exists()
    assert list(sw.glob("results.*"))
    out = runner.invoke(app, ["sweep", "--resume", str(sw), "--workers", "1"])     # nothing missing
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["sweep", "--resume", str(sw), "--policies", "sjf"])
    assert out.exit_code == 2 and "policies differ" in out.output
    out = runner.invoke(app, ["report", str(sw), "--out", str(tmp_path / "rep")])
    assert out.exit_code == 0 and (tmp_path / "rep" / "report.md").exists()
    out = runner.invoke(app, ["sweep", "--policies", "fcfs,nope", "--engine", "bogus=1", "--out", str(tmp_path / "x")])
    assert out.exit_code == 2 and "'nope'" not in out.output and "nope" in out.output and "bogus" in out.output
    assert not (tmp_path / "x").exists()
    out = runner.invoke(app, ["simulate", "--preset", "nope"])
    assert out.exit_code == 2 and "llama-3-8b/h100" in out.output


def test_sjf_with_an_oracle_predictor_and_no_aging_is_oracle_srpt(small):
    kw = dict(replicas=2, router="least_requests", rate_scale=4.0, sjf_aging=0.0, **tight())
    sjf = sim.simulate(small, policy="sjf", predictor="oracle", **kw)
    srpt = sim.simulate(small, policy="oracle_srpt", **kw)
    for col in ("first_token_time", "finish_time", "preemptions", "replica"):
        assert np.array_equal(sjf.requests[col], srpt.requests[col]), col
    blind = sim.simulate(small, policy="sjf", **kw)          # no predictions: the declared cap
    fcfs = sim.simulate(small, policy="fcfs", **kw)
    assert np.array_equal(blind.requests["first_token_time"], fcfs.requests["first_token_time"])


def test_noisy_predictor_is_seeded_and_validated():
    true = np.array([1, 10, 100, 1000])
    a = sim.predict_output_tokens(true, "noisy:0.5", seed=3)
    assert np.array_equal(a, sim.predict_output_tokens(true, 0.5, seed=3))
    assert not np.array_equal(a, sim.predict_output_tokens(true, 0.5, seed=4))
    assert a.min() >= 1 and np.array_equal(sim.predict_output_tokens(true, "noisy:0"), true)
    assert sim.predict_output_tokens(true, None) is None
    for bad in ("noisy:-1", "psychic", float("nan")):
        with pytest.raises(InvalidArgumentError):
            sim.predict_output_tokens(true, bad)


def test_sal_beta_is_passed_to_the_router(small):
    kw = dict(replicas=3, router="sal", rate_scale=4.0, **tight())
    learned = sim.simulate(small, **kw)
    assert np.array_equal(learned.requests["replica"], sim.simulate(small, sal_beta=None, **kw).requests["replica"])
    # beta divides every replica's memory wait alike, so it changes a choice only where it
    # moves a replica's delay from the memory term to the queue term: a large beta does.
    fixed = [sim.simulate(small, sal_beta=b, **kw).requests["replica"] for b in (1.01, 1000.0)]
    assert not np.array_equal(fixed[0], fixed[1])
    with pytest.raises(halffull.HalffullError):
        sim.simulate(small, sal_beta=-1.0, **kw)
