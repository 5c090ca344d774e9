"""``SchedulerConfig`` is the Rust core's own frozen class: defaults, checks and valid names
come from ``rust/config.rs``; the simulator's engine settings go through the same constructor."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import numpy as np
import pytest

import halffull
from halffull import _core, config, sim
from halffull.errors import ConfigError


def test_is_the_core_class_with_its_defaults():
    cfg = halffull.SchedulerConfig(num_gpu_blocks=64)
    assert halffull.SchedulerConfig is _core.SchedulerConfig is config.SchedulerConfig
    assert cfg.to_dict() == {
        "num_gpu_blocks": 64, "block_size": 16, "num_cpu_blocks": 0, "max_num_seqs": 256,
        "max_num_batched_tokens": 8192, "policy": "fcfs", "preemption_mode": "recompute",
        "watermark": None, "larry_alpha": 1000.0, "larry_load": "waiting", "sjf_aging": 10.0,
        "semantics": "halffull", "max_model_len": None, "long_prefill_token_threshold": 0,
        "reserve_full_prompt": True, "enable_prefix_caching": False, "larry_deadline": 30.0, "larry_slack": 0.75,
    }
    assert cfg.watermark == 0.01  # None in to_dict: the semantics' default, read as the effective value
    assert halffull.SchedulerConfig(64, 4) == cfg.replace(block_size=4)
    assert (cfg.watermark_blocks, cfg.capacity_tokens) == (0, 1024)
    assert repr(cfg).startswith("SchedulerConfig(num_gpu_blocks=64, block_size=16,")


def test_frozen_hashable_picklable_copyable():
    cfg = halffull.SchedulerConfig(num_gpu_blocks=8, policy="larry", watermark=0)
    with pytest.raises(AttributeError):
        cfg.policy = "fcfs"  # type: ignore[misc]
    for twin in (pickle.loads(pickle.dumps(cfg)), copy.copy(cfg), copy.deepcopy(cfg), cfg.replace()):
        assert twin == cfg and hash(twin) == hash(cfg)
    assert cfg != cfg.replace(policy="fcfs") and cfg != cfg.to_dict()
    assert len({cfg, cfg.replace(), cfg.replace(block_size=4)}) == 2


def test_numpy_ints_and_int_floats_are_accepted():
    cfg = halffull.SchedulerConfig(num_gpu_blocks=np.int64(5), watermark=0, larry_alpha=3)
    assert (cfg.num_gpu_blocks, cfg.watermark, cfg.larry_alpha) == (5, 0.0, 3.0)
    assert type(cfg.num_gpu_blocks) is int and type(cfg.watermark) is float


@pytest.mark.parametrize("kwargs, field", [
    (dict(), "num_gpu_blocks"),
    (dict(num_gpu_blocks=True), "num_gpu_blocks"),
    (dict(num_gpu_blocks="8"), "num_gpu_blocks"),
    (dict(num_gpu_blocks=8, block_size=None), "block_size"),
    (dict(num_gpu_blocks=8, policy=3), "policy"),
    (dict(num_gpu_blocks=2**30, block_size=2**20), "num_gpu_blocks"),
])
def test_bad_values_are_config_errors_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        halffull.SchedulerConfig(**kwargs)
    assert info.value.field == field


def test_unknown_settings_list_the_valid_ones_everywhere():
    with pytest.raises(ConfigError) as info:
        halffull.SchedulerConfig(num_gpu_blocks=8, typo=1)
    assert "num_gpu_blocks" in info.value.valid and info.value.value == "typo"
    with pytest.raises(ConfigError) as info:
        halffull.SchedulerConfig(num_gpu_blocks=8).replace(typo=1)
    assert "sjf_aging" in info.value.valid
    with pytest.raises(TypeError):
        halffull.SchedulerConfig(8, num_gpu_blocks=8)


def test_vllm_v1_fields_defaults_and_round_trips():
    cfg = halffull.SchedulerConfig(num_gpu_blocks=20, semantics="vllm_v1")
    assert (cfg.semantics, cfg.watermark, cfg.watermark_blocks, cfg.usable_gpu_blocks) == ("vllm_v1", 0.0, 0, 19)
    assert cfg.capacity_tokens == 19 * 16 and cfg.reserve_full_prompt is True
    assert (cfg.max_model_len, cfg.long_prefill_token_threshold) == (None, 0)
    set_ = cfg.replace(watermark=0.1, max_model_len=64, long_prefill_token_threshold=8, reserve_full_prompt=False)
    assert (set_.watermark, set_.watermark_blocks, set_.max_model_len) == (0.1, 2, 64)
    assert (set_.long_prefill_token_threshold, set_.reserve_full_prompt) == (8, False)
    assert halffull.SchedulerConfig(**set_.to_dict()) == set_
    assert set_.replace(semantics="halffull", watermark=None).watermark == 0.01
    assert cfg.replace(semantics="halffull").usable_gpu_blocks == 20
    for c in (cfg, set_):
        for twin in (pickle.loads(pickle.dumps(c)), copy.deepcopy(c), halffull.SchedulerConfig(**c.to_dict())):
            assert twin == c and hash(twin) == hash(c)
    # explicit 0.01 is not the same setting as "the default" (it survives a change of semantics)
    assert halffull.SchedulerConfig(num_gpu_blocks=20, watermark=0.01) != halffull.SchedulerConfig(num_gpu_blocks=20)
    assert config.SEMANTICS == _core.SEMANTICS == ("halffull", "vllm_v1")


@pytest.mark.parametrize("kwargs, field", [
    (dict(semantics="vllm_v1", preemption_mode="swap"), "preemption_mode"),
    (dict(semantics="vllm_v1", num_cpu_blocks=4), "num_cpu_blocks"),
    (dict(semantics="vllm"), "semantics"),
    (dict(max_model_len=0), "max_model_len"),
    (dict(max_model_len=2.0), "max_model_len"),
    (dict(long_prefill_token_threshold=-1), "long_prefill_token_threshold"),
    (dict(reserve_full_prompt=1), "reserve_full_prompt"),
    (dict(reserve_full_prompt=None), "reserve_full_prompt"),
])
def test_new_fields_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        halffull.SchedulerConfig(num_gpu_blocks=8, **kwargs)
    assert info.value.field == field
    with pytest.raises(ConfigError):
        halffull.SchedulerConfig(num_gpu_blocks=8).replace(**kwargs)


def test_names_come_from_the_core():
    assert config.POLICIES == halffull.POLICIES == tuple(_core.policy_names())
    assert config.PREEMPTION_MODES == halffull.PREEMPTION_MODES == ("recompute", "swap")
    assert config.LARRY_LOADS == ("waiting", "outstanding")


def test_config_does_not_import_the_reference():
    code = "import sys, halffull.config; print('halffull.reference' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sim_setup_resolves_the_preset_once():
    info = _core.sim_preset("llama-3-8b/h100", 16)
    engine, cost = _core.sim_setup("llama-3-8b/h100", None, preemption_mode="swap")
    assert isinstance(engine, halffull.SchedulerConfig)
    assert (engine.num_gpu_blocks, engine.num_cpu_blocks) == (info["num_gpu_blocks"], info["num_cpu_blocks"])
    assert cost.kind == "roofline"
    engine, _ = _core.sim_setup("llama-3-8b/h100", None, num_gpu_blocks=100, block_size=8)
    assert (engine.num_gpu_blocks, engine.num_cpu_blocks, engine.block_size) == (100, 0, 8)
    linear = sim.CostModel.linear(0.01, 0, 0, 0)
    assert repr(_core.sim_setup("llama-3-8b/h100", linear)[1]) == repr(linear)
    with pytest.raises(ConfigError) as info_:
        _core.sim_setup("gpt-5/tpu")
    assert "llama-3-8b/h100" in info_.value.valid
    with pytest.raises(ConfigError) as info_:
        _core.sim_setup("llama-3-8b/h100", None, engine_typo=1)
    assert "num_gpu_blocks" in info_.value.valid


def test_simulate_takes_a_config_or_its_fields():
    cost = sim.CostModel.preset("llama-3-8b/h100")
    cols = (np.array([0.0, 0.1]), np.array([10, 10]), np.array([5, 5]))
    common = dict(replicas=1, router="round_robin", cost=cost, record_steps=False)
    a = _core.simulate(*cols, engine={"num_gpu_blocks": 100}, **common)
    b = _core.simulate(*cols, engine=halffull.SchedulerConfig(num_gpu_blocks=100), **common)
    assert a["finish_time"].tolist() == b["finish_time"].tolist()
    with pytest.raises(ConfigError):
        _core.simulate(*cols, engine=[("num_gpu_blocks", 100)], **common)


@pytest.mark.parametrize("semantics", ["halffull", "vllm_v1"])
def test_max_model_len_refuses_and_caps_through_the_bindings(semantics):
    from halffull.errors import RequestTooLargeError

    cfg = halffull.SchedulerConfig(num_gpu_blocks=16, block_size=4, semantics=semantics, max_model_len=13)
    s = halffull.Scheduler(cfg)
    with pytest.raises(RequestTooLargeError) as info:
        s.add_request("long", 13, 5)
    assert (info.value.request_id, info.value.need_blocks, info.value.capacity_blocks) == ("long", 4, 4)
    assert "max_model_len=13" in str(info.value) and len(s) == 0
    s.add_request("a", 10, 100)
    outputs = 0
    while len(s):
        plan = s.schedule()
        outputs += int(plan.samples.sum())
        s.update(plan)
        s.check_invariants()
    assert outputs == 3                                  # 10 + 3 = max_model_len
    usable = 15 if semantics == "vllm_v1" else 16
    assert s.num_free_gpu_blocks == usable == len(s.free_gpu_block_ids())
    assert (0 in s.free_gpu_block_ids()) == (semantics == "halffull")  # vLLM's null block
