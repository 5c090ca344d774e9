"""The torch engine loop: paged attention equals a dense forward, across chunked prefill,
recompute and swap preemption and block reuse; bad input is refused and the engine goes on.

Tolerance: logits through the paged cache match a dense forward (no cache, full causal
attention) of the same tokens to ``atol = rtol = 1e-4`` in float32 (observed error ~2e-6 on
logits of magnitude ~4). Everything runs the ``tiny`` preset on CPU; key tests run with the
Rust scheduler and the Python reference.
"""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import halffull  # noqa: E402
from halffull import SchedulerConfig  # noqa: E402
from halffull.engine import Engine, ModelConfig, fit_linear_cost_model  # noqa: E402
from halffull.engine.calibrate import fit_quality, predict_step_time  # noqa: E402
from halffull.errors import (  # noqa: E402
    ConfigError,
    DuplicateRequestError,
    InvalidArgumentError,
    RequestTooLargeError,
    UnknownRequestError,
)

ATOL = RTOL = 1e-4
TINY = ModelConfig.preset("tiny")
VOCAB = TINY.vocab_size
SCHEDULERS = ["rust", "reference"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(params=SCHEDULERS)
def scheduler(request):
    return request.param


def make_engine(scheduler="rust", *, model=TINY, eos_token_id=None, **sched):
    sched.setdefault("num_gpu_blocks", 64)
    sched.setdefault("block_size", 4)
    return Engine(model, SchedulerConfig(**sched), device="cpu", scheduler=scheduler,
                  record_logits=True, eos_token_id=eos_token_id)


def random_prompts(seed, lengths):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, VOCAB, size=n).tolist() for n in lengths]


def run_all(eng, prompts, max_output_tokens, check=True):
    ids = [eng.add_request(p, max_output_tokens=max_output_tokens) for p in prompts]
    for _ in eng.run():
        if check:
            eng.scheduler.check_invariants()
    return ids


def assert_logits_match_dense(eng, ids):
    """Every logit row the engine computed, through the paged cache, at every step (also
    before a preemption and after a swap), equals the dense forward of the final tokens."""
    for rid in ids:
        res = eng.result(rid)
        full = res.prompt_token_ids + res.output_token_ids
        dense = eng.model.forward_dense(full[:-1])
        covered = np.zeros(len(full) - 1, dtype=bool)
        assert eng.logits[rid], f"request {rid} computed nothing"
        for c, rows in eng.logits[rid]:
            torch.testing.assert_close(rows, dense[c: c + len(rows)], atol=ATOL, rtol=RTOL)
            covered[c: c + len(rows)] = True
        assert covered.all(), f"request {rid}: positions never computed"
        # and greedy sampling took the argmax of those logits
        assert res.output_token_ids == dense[len(res.prompt_token_ids) - 1:].argmax(-1).tolist()


def outputs(eng, ids):
    return [eng.result(i).output_token_ids for i in ids]


# ---------------------------------------------------------------------------- model


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ConfigError, match="tiny.*small") as e:
        ModelConfig.preset("gigantic")
    assert "small" in e.value.valid


def test_presets_sizes():
    assert Engine  # imported
    small = ModelConfig.preset("small")
    assert 90e6 <= small.num_parameters() <= 110e6
    from halffull.engine import LlamaModel
    assert LlamaModel(TINY).num_parameters() == TINY.num_parameters()
    assert ModelConfig.preset("tiny", dtype="bfloat16").torch_dtype == torch.bfloat16


@pytest.mark.parametrize("bad", [dict(num_heads=3), dict(num_kv_heads=3), dict(dtype="float8"),
                                 dict(hidden_size=0), dict(head_dim=7), dict(rope_theta=float("nan"))])
def test_model_config_rejects_bad_shapes(bad):
    with pytest.raises(ConfigError):
        ModelConfig.preset("tiny", **bad)
    with pytest.raises(ConfigError, match="unknown ModelConfig field"):
        ModelConfig.preset("tiny", hidden=3)


def test_weights_are_seeded():
    a, b = Engine(TINY, SchedulerConfig(num_gpu_blocks=8)), Engine(TINY, SchedulerConfig(num_gpu_blocks=8))
    c = Engine(TINY.replace(seed=1), SchedulerConfig(num_gpu_blocks=8))
    assert torch.equal(a.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)


# ---------------------------------------------------------------------------- paged == dense


@pytest.mark.parametrize("block_size,budget", [(4, 7), (3, 5), (16, 256), (1, 3), (5, 1)])
def test_paged_matches_dense_with_chunked_prefill(scheduler, block_size, budget):
    eng = make_engine(scheduler, block_size=block_size, num_gpu_blocks=256 // block_size,
                      max_num_batched_tokens=budget)
    ids = run_all(eng, random_prompts(block_size * 100 + budget, [13, 1, 9, 22]), max_output_tokens=5)
    assert_logits_match_dense(eng, ids)
    assert all(len(o) == 5 for o in outputs(eng, ids))
    assert eng.num_preemptions == 0
    if budget < 22:   # the 22-token prompt cannot fit in one step: chunks started mid-prompt
        assert any(c > 0 and len(rows) > 1 or budget == 1 for c, rows in eng.logits[ids[3]])


def test_rust_and_reference_drive_the_engine_identically():
    runs = []
    for kind in SCHEDULERS:
        eng = make_engine(kind, num_gpu_blocks=10, max_num_batched_tokens=6)
        ids = run_all(eng, random_prompts(7, [8, 6, 7, 11]), max_output_tokens=10, check=False)
        runs.append((outputs(eng, ids), eng.timings()["steps"], eng.num_preemptions))
    assert runs[0] == runs[1]


# ---------------------------------------------------------------------------- preemption


PREEMPT_PROMPTS = [8, 6, 7, 11]


def baseline_outputs(max_output_tokens=12):
    eng = make_engine("reference", num_gpu_blocks=200)
    ids = run_all(eng, random_prompts(1, PREEMPT_PROMPTS), max_output_tokens, check=False)
    return outputs(eng, ids)


def test_recompute_preemption_resumes_correctly(scheduler):
    eng = make_engine(scheduler, num_gpu_blocks=10, max_num_batched_tokens=5, preemption_mode="recompute")
    ids = run_all(eng, random_prompts(1, PREEMPT_PROMPTS), max_output_tokens=12)
    assert eng.num_preemptions > 0 and eng.num_swapped_out_blocks == 0
    assert any(eng.result(i).num_preemptions for i in ids)
    assert_logits_match_dense(eng, ids)
    assert outputs(eng, ids) == baseline_outputs()


def test_recompute_preemption_mid_decode_refeeds_generated_tokens(scheduler):
    # one request decoding alone, then a second arrives and the first is preempted mid-decode
    eng = make_engine(scheduler, num_gpu_blocks=6, max_num_batched_tokens=64)
    a = eng.add_request(random_prompts(2, [7])[0], max_output_tokens=14)
    for _ in range(4):
        eng.step()
    b = eng.add_request(random_prompts(3, [9])[0], max_output_tokens=8)
    for _ in eng.run():
        eng.scheduler.check_invariants()
    assert eng.num_preemptions > 0
    preempted = [i for i in (a, b) if eng.result(i).num_preemptions]
    assert preempted
    # the preempted request re-prefilled prompt + already generated tokens from position 0
    starts = [c for c, rows in eng.logits[preempted[0]] if c == 0]
    assert len(starts) >= 2
    assert_logits_match_dense(eng, [a, b])


def test_swap_preemption_copies_kv_out_and_back(scheduler):
    eng = make_engine(scheduler, num_gpu_blocks=10, num_cpu_blocks=16, max_num_batched_tokens=5,
                      preemption_mode="swap")
    ids = run_all(eng, random_prompts(1, PREEMPT_PROMPTS), max_output_tokens=12)
    assert eng.num_swapped_out_blocks > 0 and eng.num_swapped_in_blocks == eng.num_swapped_out_blocks
    # after a swap the request resumed without recomputing its prefix: no second pass from 0
    swapped = [i for i in ids if eng.result(i).num_preemptions]
    assert swapped and all(sum(c == 0 for c, _ in eng.logits[i]) == 1 for i in swapped)
    assert_logits_match_dense(eng, ids)
    assert outputs(eng, ids) == baseline_outputs()


def test_swap_kv_really_round_trips_through_host_cache():
    # overwrite the device cache while requests are swapped out: results stay right only if
    # the engine copied their KV to the host cache and back (finite junk: masked padding
    # slots are read and weighted by exactly 0, which NaN would survive)
    eng = make_engine("rust", num_gpu_blocks=10, num_cpu_blocks=16, max_num_batched_tokens=5,
                      preemption_mode="swap")
    ids = [eng.add_request(p, max_output_tokens=12) for p in random_prompts(1, PREEMPT_PROMPTS)]
    wiped = 0
    for _ in eng.run():
        if eng.scheduler.num_swapped and eng.scheduler.num_running == 0:
            eng.cache.kv.fill_(123.0)
            wiped += 1
        elif eng.scheduler.num_swapped:
            # zero every device block no running request holds
            held = {b for i in ids if eng.result(i).finish_reason is None for b in eng.block_table(i)}
            free = [b for b in range(eng.cache.num_blocks) if b not in held]
            eng.cache.kv[:, :, free] = 123.0
            wiped += 1
    assert wiped > 0
    assert_logits_match_dense(eng, ids)
    assert outputs(eng, ids) == baseline_outputs()


def test_swap_without_cpu_room_falls_back_to_recompute(scheduler):
    eng = make_engine(scheduler, num_gpu_blocks=10, num_cpu_blocks=1, max_num_batched_tokens=5,
                      preemption_mode="swap")
    ids = run_all(eng, random_prompts(1, PREEMPT_PROMPTS), max_output_tokens=12)
    assert eng.num_preemptions > 0
    assert_logits_match_dense(eng, ids)
    assert outputs(eng, ids) == baseline_outputs()


@pytest.mark.parametrize("policy", halffull.POLICIES)
def test_every_policy_under_pressure(policy):
    mode = "swap" if policy in ("priority", "larry") else "recompute"
    eng = make_engine("rust", num_gpu_blocks=10, num_cpu_blocks=8, max_num_batched_tokens=6,
                      policy=policy, preemption_mode=mode)
    ids = run_all(eng, random_prompts(1, PREEMPT_PROMPTS), max_output_tokens=12)
    assert_logits_match_dense(eng, ids)
    assert outputs(eng, ids) == baseline_outputs()


def test_freed_blocks_are_reused_and_results_stay_right(scheduler):
    eng = make_engine(scheduler, num_gpu_blocks=8, max_num_seqs=2, max_num_batched_tokens=8)
    ids = [eng.add_request(p, max_output_tokens=6) for p in random_prompts(5, [9, 5, 12, 7, 10, 3])]
    held: dict = {i: set() for i in ids}
    ended_at: dict = {}
    first_at: dict = {}
    step = 0
    for _ in eng.run():
        step += 1
        for i in ids:
            if eng.result(i).finish_reason is None and i not in ended_at:
                table = eng.block_table(i)
                if table:
                    first_at.setdefault(i, step)
                held[i].update(table)
            elif i not in ended_at:
                ended_at[i] = step
    reused = [(a, b) for a in ids for b in ids
              if a in ended_at and first_at.get(b, 0) > ended_at[a] and held[a] & held[b]]
    assert reused, "no block of a finished request was handed to a later one"
    assert_logits_match_dense(eng, ids)


# ---------------------------------------------------------------------------- loop API


def test_run_yields_tokens_per_step(scheduler):
    eng = make_engine(scheduler, max_num_batched_tokens=6)
    ids = [eng.add_request(p, max_output_tokens=4) for p in random_prompts(9, [10, 3])]
    got = {i: [] for i in ids}
    for out in eng.run():
        assert isinstance(out, dict)
        for rid, toks in out.items():
            assert len(toks) == 1
            got[rid] += toks
    assert not eng.has_unfinished_requests()
    for i in ids:
        res = eng.result(i)
        assert got[i] == res.output_token_ids and len(got[i]) == 4
        assert res.finish_reason == "length"
        assert res.arrival_time <= res.first_token_time <= res.finish_time


def test_eos_stops_a_request(scheduler):
    prompts = random_prompts(11, [6, 9, 4])
    base = make_engine(scheduler)
    base_ids = run_all(base, prompts, max_output_tokens=10)
    base_out = outputs(base, base_ids)
    eos = base_out[0][3]
    eng = make_engine(scheduler, eos_token_id=eos)
    ids = run_all(eng, prompts, max_output_tokens=10)
    for i, expect in zip(ids, base_out, strict=True):
        res = eng.result(i)
        cut = expect.index(eos) + 1 if eos in expect else len(expect)
        assert res.output_token_ids == expect[:cut]
        assert res.finish_reason == ("eos" if eos in expect else "length")
    assert eng.result(ids[0]).finish_reason == "eos" and len(eng.result(ids[0]).output_token_ids) <= 4


def test_abort_mid_run_frees_and_others_finish(scheduler):
    eng = make_engine(scheduler, max_num_batched_tokens=8)
    ids = [eng.add_request(p, max_output_tokens=8) for p in random_prompts(13, [7, 5, 6])]
    for _ in range(4):
        eng.step()
    eng.abort(ids[1])
    assert eng.result(ids[1]).finish_reason == "abort"
    with pytest.raises(UnknownRequestError):
        eng.abort(ids[1])
    for _ in eng.run():
        eng.scheduler.check_invariants()
    assert eng.scheduler.num_free_gpu_blocks == 64
    assert [len(eng.result(i).output_token_ids) for i in (ids[0], ids[2])] == [8, 8]
    assert_logits_match_dense(eng, [ids[0], ids[2]])


def test_generate_and_explicit_ids():
    eng = make_engine()
    outs = eng.generate(random_prompts(17, [5, 8]), max_output_tokens=3)
    assert [len(o) for o in outs] == [3, 3]
    rid = eng.add_request(np.array([1, 2, 3]), max_output_tokens=2, request_id="req-a")
    assert rid == "req-a"
    with pytest.raises(DuplicateRequestError):
        eng.add_request([4, 5], max_output_tokens=2, request_id="req-a")
    list(eng.run())
    assert len(eng.pop_result("req-a").output_token_ids) == 2
    with pytest.raises(UnknownRequestError):
        eng.result("req-a")


# ---------------------------------------------------------------------------- bad input


def test_bad_requests_are_refused_and_the_engine_keeps_serving(scheduler):
    eng = make_engine(scheduler, num_gpu_blocks=8)   # 32 tokens of cache
    good = eng.add_request(random_prompts(19, [6])[0], max_output_tokens=6)
    eng.step()
    bad = [
        ([1, VOCAB], InvalidArgumentError),            # outside the vocabulary
        ([-1, 2], InvalidArgumentError),
        ([], InvalidArgumentError),                    # empty
        ([1.5, 2.0], InvalidArgumentError),            # not ints
        ("hello", InvalidArgumentError),
        ([[1, 2]], InvalidArgumentError),              # 2-D
        ([True, False], InvalidArgumentError),
        (list(range(40)), RequestTooLargeError),       # longer than the cache
    ]
    for prompt, err in bad:
        with pytest.raises(err):
            eng.add_request(prompt, max_output_tokens=4)
    with pytest.raises(InvalidArgumentError):
        eng.add_request([1, 2], max_output_tokens=0)
    with pytest.raises(RequestTooLargeError) as e:
        eng.add_request(list(range(40)), max_output_tokens=4)
    assert e.value.capacity_blocks == 8
    assert eng.num_live == 1
    other = eng.add_request(random_prompts(23, [5])[0], max_output_tokens=6)
    for _ in eng.run():
        eng.scheduler.check_invariants()
    assert [len(eng.result(i).output_token_ids) for i in (good, other)] == [6, 6]
    assert_logits_match_dense(eng, [good, other])


@pytest.mark.parametrize("device", ["nonsense", "cuda:99", "tpu", "meta", 3.5])
def test_bad_device_is_a_config_error(device):
    with pytest.raises(ConfigError, match="device"):
        Engine(TINY, SchedulerConfig(num_gpu_blocks=8), device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        Engine(TINY, SchedulerConfig(num_gpu_blocks=8), device="cuda")


def test_bad_engine_arguments():
    with pytest.raises(ConfigError, match="rust, reference"):
        Engine(TINY, SchedulerConfig(num_gpu_blocks=8), scheduler="fastest")
    with pytest.raises(InvalidArgumentError):
        Engine(TINY, SchedulerConfig(num_gpu_blocks=8), eos_token_id=VOCAB)
    with pytest.raises(ConfigError):
        Engine(TINY, dict(num_gpu_blocks=8))
    with pytest.raises(ConfigError):
        Engine("tiny", SchedulerConfig(num_gpu_blocks=8))


# ---------------------------------------------------------------------------- measurement


def test_timings_and_step_records(scheduler):
    eng = make_engine(scheduler, max_num_batched_tokens=8)
    prompts = random_prompts(29, [10, 4, 7])
    run_all(eng, prompts, max_output_tokens=5, check=False)
    t = eng.timings()
    for key in ("steps", "schedule_s", "build_s", "forward_s", "update_s", "total_s", "swap_s", "sample_s"):
        assert key in t and t[key] >= 0
    parts = sum(t[k] for k in ("schedule_s", "build_s", "swap_s", "forward_s", "sample_s", "update_s"))
    assert parts <= t["total_s"] * 1.0001 and parts >= 0.9 * t["total_s"]
    assert 0 < t["scheduler_share"] < 1
    rec = eng.step_records()
    assert len(rec["step_s"]) == t["steps"]
    assert rec["prefill_tokens"].sum() == sum(len(p) for p in prompts)
    assert rec["decode_seqs"].sum() == 3 * (5 - 1)
    assert (rec["batched_tokens"] <= 8).all()
    assert (rec["kv_tokens"] >= rec["batched_tokens"]).all()
    eng.reset_timings()
    assert eng.timings()["steps"] == 0 and len(eng.step_records()["step_s"]) == 0


def test_serve_trace_reports_real_latencies(scheduler):
    trace = types.SimpleNamespace(
        arrival_time=np.array([0.0, 0.01, 0.01, 0.03, 0.05, 0.06]),
        prompt_tokens=np.array([12, 5, 300, 9, 20, 3]),     # 300 tokens > cache: rejected
        output_tokens=np.array([6, 3, 4, 1, 5, 8]),
    )
    eng = make_engine(scheduler, num_gpu_blocks=32, max_num_batched_tokens=16)
    report = eng.serve_trace(trace, time_scale=1.0)
    assert len(report) == 6
    assert report.rejected.tolist() == [False, False, True, False, False, False]
    assert 2 in report.errors and "RequestTooLargeError" in report.errors[2]
    ok = ~report.rejected
    assert report.output_tokens[ok].tolist() == [6, 3, 1, 5, 8]
    assert (report.ttft[ok] > 0).all() and (report.e2e[ok] >= report.ttft[ok]).all()
    assert np.isnan(report.tpot[3])                      # one token: no TPOT
    assert np.isfinite(report.tpot[[0, 1, 4, 5]]).all()
    assert report.duration_s >= 0.06
    s = report.summary()
    assert s["num_finished"] == 5 and s["num_rejected"] == 1
    assert set(s["ttft_s"]) == {"mean", "p50", "p90", "p99"}
    assert s["ttft_s"]["p50"] > 0
    steps = report.steps
    assert len(steps["step_s"]) == report.timings["steps"] > 0
    assert steps["prefill_tokens"].sum() >= 12 + 5 + 9 + 20 + 3
    assert "ttft" in report.format()
    assert not eng.has_unfinished_requests()


def test_serve_trace_with_halffull_traces():
    traces = pytest.importorskip("halffull.traces")
    trace = traces.synthetic(20, rate=400.0, prompt=("uniform", 4, 30), output=("uniform", 1, 8), seed=3)
    eng = make_engine("rust", num_gpu_blocks=64, max_num_batched_tokens=32)
    report = eng.serve_trace(trace, time_scale=1.0, max_requests=12, seed=1)
    assert len(report) == 12 and not report.rejected.any()
    assert report.output_tokens.tolist() == trace.output_tokens[:12].tolist()
    assert report.prompt_tokens.tolist() == trace.prompt_tokens[:12].tolist()


def test_serve_trace_bad_arguments():
    eng = make_engine()
    trace = types.SimpleNamespace(
        arrival_time=np.zeros(2), prompt_tokens=np.ones(2, int), output_tokens=np.ones(2, int)
    )
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(InvalidArgumentError, match="time_scale"):
            eng.serve_trace(trace, time_scale=bad)
    with pytest.raises(InvalidArgumentError, match="output_tokens"):
        eng.serve_trace(types.SimpleNamespace(arrival_time=np.zeros(2), prompt_tokens=np.ones(2)))
    with pytest.raises(InvalidArgumentError):
        eng.serve_trace(types.SimpleNamespace(arrival_time=np.array([0.0, np.nan]), prompt_tokens=np.ones(2),
                                              output_tokens=np.ones(2)))
    eng.add_request([1, 2], max_output_tokens=2)
    with pytest.raises(InvalidArgumentError, match="idle"):
        eng.serve_trace(trace)


def test_fit_linear_cost_model_recovers_and_clips():
    rng = np.random.default_rng(0)
    n = 200
    rec = {"prefill_tokens": rng.integers(0, 512, n), "decode_seqs": rng.integers(0, 64, n),
           "kv_tokens": rng.integers(0, 8192, n)}
    true = dict(c0=2e-3, c1=5e-5, c2=1e-4, c3=2e-7)
    rec["step_s"] = predict_step_time(true, rec) + rng.normal(0, 1e-6, n)
    fit = fit_linear_cost_model(rec)
    assert set(fit) == {"c0", "c1", "c2", "c3"}
    for k in true:
        assert fit[k] == pytest.approx(true[k], rel=0.05)
    assert fit_quality(fit, rec)["r2"] > 0.999
    # a negative true slope is clipped to 0 (cost never falls with more work)
    rec["step_s"] = 1e-3 + 1e-5 * rec["prefill_tokens"] - 1e-5 * rec["decode_seqs"]
    fit = fit_linear_cost_model(rec)
    assert all(v >= 0 for v in fit.values()) and fit["c2"] == 0.0
    rows = [dict(zip(rec, vals, strict=True)) for vals in zip(*rec.values(), strict=True)]
    assert fit_linear_cost_model(rows) == pytest.approx(fit)
    with pytest.raises(InvalidArgumentError):
        fit_linear_cost_model({k: [] for k in rec})
    with pytest.raises(InvalidArgumentError, match="kv_tokens"):
        fit_linear_cost_model({"prefill_tokens": [1], "decode_seqs": [1], "step_s": [1.0]})


def test_fit_on_engine_steps():
    eng = make_engine(max_num_batched_tokens=16)
    run_all(eng, random_prompts(31, [20, 3, 14, 8, 30]), max_output_tokens=6, check=False)
    fit = fit_linear_cost_model(eng.step_records())
    assert all(v >= 0 and np.isfinite(v) for v in fit.values())


def test_only_the_engine_needs_torch():
    # torch is an optional extra: the package, the reference, the lazy engine namespace and
    # the cost-model fit all import with torch unavailable
    code = ("import sys; sys.modules['torch'] = None\n"
            "import halffull, halffull.reference, halffull.engine\n"
            "from halffull.engine.calibrate import fit_linear_cost_model\n"
            "print(fit_linear_cost_model({'prefill_tokens': [1, 2, 3], 'decode_seqs': [0, 1, 0],"
            " 'kv_tokens': [1, 5, 3], 'step_s': [1.0, 2.0, 3.0]})['c1'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) >= 0


def test_engine_all_lists_every_lazy_export():
    # __all__ is written out for linters and type checkers; it must name exactly the lazy exports
    import halffull.engine as engine
    assert engine.__all__ == sorted(engine._EXPORTS)
    assert all(getattr(engine, name) is not None for name in engine.__all__)


# ---------------------------------------------------------------------------- dtypes, devices, CLI


def test_bfloat16_runs():
    eng = make_engine(model=TINY.replace(dtype="bfloat16"), max_num_batched_tokens=6)
    ids = run_all(eng, random_prompts(37, [9, 4]), max_output_tokens=4)
    assert all(len(o) == 4 for o in outputs(eng, ids))
    assert eng.cache.kv.dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_cuda_paged_matches_dense_and_cpu(mode):
    prompts = random_prompts(41, PREEMPT_PROMPTS)
    sched = SchedulerConfig(num_gpu_blocks=10, num_cpu_blocks=16, block_size=4, max_num_batched_tokens=5,
                            preemption_mode=mode)
    eng = Engine(TINY, sched, device="cuda", record_logits=True)
    ids = run_all(eng, prompts, max_output_tokens=12)
    assert eng.num_preemptions > 0 and eng.cache.kv.is_cuda
    assert_logits_match_dense(eng, ids)
    cpu = Engine(TINY, sched, device="cpu")
    assert outputs(eng, ids) == cpu.generate(prompts, max_output_tokens=12)
    assert eng.timings()["forward_s"] > 0


def test_cli_main_generate_and_errors(capsys):
    from halffull.engine import cli_main
    assert cli_main(["generate", "--num-requests", "2", "--prompt-len", "5", "--output-len", "3",
                     "--num-gpu-blocks", "16", "--json"]) == 0
    import json
    res = json.loads(capsys.readouterr().out)
    assert res["output_tokens"] == 6 and res["timings"]["steps"] > 0
    assert cli_main(["generate", "--preset", "huge"]) == 2
    assert "unknown model preset" in capsys.readouterr().err
