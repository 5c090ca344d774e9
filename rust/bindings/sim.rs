//! Python bindings of the simulator: `CostModel`, `simulate`, `measure_capacity`,
//! `sim_preset_names`, `sim_preset`. The trace goes in as numpy columns, the results come
//! back as a dict of numpy columns; the GIL is released while the simulation runs.

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use numpy::{Element, PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::config::{config_from_dict, pairs, PySchedulerConfig};
use super::convert::{flag, items, name, type_name, value};
use super::error::IntoPyResult;
use crate::config::SchedulerConfig;
use crate::error::{Error, Value};
use crate::limits::{self, Blame, MAX_COUNT};
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

/// A preset by name (a str in `sim_preset_names()`; `field`: the argument).
fn preset_by_name(py: Python<'_>, field: &'static str, ob: &Bound<'_, PyAny>) -> PyResult<Preset> {
    let name = name(py, Blame::Config, field, ob)?;
    Preset::by_name(&name)
        .map_err(|e| match e {
            Error::UnknownName { name, valid, .. } => Error::UnknownName { field, name, valid },
            other => other,
        })
        .py(py)
}

/// A block size: an int in `[1, 2**40]`.
fn block_size(py: Python<'_>, ob: &Bound<'_, PyAny>) -> PyResult<u64> {
    limits::config_count("block_size", &value(ob)).py(py)
}

/// A cost parameter: a number (not a bool); the cost model checks its range.
fn parameter(py: Python<'_>, field: &'static str, ob: &Bound<'_, PyAny>) -> PyResult<f64> {
    limits::number(Blame::Config, field, &value(ob)).py(py)
}

fn opt_parameter(
    py: Python<'_>,
    field: &'static str,
    ob: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<f64>> {
    ob.filter(|o| !o.is_none())
        .map(|o| parameter(py, field, o))
        .transpose()
}

/// A preset's numbers: model shape, GPU, tensor parallelism, derived KV capacity.
#[pyfunction]
#[pyo3(signature = (name, block_size=None), text_signature = "(name, block_size=16)")]
fn sim_preset<'py>(
    py: Python<'py>,
    name: &Bound<'py, PyAny>,
    block_size: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let p = preset_by_name(py, "name", name)?;
    let block_size = match block_size.filter(|b| !b.is_none()) {
        Some(b) => self::block_size(py, b)?,
        None => 16,
    };
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

/// The parameter names of each kind of cost model, in `params()` order.
const ROOFLINE_PARAMS: [&str; 12] = [
    "overhead_s",
    "params",
    "num_layers",
    "q_dim",
    "weight_bytes",
    "kv_bytes_per_token",
    "peak_flops",
    "mem_bw",
    "eff_compute",
    "eff_memory",
    "host_bw",
    "block_size",
];
const LINEAR_PARAMS: [&str; 5] = ["c0", "c1", "c2", "c3", "swap_s_per_block"];

/// A step cost model: `CostModel.preset("llama-3-8b/h100")` (roofline) or
/// `CostModel.linear(c0, c1, c2, c3)`. `step_time(...)` prices one step exactly as the
/// simulator does. Immutable; equal models compare and hash equal; pickles and copies
/// (`multiprocessing`, Ray) by its parameters.
#[pyclass(
    name = "CostModel",
    module = "halffull._core",
    frozen,
    eq,
    hash,
    from_py_object
)]
#[derive(Clone, PartialEq)]
pub struct PyCostModel {
    inner: CostModel,
}

impl Hash for PyCostModel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for x in self.values() {
            (x + 0.0).to_bits().hash(state);
        }
    }
}

impl PyCostModel {
    /// The parameters in [`ROOFLINE_PARAMS`] or [`LINEAR_PARAMS`] order.
    fn values(&self) -> Vec<f64> {
        match self.inner {
            CostModel::Roofline(r) => vec![
                r.overhead_s,
                r.params,
                r.num_layers,
                r.q_dim,
                r.weight_bytes,
                r.kv_bytes_per_token,
                r.peak_flops,
                r.mem_bw,
                r.eff_compute,
                r.eff_memory,
                r.host_bw,
                r.block_size,
            ],
            CostModel::Linear(l) => vec![l.c0, l.c1, l.c2, l.c3, l.swap_s_per_block],
        }
    }

    fn names(&self) -> &'static [&'static str] {
        match self.inner {
            CostModel::Roofline(_) => &ROOFLINE_PARAMS,
            CostModel::Linear(_) => &LINEAR_PARAMS,
        }
    }
}

/// One column of `step_time`: every item through `check`, naming its index on error.
fn step_column<T>(
    py: Python<'_>,
    field: &'static str,
    ob: &Bound<'_, PyAny>,
    what: &str,
    check: impl Fn(&Value) -> crate::error::Result<T>,
) -> PyResult<Vec<T>> {
    items(field, ob, what)?
        .iter()
        .enumerate()
        .map(|(i, item)| check(&value(item)).map_err(|e| e.at(i)).py(py))
        .collect()
}

#[pymethods]
impl PyCostModel {
    /// The roofline model of a preset; efficiencies and overhead may be overridden.
    #[staticmethod]
    #[pyo3(signature = (name, *, block_size=None, overhead_s=None, eff_compute=None, eff_memory=None, host_bw=None),
           text_signature = "(name, *, block_size=16, overhead_s=None, eff_compute=None, eff_memory=None, host_bw=None)")]
    fn preset(
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        block_size: Option<&Bound<'_, PyAny>>,
        overhead_s: Option<&Bound<'_, PyAny>>,
        eff_compute: Option<&Bound<'_, PyAny>>,
        eff_memory: Option<&Bound<'_, PyAny>>,
        host_bw: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let p = preset_by_name(py, "name", name)?;
        let block_size = match block_size.filter(|b| !b.is_none()) {
            Some(b) => self::block_size(py, b)?,
            None => 16,
        };
        let mut r = p.roofline(block_size);
        if let Some(v) = opt_parameter(py, "overhead_s", overhead_s)? {
            r.overhead_s = v;
        }
        if let Some(v) = opt_parameter(py, "eff_compute", eff_compute)? {
            r.eff_compute = v;
        }
        if let Some(v) = opt_parameter(py, "eff_memory", eff_memory)? {
            r.eff_memory = v;
        }
        if let Some(v) = opt_parameter(py, "host_bw", host_bw)? {
            r.host_bw = v;
        }
        let inner = CostModel::Roofline(r);
        inner.validate().py(py)?;
        Ok(PyCostModel { inner })
    }

    /// `c0 + c1*prefill_tokens + c2*decode_seqs + c3*kv_tokens (+ swap_s_per_block*blocks)`.
    #[staticmethod]
    #[pyo3(signature = (c0, c1, c2, c3, swap_s_per_block=None),
           text_signature = "(c0, c1, c2, c3, swap_s_per_block=0.0)")]
    fn linear(
        py: Python<'_>,
        c0: &Bound<'_, PyAny>,
        c1: &Bound<'_, PyAny>,
        c2: &Bound<'_, PyAny>,
        c3: &Bound<'_, PyAny>,
        swap_s_per_block: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let inner = CostModel::Linear(Linear {
            c0: parameter(py, "c0", c0)?,
            c1: parameter(py, "c1", c1)?,
            c2: parameter(py, "c2", c2)?,
            c3: parameter(py, "c3", c3)?,
            swap_s_per_block: opt_parameter(py, "swap_s_per_block", swap_s_per_block)?
                .unwrap_or(0.0),
        });
        inner.validate().py(py)?;
        Ok(PyCostModel { inner })
    }

    /// Rebuild a pickled model from `kind` and its `params()` values in order (checked as
    /// the constructors check them); not public API.
    #[staticmethod]
    fn _from_params(
        py: Python<'_>,
        kind: &Bound<'_, PyAny>,
        values: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let kind = name(py, Blame::Config, "kind", kind)?;
        let v = step_column(py, "params", values, "numbers", |v| {
            limits::number(Blame::Config, "params", v)
        })?;
        let inner = match (kind.as_str(), v.as_slice()) {
            (
                "roofline",
                &[overhead_s, params, num_layers, q_dim, weight_bytes, kv_bytes_per_token, peak_flops, mem_bw, eff_compute, eff_memory, host_bw, block_size],
            ) => CostModel::Roofline(sim::Roofline {
                overhead_s,
                params,
                num_layers,
                q_dim,
                weight_bytes,
                kv_bytes_per_token,
                peak_flops,
                mem_bw,
                eff_compute,
                eff_memory,
                host_bw,
                block_size,
            }),
            ("linear", &[c0, c1, c2, c3, swap_s_per_block]) => CostModel::Linear(Linear {
                c0,
                c1,
                c2,
                c3,
                swap_s_per_block,
            }),
            _ => {
                return Err(Error::config(
                    "params",
                    format!(
                        "a {kind:?} cost model cannot be built from {} parameters",
                        v.len()
                    ),
                ))
                .py(py)
            }
        };
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
        for (k, v) in self.names().iter().zip(self.values()) {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// Seconds one step takes: per scheduled request its new tokens, cached tokens and
    /// whether it is a prefill (a `StepPlan`'s arrays, or any iterables of ints and bools),
    /// plus blocks swapped in or out.
    #[pyo3(signature = (num_new_tokens, num_computed_tokens, is_prefill, swap_blocks=None),
           text_signature = "($self, num_new_tokens, num_computed_tokens, is_prefill, swap_blocks=0)")]
    fn step_time(
        &self,
        py: Python<'_>,
        num_new_tokens: &Bound<'_, PyAny>,
        num_computed_tokens: &Bound<'_, PyAny>,
        is_prefill: &Bound<'_, PyAny>,
        swap_blocks: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<f64> {
        let new = step_column(py, "num_new_tokens", num_new_tokens, "ints", |v| {
            limits::count("num_new_tokens", v, 0)
        })?;
        let computed = step_column(
            py,
            "num_computed_tokens",
            num_computed_tokens,
            "ints",
            |v| limits::count("num_computed_tokens", v, 0),
        )?;
        let prefill = step_column(py, "is_prefill", is_prefill, "bools", |v| {
            limits::flag(Blame::Argument, "is_prefill", v)
        })?;
        let swap_blocks = match swap_blocks.filter(|b| !b.is_none()) {
            Some(b) => limits::count("swap_blocks", &value(b), 0).py(py)?,
            None => 0,
        };
        if new.len() != computed.len() || new.len() != prefill.len() {
            return Err(Error::invalid(
                "num_new_tokens",
                "num_new_tokens, num_computed_tokens and is_prefill differ in length",
            ))
            .py(py);
        }
        let mut shape = StepShape::default();
        for ((&n, &c), &p) in new.iter().zip(&computed).zip(&prefill) {
            shape.add(n, c, p);
        }
        shape.swap_blocks = swap_blocks;
        Ok(self.inner.step_time(&shape))
    }

    /// Pickles (and copies) as `CostModel._from_params(kind, parameters)`.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let me = slf.get();
        let rebuild = slf.get_type().getattr("_from_params")?;
        let args = (me.kind(), PyTuple::new(py, me.values())?);
        Ok((rebuild, args.into_pyobject(py)?))
    }

    fn __copy__(slf: &Bound<'_, Self>) -> Py<Self> {
        slf.clone().unbind()
    }

    fn __deepcopy__(slf: &Bound<'_, Self>, _memo: &Bound<'_, PyAny>) -> Py<Self> {
        slf.clone().unbind()
    }

    fn __repr__(&self) -> String {
        format!("CostModel({:?})", self.inner)
    }
}

/// A cost model argument: a `CostModel`.
fn cost_model(py: Python<'_>, ob: &Bound<'_, PyAny>) -> PyResult<PyCostModel> {
    match ob.cast::<PyCostModel>() {
        Ok(c) => Ok(c.get().clone()),
        Err(_) => Err(Error::Config {
            field: "cost",
            value: Some(value(ob)),
            message: format!("cost must be a CostModel, got {}", type_name(ob)),
        })
        .py(py),
    }
}

/// A trace column: a one-dimensional numpy array of `T` (float64 or int64).
fn column<'py, T: Element>(
    py: Python<'py>,
    field: &'static str,
    ob: &Bound<'py, PyAny>,
) -> PyResult<PyReadonlyArray1<'py, T>> {
    ob.extract::<PyReadonlyArray1<'py, T>>().or_else(|_| {
        Err(Error::InvalidArgument {
            field,
            value: None,
            index: None,
            message: format!(
                "{field} must be a one-dimensional numpy array of {}, got {}",
                match std::any::type_name::<T>() {
                    "f64" => "float64",
                    "u64" => "uint64",
                    _ => "int64",
                },
                type_name(ob)
            ),
        })
        .py(py)
    })
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
    preset: &Bound<'_, PyAny>,
    cost: Option<&Bound<'_, PyAny>>,
    settings: Option<&Bound<'_, PyDict>>,
) -> PyResult<(PySchedulerConfig, PyCostModel)> {
    let p = preset_by_name(py, "preset", preset)?;
    let cost = cost
        .filter(|c| !c.is_none())
        .map(|c| cost_model(py, c))
        .transpose()?;
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

/// A numpy column copied into a Vec, allocated fallibly (`OutOfMemory` naming the column).
fn copy_column<T: Element + Copy>(
    field: &'static str,
    a: &PyReadonlyArray1<'_, T>,
) -> crate::error::Result<Vec<T>> {
    let view = a.as_array();
    let mut v = Vec::new();
    v.try_reserve_exact(view.len()).map_err(|_| {
        Error::out_of_memory(
            field,
            "a copy of the trace column",
            view.len() as u64,
            std::mem::size_of::<T>() as u64,
        )
    })?;
    v.extend(view.iter().copied());
    Ok(v)
}

impl Columns {
    fn new(
        py: Python<'_>,
        arrival: PyReadonlyArray1<'_, f64>,
        prompt: PyReadonlyArray1<'_, i64>,
        output: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<Self> {
        Ok(Columns {
            arrival: copy_column("arrival_time", &arrival).py(py)?,
            prompt: copy_column("prompt_tokens", &prompt).py(py)?,
            output: copy_column("output_tokens", &output).py(py)?,
            predicted: None,
            block_ids: None,
        })
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

/// The scalar arguments of `simulate` and `measure_capacity`, as Python gave them.
struct SimArgs<'a, 'py> {
    replicas: &'a Bound<'py, PyAny>,
    router: &'a Bound<'py, PyAny>,
    cost: &'a Bound<'py, PyAny>,
    engine: &'a Bound<'py, PyAny>,
    seed: Option<&'a Bound<'py, PyAny>>,
    max_output_tokens: Option<&'a Bound<'py, PyAny>>,
    snapshot_interval: Option<&'a Bound<'py, PyAny>>,
    record_steps: Option<&'a Bound<'py, PyAny>>,
    sal_beta: Option<&'a Bound<'py, PyAny>>,
    router_exact_overlap: Option<&'a Bound<'py, PyAny>>,
}

fn given<'a, 'py>(ob: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    ob.filter(|o| !o.is_none())
}

/// A run's configuration, every argument checked by the core's rules (`ConfigError` naming
/// it); the core's `SimConfig::validate` checks the ranges once more before the run.
fn sim_config(py: Python<'_>, a: &SimArgs<'_, '_>) -> PyResult<SimConfig> {
    let replicas = limits::replicas("replicas", &value(a.replicas)).py(py)?;
    let router = name(py, Blame::Config, "router", a.router)?;
    let cost = cost_model(py, a.cost)?;
    let mut cfg = SimConfig::new(replicas, &router, engine_config(py, a.engine)?, cost.inner);
    if let Some(seed) = given(a.seed) {
        cfg.seed = limits::seed(&value(seed)).py(py)?;
    }
    if let Some(m) = given(a.max_output_tokens) {
        cfg.max_output_tokens =
            limits::count_in(Blame::Config, "max_output_tokens", &value(m), 1, MAX_COUNT).py(py)?;
    }
    if let Some(dt) = given(a.snapshot_interval) {
        cfg.snapshot_interval =
            Some(limits::number(Blame::Config, "snapshot_interval", &value(dt)).py(py)?);
    }
    if let Some(r) = given(a.record_steps) {
        cfg.record_steps = flag(py, Blame::Config, "record_steps", r)?;
    }
    if let Some(b) = given(a.sal_beta) {
        cfg.sal_beta = Some(limits::number(Blame::Config, "sal_beta", &value(b)).py(py)?);
    }
    if let Some(r) = given(a.router_exact_overlap) {
        cfg.router_exact_overlap = flag(py, Blame::Config, "router_exact_overlap", r)?;
    }
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
#[pyo3(
    signature = (arrival_time, prompt_tokens, output_tokens, *, replicas, router, cost, engine, seed=None, max_output_tokens=None, snapshot_interval=None, record_steps=None, predicted_output_tokens=None, sal_beta=None, hash_ids=None, hash_id_offsets=None, hash_block_tokens=None, router_exact_overlap=None),
    text_signature = "(arrival_time, prompt_tokens, output_tokens, *, replicas, router, cost, engine, seed=0, max_output_tokens=2048, snapshot_interval=None, record_steps=True, predicted_output_tokens=None, sal_beta=None, hash_ids=None, hash_id_offsets=None, hash_block_tokens=512, router_exact_overlap=False)"
)]
#[allow(clippy::too_many_arguments)]
fn simulate<'py>(
    py: Python<'py>,
    arrival_time: &Bound<'py, PyAny>,
    prompt_tokens: &Bound<'py, PyAny>,
    output_tokens: &Bound<'py, PyAny>,
    replicas: &Bound<'py, PyAny>,
    router: &Bound<'py, PyAny>,
    cost: &Bound<'py, PyAny>,
    engine: &Bound<'py, PyAny>,
    seed: Option<&Bound<'py, PyAny>>,
    max_output_tokens: Option<&Bound<'py, PyAny>>,
    snapshot_interval: Option<&Bound<'py, PyAny>>,
    record_steps: Option<&Bound<'py, PyAny>>,
    predicted_output_tokens: Option<&Bound<'py, PyAny>>,
    sal_beta: Option<&Bound<'py, PyAny>>,
    hash_ids: Option<&Bound<'py, PyAny>>,
    hash_id_offsets: Option<&Bound<'py, PyAny>>,
    hash_block_tokens: Option<&Bound<'py, PyAny>>,
    router_exact_overlap: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg = sim_config(
        py,
        &SimArgs {
            replicas,
            router,
            cost,
            engine,
            seed,
            max_output_tokens,
            snapshot_interval,
            record_steps,
            sal_beta,
            router_exact_overlap,
        },
    )?;
    let mut cols = Columns::new(
        py,
        column(py, "arrival_time", arrival_time)?,
        column(py, "prompt_tokens", prompt_tokens)?,
        column(py, "output_tokens", output_tokens)?,
    )?;
    if let Some(p) = given(predicted_output_tokens) {
        let p = column::<i64>(py, "predicted_output_tokens", p)?;
        cols.predicted = Some(copy_column("predicted_output_tokens", &p).py(py)?);
    }
    let hash_block_tokens = match given(hash_block_tokens) {
        Some(b) => limits::config_count("hash_block_tokens", &value(b)).py(py)?,
        None => 512,
    };
    cols.block_ids = match (given(hash_ids), given(hash_id_offsets)) {
        (Some(ids), Some(offsets)) => Some((
            copy_column("hash_ids", &column::<u64>(py, "hash_ids", ids)?).py(py)?,
            copy_column(
                "hash_id_offsets",
                &column::<u64>(py, "hash_id_offsets", offsets)?,
            )
            .py(py)?,
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
#[pyo3(
    signature = (arrival_time, prompt_tokens, output_tokens, *, cost, engine, max_output_tokens=None, max_requests=None),
    text_signature = "(arrival_time, prompt_tokens, output_tokens, *, cost, engine, max_output_tokens=2048, max_requests=2000)"
)]
#[allow(clippy::too_many_arguments)]
fn measure_capacity<'py>(
    py: Python<'py>,
    arrival_time: &Bound<'py, PyAny>,
    prompt_tokens: &Bound<'py, PyAny>,
    output_tokens: &Bound<'py, PyAny>,
    cost: &Bound<'py, PyAny>,
    engine: &Bound<'py, PyAny>,
    max_output_tokens: Option<&Bound<'py, PyAny>>,
    max_requests: Option<&Bound<'py, PyAny>>,
) -> PyResult<f64> {
    let one = 1_i64.into_pyobject(py)?.into_any();
    let router = "round_robin".into_pyobject(py)?.into_any();
    let record_steps = false.into_pyobject(py)?.to_owned().into_any();
    let cfg = sim_config(
        py,
        &SimArgs {
            replicas: &one,
            router: &router,
            cost,
            engine,
            seed: None,
            max_output_tokens,
            snapshot_interval: None,
            record_steps: Some(&record_steps),
            sal_beta: None,
            router_exact_overlap: None,
        },
    )?;
    let max_requests = match given(max_requests) {
        Some(m) => limits::count_in(Blame::Config, "max_requests", &value(m), 1, MAX_COUNT)
            .py(py)? as usize,
        None => 2000,
    };
    let cols = Columns::new(
        py,
        column(py, "arrival_time", arrival_time)?,
        column(py, "prompt_tokens", prompt_tokens)?,
        column(py, "output_tokens", output_tokens)?,
    )?;
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
