"""Calibration machinery (``halffull.engine.calibrate``): the fit, the feature definitions shared
with the simulator's linear cost model, step periods, the report, and a tiny end-to-end run.

Nothing here asserts wall-clock accuracy (the simulator predicting the engine within 25% is a
measurement on a given machine, reported in ``benches/results/CALIBRATION.md``).
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

import halffull
from halffull import SchedulerConfig
from halffull.engine.calibrate import (
    COEFFICIENTS,
    CalibrationReport,
    default_traces,
    fit_linear_cost_model,
    fit_quality,
    predict_step_time,
    relative_error,
    split_trace,
    step_periods,
    with_periods,
)
from halffull.errors import InvalidArgumentError
from halffull.traces import Trace

TRUE = dict(c0=1.5e-3, c1=8e-5, c2=4e-4, c3=1.2e-6)


def random_steps(rng, n):
    """``n`` random batches as the scheduler plans them: (new tokens, computed tokens, prefill?)
    per request."""
    steps = []
    for _ in range(n):
        batch = []
        for _ in range(int(rng.integers(1, 12))):
            if rng.random() < 0.3:
                batch.append((int(rng.integers(1, 200)), int(rng.integers(0, 300)), True))
            else:
                batch.append((1, int(rng.integers(1, 700)), False))
        steps.append(batch)
    return steps


def engine_features(batch):
    """What ``halffull.engine.batch.build_batch`` records for a plan."""
    return {"prefill_tokens": sum(n for n, _, p in batch if p),
            "decode_seqs": sum(1 for _, _, p in batch if not p),
            "kv_tokens": sum(c + n for n, c, _ in batch)}


def test_fit_recovers_the_simulators_linear_model():
    rng = np.random.default_rng(0)
    cost = halffull.CostModel.linear(**TRUE)
    steps = random_steps(rng, 400)
    rows = []
    for batch in steps:
        n, c, p = zip(*batch, strict=True)
        t = cost.step_time(list(n), list(c), list(p), 0)
        rows.append({**engine_features(batch), "step_s": t * (1 + rng.normal(0, 1e-4))})
    fit = fit_linear_cost_model(rows)
    for k in COEFFICIENTS:
        assert fit[k] == pytest.approx(TRUE[k], rel=0.02), k
    assert fit_quality(fit, rows)["r2"] > 0.9999
    # the fit predicts what the simulator's cost model says for the same batches
    pred = predict_step_time(fit, rows)
    exact = [cost.step_time(*map(list, zip(*b, strict=True)), 0) for b in steps]
    assert np.allclose(pred, exact, rtol=1e-3)


def test_engine_batch_features_mean_what_the_simulator_means():
    # The engine's Batch counts prefill tokens, decode sequences and KV tokens from a plan; a
    # linear model priced on those equals the simulator's price of the same plan.
    torch = pytest.importorskip("torch")
    from halffull.engine.batch import build_batch

    rng = np.random.default_rng(1)
    cost = halffull.CostModel.linear(**TRUE)
    bs = 4
    for batch in random_steps(rng, 30):
        tokens, tables = {}, {}
        for i, (n, c, _) in enumerate(batch):
            tokens[i] = list(range(c + n))                       # a prefill ends with the sample
            tables[i] = list(range(-(-(c + n) // bs)))
        plan = SimpleNamespace(step=1, req_ids=list(range(len(batch))),
                               num_new_tokens=[n for n, _, _ in batch],
                               num_computed_tokens=[c for _, c, _ in batch],
                               samples=[True] * len(batch), is_prefill=[p for _, _, p in batch])
        b = build_batch(plan, tokens, tables, bs, torch.device("cpu"))
        rec = {"prefill_tokens": [b.prefill_tokens], "decode_seqs": [b.decode_seqs], "kv_tokens": [b.kv_tokens]}
        assert {k: v[0] for k, v in rec.items()} == engine_features(batch)
        sim_price = cost.step_time(*map(list, zip(*batch, strict=True)), 0)
        assert predict_step_time(TRUE, rec)[0] == pytest.approx(sim_price, rel=1e-12)


def _sim(trace, coef, sched, **kw):
    cfg = sched.to_dict()
    policy = cfg.pop("policy")
    return halffull.simulate(trace, replicas=1, policy=policy, cost_model=coef,
                             max_output_tokens=int(max(trace.output_tokens)), **cfg, **kw)


def test_simulator_with_a_linear_model_matches_a_hand_computation():
    c0, c1, c2, c3 = TRUE.values()
    sched = SchedulerConfig(num_gpu_blocks=64, block_size=16, max_num_seqs=8, max_num_batched_tokens=256)
    # One request of N output tokens: a prefill of P tokens, then N - 1 decodes with P + j tokens of KV each.
    P, N = 40, 6
    res = _sim(Trace(arrival_time=[0.0], prompt_tokens=[P], output_tokens=[N]), TRUE, sched)
    ttft = c0 + (c1 + c3) * P
    decodes = sum(c0 + c2 + c3 * (P + j) for j in range(1, N))
    assert res.requests["ttft"][0] == pytest.approx(ttft, rel=1e-12)
    assert res.requests["e2e"][0] == pytest.approx(ttft + decodes, rel=1e-12)
    assert res.requests["tpot"][0] == pytest.approx(decodes / (N - 1), rel=1e-12)
    # Two requests at once: one step prefills both, then both decode together until the
    # shorter one ends.
    res = _sim(Trace(arrival_time=[0.0, 0.0], prompt_tokens=[30, 50], output_tokens=[3, 4]), TRUE, sched)
    t1 = c0 + (c1 + c3) * 80
    t2 = t1 + c0 + 2 * c2 + c3 * (31 + 51)
    t3 = t2 + c0 + 2 * c2 + c3 * (32 + 52)
    t4 = t3 + c0 + c2 + c3 * 53
    assert res.requests["first_token_time"].tolist() == pytest.approx([t1, t1], rel=1e-12)
    assert res.requests["finish_time"].tolist() == pytest.approx([t3, t4], rel=1e-12)


def test_simulator_replays_the_engines_steps():
    # All requests at t=0 on the same scheduler config: the simulator plans exactly the steps
    # the engine ran (chunked prefill, mixed batches, seats), and prices each as the fitted
    # model prices the engine's own step record.
    pytest.importorskip("torch")
    from halffull.engine import Engine, ModelConfig

    sched = SchedulerConfig(num_gpu_blocks=64, block_size=4, max_num_seqs=3, max_num_batched_tokens=16)
    prompts, outputs = [10, 3, 14, 7, 20, 5], [5, 8, 3, 6, 4, 7]
    burst = SimpleNamespace(arrival_time=np.zeros(6), prompt_tokens=np.array(prompts),
                            output_tokens=np.array(outputs))
    eng = Engine(ModelConfig.preset("tiny"), sched, device="cpu")
    rep = eng.serve_trace(burst, warmup=False)
    assert rep.output_tokens.tolist() == outputs
    res = _sim(Trace(arrival_time=np.zeros(6), prompt_tokens=prompts, output_tokens=outputs), TRUE, sched)
    st = rep.steps
    assert res.num_steps == len(st["step_s"])
    assert res.steps["prefill_tokens"].tolist() == st["prefill_tokens"].tolist()
    assert res.steps["decode_tokens"].tolist() == st["decode_seqs"].tolist()
    assert res.steps["batch_size"].tolist() == st["num_seqs"].tolist()
    assert np.allclose(res.steps["duration"], predict_step_time(TRUE, st), rtol=1e-12)
    assert res.requests["output_tokens"].tolist() == outputs


def test_step_periods_add_the_busy_gap_and_skip_idle_time():
    rec = {"start_s": np.array([0.0, 0.0101, 0.0202, 0.5, 0.5103]),
           "step_s": np.array([0.0100, 0.0100, 0.0100, 0.0100, 0.0100])}
    # gaps: 0.1 ms, 0.1 ms, idle (~470 ms), 0.3 ms; idle and last steps get the median busy gap
    p = step_periods(rec)
    assert p == pytest.approx([0.0101, 0.0101, 0.0101, 0.0103, 0.0101], abs=1e-9)
    cols = with_periods([dict(start_s=s, step_s=d) for s, d in zip(rec["start_s"], rec["step_s"], strict=True)])
    assert cols["period_s"] == pytest.approx(p)
    assert step_periods({"start_s": np.zeros(0), "step_s": np.zeros(0)}).size == 0
    # a fit on periods absorbs the loop's gap into c0
    recs = {"prefill_tokens": np.zeros(5), "decode_seqs": np.ones(5), "kv_tokens": np.full(5, 10), **rec}
    fit = fit_linear_cost_model(with_periods(recs), target="period_s")
    assert float(predict_step_time(fit, recs).mean()) == pytest.approx(float(p.mean()), rel=1e-9)


def test_relative_error_and_report():
    assert relative_error(1.2, 1.0) == pytest.approx(0.2)
    assert relative_error(0.5, 1.0) == pytest.approx(-0.5)
    assert math.isnan(relative_error(1.0, 0.0))
    assert math.isnan(relative_error(math.nan, 1.0))
    keys = ("ttft_mean", "ttft_p50", "ttft_p99", "tpot_mean", "tpot_p50", "tpot_p99", "e2e_mean")
    eng = {k: 0.010 for k in keys}
    sim = {**{k: 0.011 for k in keys}, "tpot_mean": 0.013}
    errs = {k: relative_error(sim[k], eng[k]) for k in keys}
    rep = CalibrationReport(
        coefficients=dict(TRUE), fit={"r2": 0.95, "num_steps": 100.0},
        holdout_fit={"r2": math.nan, "num_steps": 80.0, "measured_over_predicted": 1.0},
        engine=eng, simulator=sim, relative_error=errs,
        config={"model": "tiny", "scheduler_config": SchedulerConfig(num_gpu_blocks=8).to_dict(),
                "time_scale": 1.0, "rounds": 1})
    assert rep.relative_error["ttft_mean"] == pytest.approx(0.1)
    assert rep.relative_error["tpot_mean"] == pytest.approx(0.3)
    assert not rep.within_target                       # TPOT is 30% off
    assert CalibrationReport(**{**rep.__dict__, "target": 0.35}).within_target
    d = rep.to_dict()
    assert json.loads(json.dumps(d))["holdout_fit"]["r2"] is None      # NaN -> null
    assert d["within_target"] is False and set(d["coefficients"]) == set(COEFFICIENTS)
    text = rep.format()
    assert "TTFT mean" in text and "+30.0%" in text and "NOT met" in text


def test_default_and_split_traces():
    fit, hold = default_traces(100, fit_rates=(5.0, 10.0), holdout_rate=8.0, seed=3)
    assert len(fit) == len(hold) == 100
    assert hold.rate == pytest.approx(8.0)
    a = fit.arrival_time
    assert (50 - 1) / (a[49] - a[0]) < (50 - 1) / (a[99] - a[50])       # the rate ramps up
    assert not np.array_equal(fit.prompt_tokens, hold.prompt_tokens)
    assert fit.prompt_tokens.max() <= 512 and fit.output_tokens.max() <= 256
    with pytest.raises(InvalidArgumentError):
        default_traces(3, fit_rates=(1.0, 2.0))
    first, second = split_trace(fit, 30)
    assert len(first) == len(second) == 30
    assert first.arrival_time[0] == second.arrival_time[0] == 0.0
    assert np.array_equal(second.prompt_tokens, fit.prompt_tokens[30:60])
    with pytest.raises(InvalidArgumentError):
        split_trace(fit, 60)


def test_calibrate_end_to_end_tiny():
    # The whole loop on a tiny engine: finite numbers, consistent bookkeeping (no accuracy claim).
    pytest.importorskip("torch")
    from halffull.engine.calibrate import calibrate

    sched = dict(num_gpu_blocks=128, block_size=8, max_num_seqs=8, max_num_batched_tokens=64)
    fit = halffull.traces.synthetic(16, 200.0, prompt=("uniform", 4, 40), output=("uniform", 2, 12), seed=1)
    hold = halffull.traces.synthetic(12, 150.0, arrival="gamma", cv=2.0, prompt=("uniform", 4, 40),
                                     output=("uniform", 2, 12), seed=2)
    rep = calibrate("tiny", sched, fit_trace=fit, holdout_trace=hold, rounds=2, time_scale=2.0,
                    max_output_tokens=10, fit_speedups=[1.0, 3.0])
    assert set(rep.coefficients) == set(COEFFICIENTS) and rep.coefficients["c0"] > 0
    assert all(v >= 0 and math.isfinite(v) for v in rep.coefficients.values())
    for k in ("ttft_mean", "tpot_mean", "ttft_p99", "e2e_mean"):
        assert math.isfinite(rep.engine[k]) and math.isfinite(rep.simulator[k]), k
        assert rep.relative_error[k] == pytest.approx(relative_error(rep.simulator[k], rep.engine[k]))
    assert rep.engine["num_requests"] == rep.simulator["num_requests"] == 12
    assert len(rep.fit_reports) == len(rep.holdout_reports) == len(rep.sim_results) == 2
    # the simulator saw the arrival times the engine used: the trace's, divided by time_scale
    replayed = np.concatenate([r.arrival_s for r in rep.holdout_reports])
    simulated = np.concatenate([s.requests["arrival_time"] for s in rep.sim_results])
    assert np.allclose(replayed, simulated)
    halves = [hold.arrival_time[:6], hold.arrival_time[6:]]
    assert np.allclose(replayed, np.concatenate([(h - h[0]) / 2.0 for h in halves]))
    assert np.concatenate([s.requests["output_tokens"] for s in rep.sim_results]).max() <= 10
    assert rep.config["holdout_trace"]["requests"] == 12
    # fit pieces replay at time_scale x their speed-up, held-out pieces at time_scale
    assert [r.time_scale for r in rep.fit_reports] == [2.0, 6.0]
    assert [r.time_scale for r in rep.holdout_reports] == [2.0, 2.0]
    assert 0.0 <= rep.holdout_fit["share_outside_fit_range"] <= 1.0
    assert json.dumps(rep.to_dict())
    assert "held-out trace" in rep.format()
    with pytest.raises(InvalidArgumentError):
        calibrate("tiny", sched, holdout_trace=hold)
    with pytest.raises(InvalidArgumentError):
        calibrate("tiny", sched, fit_trace=fit, holdout_trace=hold, rounds=0)
    with pytest.raises(InvalidArgumentError, match="fit_speedups"):
        calibrate("tiny", sched, fit_trace=fit, holdout_trace=hold, rounds=2, fit_speedups=[1.0])


def test_cli_calibrate(tmp_path, capsys):
    pytest.importorskip("torch")
    from halffull.engine import cli_main

    out = tmp_path / "cal.json"
    argv = ["calibrate", "--preset", "tiny", "--max-requests", "10", "--rounds", "2", "--capacity", "150",
            "--fit-loads", "0.3,0.9", "--num-gpu-blocks", "128", "--max-num-seqs", "8", "--out", str(out)]
    assert cli_main(argv + ["--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert set(printed) == set(saved) >= {"coefficients", "engine", "simulator", "relative_error"}
    assert printed["config"]["capacity_rps"] == 150.0 and printed["config"]["rounds"] == 2
    assert cli_main(["calibrate", "--preset", "nope"]) == 2
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from halffull.cli import app

    assert typer
    res = CliRunner().invoke(app, ["calibrate"] + argv[1:-2])
    assert res.exit_code == 0, res.output
    assert "rel. error" in res.output
