"""Sweeps (halffull.sweep): checked before running, saved as they go, resumable, and the same
table row for row on every executor; truncated requests counted on their own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from halffull import sim, sweep, traces
from halffull.errors import SweepError


@pytest.fixture(scope="module")
def small() -> traces.Trace:
    return traces.builtin("default").head(300)


def spec(**kw) -> sweep.SweepSpec:
    base = dict(traces=("t",), policies=("fcfs", "larry"), routers=("round_robin", "sal"), loads=(0.7, 1.1),
                replicas=(2,), engine={"num_gpu_blocks": 600, "max_num_seqs": 64})
    base.update(kw)
    return sweep.SweepSpec(**base)


def comparable(rows):
    """Rows without the wall time (the only column that depends on the machine)."""
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]


def as_json(rows):
    return json.loads(json.dumps(sweep.json_ready(comparable(rows)), default=str))


def test_every_problem_is_listed_before_anything_runs(tmp_path):
    runs = spec(traces=("/no/such/trace.csv",), policies=("fcfs", "lary"), routers=("sal", "nope"),
                loads=(-1.0, 1.0), engine={"num_gpu_blocks": 600, "semantics": "halffull",
                                           "enable_prefix_caching": True}, slo_ttft=0.0).runs()
    with pytest.raises(SweepError) as e:
        sweep.run_sweep(runs, out=tmp_path / "out", workers=1)
    text = str(e.value)
    for needle in ("/no/such/trace.csv", "lary", "'nope'", "load must be", "prefix caching", "slo_ttft"):
        assert needle in text, needle
    assert len(e.value.problems) == 6
    assert not (tmp_path / "out").exists()                       # nothing ran, nothing written


def test_engine_settings_parse_typed_and_are_checked():
    assert sweep.parse_engine_setting("num_gpu_blocks=2048") == ("num_gpu_blocks", 2048)
    assert sweep.parse_engine_setting("enable_prefix_caching=true") == ("enable_prefix_caching", True)
    assert sweep.parse_engine_setting("watermark=0.05") == ("watermark", 0.05)
    assert sweep.parse_engine_setting("max_model_len=none") == ("max_model_len", None)
    assert sweep.parse_engine_setting("semantics=vllm_v1") == ("semantics", "vllm_v1")
    for bad, needle in (("num_gpu_blocks=lots", "expected an int"), ("bogus=1", "valid: num_gpu_blocks"),
                        ("policy=fcfs", "unknown engine setting"), ("novalue", "key=value")):
        with pytest.raises(SweepError, match=needle):
            sweep.parse_engine_setting(bad)


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path, small):
    runs = spec().runs()
    # an interval giving more than MAX_SNAPSHOTS snapshots is refused by simulate itself
    bad = sweep.Run(trace="t", params={**runs[0].params, "snapshot_interval": 1e-9})
    out = sweep.run_sweep([*runs, bad], traces={"t": small}, out=tmp_path, workers=1)
    assert out.failed == 1 and out.ran == len(runs) + 1
    [err] = [r for r in out.rows if r["status"] == "error"]
    assert err["run_id"] == bad.run_id and "ConfigError" in err["error"]
    assert sum(r["status"] == "ok" for r in out.rows) == len(runs)
    assert len(sweep.read_journal(tmp_path)) == len(runs) + 1


def test_pool_gives_the_serial_table_row_for_row(tmp_path, small):
    runs = spec().runs()
    serial = sweep.run_sweep(runs, traces={"t": small}, out=tmp_path / "serial", workers=1)
    pool = sweep.run_sweep(runs, traces={"t": small}, out=tmp_path / "pool", workers=2)
    assert serial.failed == pool.failed == 0 and len(serial.rows) == len(runs)
    assert as_json(serial.rows) == as_json(pool.rows)
    assert [r["run_id"] for r in pool.rows] == [r.run_id for r in runs]    # in run order
    table = pool.table
    assert table is not None and table.name in ("results.parquet", "results.csv")


def test_interrupted_sweep_keeps_what_finished_and_resume_runs_the_rest(tmp_path, small):
    runs = spec().runs()
    seen = []

    def stop_after_three(done, total, row):
        seen.append(row["run_id"])
        if len(seen) == 3:
            raise KeyboardInterrupt

    cut = sweep.run_sweep(runs, traces={"t": small}, out=tmp_path, workers=1, progress=stop_after_three)
    assert cut.interrupted and cut.missing == len(runs) - 3
    assert set(sweep.read_journal(tmp_path)) == set(seen)
    with pytest.raises(SweepError, match="already holds a sweep"):
        sweep.run_sweep(runs, traces={"t": small}, out=tmp_path, workers=1)
    with pytest.raises(SweepError, match="another sweep"):
        sweep.run_sweep(runs[:2], traces={"t": small}, out=tmp_path, workers=1, resume=True)
    rest = sweep.run_sweep(runs, traces={"t": small}, out=tmp_path, workers=1, resume=True)
    assert rest.ran == len(runs) - 3 and rest.missing == 0 and not rest.interrupted
    fresh = sweep.run_sweep(runs, traces={"t": small}, out=tmp_path / "fresh", workers=1)
    assert as_json(rest.rows) == as_json(fresh.rows)
    _, saved = sweep.load_results(tmp_path)
    assert as_json(saved) == as_json(fresh.rows)


def test_a_cut_journal_line_is_skipped(tmp_path, small):
    runs = spec().runs()[:2]
    sweep.run_sweep(runs, traces={"t": small}, out=tmp_path, workers=1)
    with open(tmp_path / sweep.JOURNAL, "a") as f:
        f.write('{"run_id": "abc", "sta')                  # killed while writing
    assert len(sweep.read_journal(tmp_path)) == 2


def test_per_request_tables_are_saved_when_asked(tmp_path, small):
    runs = spec(save_requests=True, loads=(1.1,), routers=("sal",)).runs()
    out = sweep.run_sweep(runs, traces={"t": small}, out=tmp_path, workers=1)
    for row in out.rows:
        table = sweep.read_requests(tmp_path / "requests" / row["requests_file"])
        assert len(table["ttft"]) == len(small)
        done = table["status"] == "finished"
        assert np.nanpercentile(table["ttft"][done].astype(float), 99) == pytest.approx(row["ttft_p99"])


def test_ray_gives_the_serial_table_row_for_row(tmp_path, small):
    ray = pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'halffull[ray]')")
    runs = spec(loads=(1.1,)).runs()
    serial = sweep.run_sweep(runs, traces={"t": small}, workers=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = sweep.run_sweep(runs, traces={"t": small}, out=tmp_path, ray="local")
    finally:
        ray.shutdown()
    assert on_ray.failed == 0
    assert as_json(serial.rows) == as_json(on_ray.rows)


def test_report_writes_tables_and_plots(tmp_path, small):
    pytest.importorskip("matplotlib")
    sweep.run_sweep(spec().runs(), traces={"t": small}, out=tmp_path, workers=1)
    paths = sweep.build_report(tmp_path)
    assert paths[0].name == "report.md" and "| fcfs | sal |" in paths[0].read_text()
    pngs = [p for p in paths if p.suffix == ".png"]
    assert len(pngs) == 2 and all(p.stat().st_size > 10_000 for p in pngs)


def test_outputs_the_cache_cannot_hold_are_truncated_not_finished(small):
    # 100 blocks of 16 tokens: a prompt of 1,500 tokens has room for about 100 output tokens
    prompt = np.array(small.prompt_tokens)
    output = np.array(small.output_tokens)
    prompt[7], output[7] = 1500, 484
    tr = traces.Trace(arrival_time=small.arrival_time, prompt_tokens=prompt, output_tokens=output, name="cut")
    res = sim.simulate(tr, replicas=1, num_gpu_blocks=100, rate_scale=0.2)
    r, s = res.requests, res.summary()
    assert r["status"][7] == "truncated" and r["output_tokens"][7] < 484
    assert r["reason"][7].startswith("kv_cache: prompt 1500 + output 484 tokens")
    assert r["reject_reason"][7] == ""
    assert s["num_truncated"] >= 1
    assert s["num_finished"] + s["num_rejected"] + s["num_truncated"] == len(tr)
    assert s["num_finished"] == int((r["status"] == "finished").sum())
