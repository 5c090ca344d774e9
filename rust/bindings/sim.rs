//! Python bindings of the simulator: `CostModel`, `simulate`, `measure_capacity`,
//! `sim_preset_names`, `sim_preset`. The trace goes in as numpy columns, the results come
//! back as a dict of numpy columns; the GIL is released while the simulation runs.

use std::time::{Duration, Instant};

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::config::{config_from_dict, pairs, PySchedulerConfig};
use super::convert::value;
use super::error::IntoPyResult;
use crate::config::SchedulerConfig;
use crate::error::Error;
use crate::limits;
use crate::sim::{
    self, BlockIds, CostModel, Linear, Preset, SimConfig, SimOutput, StepShape, TraceView,
};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCostModel>()?;
    m.add_function(wrap_pyfunction!(sim_preset_names, m)?)?;
    m.add_function(wrap_pyfunction!(sim_preset, m)?)?;
    m.add_function(wrap_pyfunction!(sim_setup, m)?)?;
    m.add_function(wrap_pyfunction!(simulate, m)?)?;
    m.add_function(wrap_pyfunction!(measure_capacity, m)?)?;
    Ok(())
}

/// Names of the model/GPU presets (`llama-3-8b/h100`, ...), in registry order.
#[pyfunction]
fn sim_preset_names() -> Vec<&'static str> {
    sim::preset_names()
}

/// A preset's numbers: model shape, GPU, tensor parallelism, derived KV capacity.
#[pyfunction]
#[pyo3(signature = (name, block_size=16))]
fn sim_preset<'py>(py: Python<'py>, name: &str, block_size: u64) -> PyResult<Bound<'py, PyDict>> {
    let p = Preset::by_name(name).py(py)?;
    let d = PyDict::new(py);
    d.set_item("name", p.name)?;
    d.set_item("model", p.model.name)?;
    d.set_item("gpu", p.gpu.name)?;
    d.set_item("tp", p.tp)?;
    d.set_item("num_layers", p.model.num_layers)?;
    d.set_item("hidden_size", p.model.hidden_size)?;
    d.set_item("num_heads", p.model.num_heads)?;
    d.set_item("num_kv_heads", p.model.num_kv_heads)?;
    d.set_item("head_dim", p.model.head_dim)?;
    d.set_item("params", p.model.params)?;
    d.set_item("weight_bytes", p.model.weight_bytes())?;
    d.set_item("kv_bytes_per_token", p.model.kv_bytes_per_token())?;
    d.set_item("peak_flops", p.gpu.peak_flops * p.tp as f64)?;
    d.set_item("mem_bw", p.gpu.mem_bw * p.tp as f64)?;
    d.set_item("memory_bytes", p.gpu.memory_bytes * p.tp as f64)?;
    d.set_item("host_bw", p.gpu.host_bw * p.tp as f64)?;
    d.set_item("kv_cache_bytes", p.kv_cache_bytes())?;
    d.set_item("block_size", block_size)?;
    d.set_item("num_gpu_blocks", p.num_gpu_blocks(block_size))?;
    d.set_item("num_cpu_blocks", p.num_cpu_blocks(block_size))?;
    Ok(d)
}

/// A step cost model: `CostModel.preset("llama-3-8b/h100")` (roofline) or
/// `CostModel.linear(c0, c1, c2, c3)`. `step_time(...)` prices one step exactly as the
/// simulator does.
#[pyclass(name = "CostModel", module = "halffull._core", frozen, from_py_object)]
#[derive(Clone)]
pub struct PyCostModel {
    inner: CostModel,
}

#[pymethods]
impl PyCostModel {
    /// The roofline model of a preset; efficiencies and overhead may be overridden.
    #[staticmethod]
    #[pyo3(signature = (name, *, block_size=16, overhead_s=None, eff_compute=None, eff_memory=None, host_bw=None))]
    fn preset(
        py: Python<'_>,
        name: &str,
        block_size: u64,
        overhead_s: Option<f64>,
        eff_compute: Option<f64>,
        eff_memory: Option<f64>,
        host_bw: Option<f64>,
    ) -> PyResult<Self> {
        let p = Preset::by_name(name).py(py)?;
        let mut r = p.roofline(block_size);
        if let Some(v) = overhead_s {
            r.overhead_s = v;
        }
        if let Some(v) = eff_compute {
            r.eff_compute = v;
        }
        if let Some(v) = eff_memory {
            r.eff_memory = v;
        }
        if let Some(v) = host_bw {
            r.host_bw = v;
        }
        let inner = CostModel::Roofline(r);
        inner.validate().py(py)?;
        Ok(PyCostModel { inner })
    }

    /// `c0 + c1*prefill_tokens + c2*decode_seqs + c3*kv_tokens (+ swap_s_per_block*blocks)`.
    #[staticmethod]
    #[pyo3(signature = (c0, c1, c2, c3, swap_s_per_block=0.0))]
    fn linear(
        py: Python<'_>,
        c0: f64,
        c1: f64,
        c2: f64,
        c3: f64,
        swap_s_per_block: f64,
    ) -> PyResult<Self> {
        let inner = CostModel::Linear(Linear {
            c0,
            c1,
            c2,
            c3,
            swap_s_per_block,
        });
        inner.validate().py(py)?;
        Ok(PyCostModel { inner })
    }

    /// `"roofline"` or `"linear"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.inner {
            CostModel::Roofline(_) => "roofline",
            CostModel::Linear(_) => "linear",
        }
    }

    /// The parameters as a dict.
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        match self.inner {
            CostModel::Roofline(r) => {
                for (k, v) in [
                    ("overhead_s", r.overhead_s),
                    ("params", r.params),
                    ("num_layers", r.num_layers),
                    ("q_dim", r.q_dim),
                    ("weight_bytes", r.weight_bytes),
                    ("kv_bytes_per_token", r.kv_bytes_per_token),
                    ("peak_flops", r.peak_flops),
                    ("mem_bw", r.mem_bw),
                    ("eff_compute", r.eff_compute),
                    ("eff_memory", r.eff_memory),
                    ("host_bw", r.host_bw),
                    ("block_size", r.block_size),
                ] {
                    d.set_item(k, v)?;
                }
            }
            CostModel::Linear(l) => {
                for (k, v) in [
                    ("c0", l.c0),
                    ("c1", l.c1),
                    ("c2", l.c2),
                    ("c3", l.c3),
                    ("swap_s_per_block", l.swap_s_per_block),
                ] {
                    d.set_item(k, v)?;
                }
            }
        }
        Ok(d)
    }

    /// Seconds one step takes: per scheduled request its new tokens, cached tokens and
    /// whether it is a prefill (a `StepPlan`'s arrays), plus blocks swapped in or out.
    #[pyo3(signature = (num_new_tokens, num_computed_tokens, is_prefill, swap_blocks=0))]
    fn step_time(
        &self,
        py: Python<'_>,
        num_new_tokens: Vec<u64>,
        num_computed_tokens: Vec<u64>,
        is_prefill: Vec<bool>,
        swap_blocks: u64,
    ) -> PyResult<f64> {
        if num_new_tokens.len() != num_computed_tokens.len()
            || num_new_tokens.len() != is_prefill.len()
        {
            return Err(Error::invalid(
                "num_new_tokens",
                "num_new_tokens, num_computed_tokens and is_prefill differ in length",
            ))
            .py(py);
        }
        let mut shape = StepShape::default();
        for ((&n, &c), &p) in num_new_tokens
            .iter()
            .zip(&num_computed_tokens)
            .zip(&is_prefill)
        {
            shape.add(n, c, p);
        }
        shape.swap_blocks = swap_blocks;
        Ok(self.inner.step_time(&shape))
    }

    fn __repr__(&self) -> String {
        format!("CostModel({:?})", self.inner)
    }
}

/// An engine configuration: a `SchedulerConfig`, or a dict of its fields.
fn engine_config(py: Python<'_>, engine: &Bound<'_, PyAny>) -> PyResult<SchedulerConfig> {
    if let Ok(c) = engine.cast::<PySchedulerConfig>() {
        return Ok(c.get().inner.clone());
    }
    match engine.cast::<PyDict>() {
        Ok(d) => config_from_dict(py, Some(d)),
        Err(_) => {
            let kind = engine.get_type().name()?;
            Err(Error::config(
                "engine",
                format!("engine must be a SchedulerConfig or a dict of its fields, got {kind}"),
            ))
            .py(py)
        }
    }
}

/// The engine configuration and cost model of a simulation on `preset`, resolving the
/// preset once: `settings` are `SchedulerConfig` fields (`num_gpu_blocks` defaults to the
/// preset's, and under swap `num_cpu_blocks` too); `cost` defaults to the preset's roofline.
#[pyfunction]
#[pyo3(signature = (preset, cost=None, **settings))]
fn sim_setup(
    py: Python<'_>,
    preset: &str,
    cost: Option<PyCostModel>,
    settings: Option<&Bound<'_, PyDict>>,
) -> PyResult<(PySchedulerConfig, PyCostModel)> {
    let p = Preset::by_name(preset).py(py)?;
    let pairs = pairs(settings)?;
    let engine = p
        .engine_config(pairs.iter().map(|(k, v)| (k.as_str(), v.clone())))
        .py(py)?;
    let cost = match cost {
        Some(c) => c,
        None => PyCostModel {
            inner: CostModel::Roofline(p.roofline(engine.block_size)),
        },
    };
    Ok((PySchedulerConfig { inner: engine }, cost))
}

/// How often a running simulation checks for Ctrl-C (wall time).
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

struct Columns {
    arrival: Vec<f64>,
    prompt: Vec<i64>,
    output: Vec<i64>,
    predicted: Option<Vec<i64>>,
    /// (ids, offsets, tokens per id): the trace's prompt block ids, flattened.
    block_ids: Option<(Vec<u64>, Vec<u64>, u64)>,
}

impl Columns {
    fn new(
        arrival: PyReadonlyArray1<'_, f64>,
        prompt: PyReadonlyArray1<'_, i64>,
        output: PyReadonlyArray1<'_, i64>,
    ) -> Self {
        Columns {
            arrival: arrival.as_array().iter().copied().collect(),
            prompt: prompt.as_array().iter().copied().collect(),
            output: output.as_array().iter().copied().collect(),
            predicted: None,
            block_ids: None,
        }
    }
    fn view(&self) -> TraceView<'_> {
        TraceView {
            arrival_time: &self.arrival,
            prompt_tokens: &self.prompt,
            output_tokens: &self.output,
            predicted_output_tokens: self.predicted.as_deref(),
            block_ids: self
                .block_ids
                .as_ref()
                .map(|(ids, offsets, block_tokens)| BlockIds {
                    ids,
                    offsets,
                    block_tokens: *block_tokens,
                }),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn sim_config(
    py: Python<'_>,
    replicas: &Bound<'_, PyAny>,
    router: &str,
    cost: &PyCostModel,
    engine: &Bound<'_, PyAny>,
    seed: u64,
    max_output_tokens: u64,
    snapshot_interval: Option<f64>,
    record_steps: bool,
) -> PyResult<SimConfig> {
    let replicas = limits::replicas("replicas", &value(replicas)).py(py)?;
    let mut cfg = SimConfig::new(replicas, router, engine_config(py, engine)?, cost.inner);
    cfg.seed = seed;
    cfg.max_output_tokens = max_output_tokens;
    cfg.snapshot_interval = snapshot_interval;
    cfg.record_steps = record_steps;
    Ok(cfg)
}

fn output_dict<'py>(py: Python<'py>, o: SimOutput) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("replica", PyArray1::from_vec(py, o.replica))?;
    d.set_item("arrival_time", PyArray1::from_vec(py, o.arrival_time))?;
    d.set_item(
        "first_token_time",
        PyArray1::from_vec(py, o.first_token_time),
    )?;
    d.set_item("finish_time", PyArray1::from_vec(py, o.finish_time))?;
    d.set_item("prompt_tokens", PyArray1::from_vec(py, o.prompt_tokens))?;
    d.set_item("output_tokens", PyArray1::from_vec(py, o.output_tokens))?;
    d.set_item("preemptions", PyArray1::from_vec(py, o.preemptions))?;
    d.set_item("status", PyArray1::from_vec(py, o.status))?;
    d.set_item("reject_reason", PyList::new(py, o.reject_reason)?)?;
    d.set_item("cached_tokens", PyArray1::from_vec(py, o.cached_tokens))?;
    let pc = PyDict::new(py);
    let st = o.prefix_cache;
    for (k, v) in [
        ("requests", st.requests),
        ("queries", st.queries),
        ("hits", st.hits),
        ("preempted_requests", st.preempted_requests),
        ("preempted_queries", st.preempted_queries),
        ("preempted_hits", st.preempted_hits),
        ("evictions", st.evictions),
    ] {
        pc.set_item(k, v)?;
    }
    d.set_item("prefix_cache", pc)?;
    d.set_item("step_time", PyArray1::from_vec(py, o.step_time))?;
    d.set_item("step_duration", PyArray1::from_vec(py, o.step_duration))?;
    d.set_item("step_replica", PyArray1::from_vec(py, o.step_replica))?;
    d.set_item("step_batch_size", PyArray1::from_vec(py, o.step_batch_size))?;
    d.set_item(
        "step_prefill_tokens",
        PyArray1::from_vec(py, o.step_prefill_tokens),
    )?;
    d.set_item(
        "step_decode_tokens",
        PyArray1::from_vec(py, o.step_decode_tokens),
    )?;
    d.set_item(
        "step_kv_blocks_used",
        PyArray1::from_vec(py, o.step_kv_blocks_used),
    )?;
    d.set_item(
        "step_queue_length",
        PyArray1::from_vec(py, o.step_queue_length),
    )?;
    d.set_item("step_preempted", PyArray1::from_vec(py, o.step_preempted))?;
    d.set_item("num_steps", o.num_steps)?;
    d.set_item("end_time", o.end_time)?;
    Ok(d)
}

/// Run a trace (numpy columns) through `replicas` engines behind a router; returns a dict of
/// numpy columns per request and per step (see `halffull.sim`).
#[pyfunction]
#[pyo3(signature = (arrival_time, prompt_tokens, output_tokens, *, replicas, router, cost, engine, seed=0, max_output_tokens=2048, snapshot_interval=None, record_steps=true, predicted_output_tokens=None, sal_beta=None, hash_ids=None, hash_id_offsets=None, hash_block_tokens=512))]
#[allow(clippy::too_many_arguments)]
fn simulate<'py>(
    py: Python<'py>,
    arrival_time: PyReadonlyArray1<'py, f64>,
    prompt_tokens: PyReadonlyArray1<'py, i64>,
    output_tokens: PyReadonlyArray1<'py, i64>,
    replicas: &Bound<'py, PyAny>,
    router: &str,
    cost: PyCostModel,
    engine: &Bound<'py, PyAny>,
    seed: u64,
    max_output_tokens: u64,
    snapshot_interval: Option<f64>,
    record_steps: bool,
    predicted_output_tokens: Option<PyReadonlyArray1<'py, i64>>,
    sal_beta: Option<f64>,
    hash_ids: Option<PyReadonlyArray1<'py, u64>>,
    hash_id_offsets: Option<PyReadonlyArray1<'py, u64>>,
    hash_block_tokens: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg = sim_config(
        py,
        replicas,
        router,
        &cost,
        engine,
        seed,
        max_output_tokens,
        snapshot_interval,
        record_steps,
    )?;
    let mut cfg = cfg;
    cfg.sal_beta = sal_beta;
    let mut cols = Columns::new(arrival_time, prompt_tokens, output_tokens);
    cols.predicted = predicted_output_tokens.map(|p| p.as_array().iter().copied().collect());
    cols.block_ids = match (hash_ids, hash_id_offsets) {
        (Some(ids), Some(offsets)) => Some((
            ids.as_array().iter().copied().collect(),
            offsets.as_array().iter().copied().collect(),
            hash_block_tokens,
        )),
        (None, None) => None,
        _ => {
            return Err(Error::invalid(
                "hash_ids",
                "give hash_ids and hash_id_offsets together",
            ))
            .py(py)
        }
    };
    let mut interrupted = None;
    let res = py.detach(|| {
        let mut stop = signal_check(&mut interrupted);
        sim::simulate_until(cols.view(), &cfg, &mut stop)
    });
    match (res.py(py)?, interrupted) {
        (_, Some(e)) => Err(e),
        (Some(out), None) => output_dict(py, out),
        (None, None) => Err(PyRuntimeError::new_err("the simulation stopped unasked")),
    }
}

/// One replica's capacity in requests/s at saturation on (a sample of) the trace's mix.
#[pyfunction]
#[pyo3(signature = (arrival_time, prompt_tokens, output_tokens, *, cost, engine, max_output_tokens=2048, max_requests=2000))]
#[allow(clippy::too_many_arguments)]
fn measure_capacity<'py>(
    py: Python<'py>,
    arrival_time: PyReadonlyArray1<'py, f64>,
    prompt_tokens: PyReadonlyArray1<'py, i64>,
    output_tokens: PyReadonlyArray1<'py, i64>,
    cost: PyCostModel,
    engine: &Bound<'py, PyAny>,
    max_output_tokens: u64,
    max_requests: usize,
) -> PyResult<f64> {
    let one = 1_i64.into_pyobject(py)?.into_any();
    let cfg = sim_config(
        py,
        &one,
        "round_robin",
        &cost,
        engine,
        0,
        max_output_tokens,
        None,
        false,
    )?;
    let cols = Columns::new(arrival_time, prompt_tokens, output_tokens);
    let mut interrupted = None;
    let res = py.detach(|| {
        let mut stop = signal_check(&mut interrupted);
        sim::measure_capacity_until(cols.view(), &cfg, max_requests, &mut stop)
    });
    match (res.py(py)?, interrupted) {
        (_, Some(e)) => Err(e),
        (Some(rate), None) => Ok(rate),
        (None, None) => Err(PyRuntimeError::new_err("the simulation stopped unasked")),
    }
}

/// A run's `stop` hook: at most every `SIGNAL_CHECK_INTERVAL` of wall time it takes the GIL
/// and runs the interpreter's signal handlers (Ctrl-C raises `KeyboardInterrupt` there); a
/// raised error is kept in `interrupted` and stops the run. Between checks it only reads the
/// clock, every `sim::STOP_CHECK_EVENTS` events.
fn signal_check(interrupted: &mut Option<PyErr>) -> impl FnMut() -> bool + '_ {
    let mut last = Instant::now();
    move || {
        if last.elapsed() < SIGNAL_CHECK_INTERVAL {
            return false;
        }
        last = Instant::now();
        match Python::attach(|py| py.check_signals()) {
            Ok(()) => false,
            Err(e) => {
                *interrupted = Some(e);
                true
            }
        }
    }
}
