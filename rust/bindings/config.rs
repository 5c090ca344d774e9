//! `halffull.SchedulerConfig`: a frozen Python class around the core's
//! [`crate::config::SchedulerConfig`]. It is the one way a scheduler configuration enters
//! Rust: `Scheduler`, `simulate` and the engine take it (or, for `simulate`, the same
//! keyword arguments), and every value is checked by the core.

use std::hash::{Hash, Hasher};

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::IntoPyObjectExt;

use super::convert::value;
use super::error::IntoPyResult;
use crate::config::{FieldValue, SchedulerConfig, FIELDS};
use crate::error::Value;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySchedulerConfig>()
}

/// `(field, value)` pairs from a Python dict, for the core's constructors.
pub(crate) fn pairs(d: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, Value)>> {
    let Some(d) = d else {
        return Ok(Vec::new());
    };
    d.iter()
        .map(|(k, v)| Ok((k.extract::<String>()?, value(&v))))
        .collect()
}

fn as_refs(pairs: &[(String, Value)]) -> impl Iterator<Item = (&str, Value)> {
    pairs.iter().map(|(k, v)| (k.as_str(), v.clone()))
}

/// A core config from keyword arguments (`num_gpu_blocks` required, the rest defaulted).
pub(crate) fn config_from_dict(
    py: Python<'_>,
    d: Option<&Bound<'_, PyDict>>,
) -> PyResult<SchedulerConfig> {
    SchedulerConfig::from_values(as_refs(&pairs(d)?)).py(py)
}

fn field_to_py(py: Python<'_>, v: FieldValue) -> PyResult<Py<PyAny>> {
    match v {
        FieldValue::Int(n) => n.into_py_any(py),
        FieldValue::Float(x) => x.into_py_any(py),
        FieldValue::Name(s) => s.into_py_any(py),
        FieldValue::Bool(b) => b.into_py_any(py),
        FieldValue::None => Ok(py.None()),
    }
}

/// Capacity, limits and policy of one engine's scheduler; built by keyword (or by position
/// in field order), every value checked at construction (`ConfigError` naming the field).
///
/// - `num_gpu_blocks` KV blocks of `block_size` tokens each on the GPU; `num_cpu_blocks`
///   host blocks for swap (0: swap always falls back to recompute).
/// - `max_num_seqs` seats (running requests), `max_num_batched_tokens` tokens per step.
/// - `policy`: one of `halffull.POLICIES`; `preemption_mode`: `recompute` or `swap`.
/// - `watermark`: fraction of GPU blocks kept free when admitting new work, so running
///   requests can grow (ignored when nothing runs, so a lone request is always admissible).
///   `None` (the default) means the semantics' default: 0.01 in `halffull`, vLLM's 0.0 in
///   `vllm_v1`; the attribute reads the effective value, `to_dict()` the one given.
/// - `larry_alpha` (tokens/s) trades waiting time against memory demand in LARRY;
///   `larry_load` is LARRY's load signal L: `waiting` (number of waiting requests) or
///   `outstanding` (waiting + running + swapped).
/// - `sjf_aging` (tokens/s): SJF's priority of a request improves by this much per second
///   waited, so long requests are eventually served.
/// - `semantics`: `halffull` (today's model) or `vllm_v1` (vLLM 0.33's V1 scheduler: block 0
///   is the null block, so `num_gpu_blocks` - 1 are usable; blocks per chunk; no swap).
/// - `max_model_len`: a request finishes when prompt + outputs reaches it; a prompt with no
///   room for one output token under it is refused (`None`: no cap).
/// - `long_prefill_token_threshold`: if > 0, no request runs more than this many tokens in a
///   step (ignored in a step that starts with at most one live request).
/// - `reserve_full_prompt`: vLLM's `scheduler_reserve_full_isl`: admitting needs free blocks
///   for the whole sequence, not just its first chunk (`vllm_v1` only; ignored in
///   `halffull`, which allocates the whole sequence at admission).
/// - `enable_prefix_caching`: vLLM's automatic prefix caching (`vllm_v1` only): full blocks
///   stay findable by their hash after their request frees them, and an admitted request
///   starts from its longest cached prefix (give requests `prompt_token_ids` or
///   `block_hashes`).
/// - `larry_deadline` (s): `larry_tail`'s starvation bound: a request that has waited this
///   long is due; due requests go first, oldest first, and LARRY orders the rest.
/// - `larry_slack`: `larry_slack`'s bound: a waiting request is due once the tokens that left
///   the waiting queue since it joined reach `larry_slack` times the tokens waiting now.
///
/// Frozen: `replace(**changes)` makes a changed copy; equal configs hash equal.
#[pyclass(module = "halffull._core", name = "SchedulerConfig", frozen, eq, hash)]
#[derive(Clone, PartialEq)]
pub struct PySchedulerConfig {
    pub(crate) inner: SchedulerConfig,
}

impl Hash for PySchedulerConfig {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for field in FIELDS {
            match self.inner.get(field) {
                Some(FieldValue::Int(n)) => n.hash(state),
                Some(FieldValue::Float(x)) => (x + 0.0).to_bits().hash(state),
                Some(FieldValue::Name(s)) => s.hash(state),
                Some(FieldValue::Bool(b)) => b.hash(state),
                Some(FieldValue::None) | None => 0u8.hash(state),
            }
        }
    }
}

impl PySchedulerConfig {
    fn values(&self) -> impl Iterator<Item = (&'static str, FieldValue)> + '_ {
        FIELDS
            .iter()
            .filter_map(|f| self.inner.get(f).map(|v| (*f, v)))
    }
}

#[pymethods]
impl PySchedulerConfig {
    #[new]
    #[pyo3(signature = (*args, **kwargs))]
    fn new(
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        if args.len() > FIELDS.len() {
            return Err(PyTypeError::new_err(format!(
                "SchedulerConfig takes at most {} positional arguments ({} given)",
                FIELDS.len(),
                args.len()
            )));
        }
        let mut all: Vec<(String, Value)> = FIELDS
            .iter()
            .zip(args.iter())
            .map(|(f, v)| (f.to_string(), value(&v)))
            .collect();
        for (k, v) in pairs(kwargs)? {
            if all.iter().any(|(f, _)| *f == k) {
                return Err(PyTypeError::new_err(format!(
                    "SchedulerConfig got multiple values for argument {k:?}"
                )));
            }
            all.push((k, v));
        }
        let inner = SchedulerConfig::from_values(as_refs(&all)).py(py)?;
        Ok(PySchedulerConfig { inner })
    }

    /// A copy with the given fields changed (checked like the constructor's).
    #[pyo3(signature = (**changes))]
    fn replace(&self, py: Python<'_>, changes: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let inner = self.inner.with_values(as_refs(&pairs(changes)?)).py(py)?;
        Ok(PySchedulerConfig { inner })
    }

    /// Every field by name, in field order, as given (`watermark` and `max_model_len` may be
    /// `None`): `SchedulerConfig(**cfg.to_dict()) == cfg`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.values() {
            d.set_item(k, field_to_py(py, v)?)?;
        }
        Ok(d)
    }

    /// GPU blocks kept free when admitting: `floor(watermark * num_gpu_blocks)`.
    #[getter]
    fn watermark_blocks(&self) -> u64 {
        self.inner.watermark_blocks()
    }
    /// `usable_gpu_blocks * block_size`.
    #[getter]
    fn capacity_tokens(&self) -> u64 {
        self.inner.capacity_tokens()
    }

    #[getter]
    fn num_gpu_blocks(&self) -> u64 {
        self.inner.num_gpu_blocks
    }
    #[getter]
    fn block_size(&self) -> u64 {
        self.inner.block_size
    }
    #[getter]
    fn num_cpu_blocks(&self) -> u64 {
        self.inner.num_cpu_blocks
    }
    #[getter]
    fn max_num_seqs(&self) -> u64 {
        self.inner.max_num_seqs
    }
    #[getter]
    fn max_num_batched_tokens(&self) -> u64 {
        self.inner.max_num_batched_tokens
    }
    #[getter]
    fn policy(&self) -> &'static str {
        crate::config::Named::name(self.inner.policy)
    }
    #[getter]
    fn preemption_mode(&self) -> &'static str {
        crate::config::Named::name(self.inner.preemption_mode)
    }
    /// The effective watermark (the semantics' default when none was given).
    #[getter]
    fn watermark(&self) -> f64 {
        self.inner.watermark()
    }
    #[getter]
    fn larry_alpha(&self) -> f64 {
        self.inner.larry_alpha
    }
    #[getter]
    fn larry_load(&self) -> &'static str {
        crate::config::Named::name(self.inner.larry_load)
    }
    #[getter]
    fn sjf_aging(&self) -> f64 {
        self.inner.sjf_aging
    }
    #[getter]
    fn semantics(&self) -> &'static str {
        crate::config::Named::name(self.inner.semantics)
    }
    #[getter]
    fn max_model_len(&self) -> Option<u64> {
        self.inner.max_model_len
    }
    #[getter]
    fn long_prefill_token_threshold(&self) -> u64 {
        self.inner.long_prefill_token_threshold
    }
    #[getter]
    fn reserve_full_prompt(&self) -> bool {
        self.inner.reserve_full_prompt
    }
    #[getter]
    fn enable_prefix_caching(&self) -> bool {
        self.inner.enable_prefix_caching
    }
    #[getter]
    fn larry_deadline(&self) -> f64 {
        self.inner.larry_deadline
    }
    #[getter]
    fn larry_slack(&self) -> f64 {
        self.inner.larry_slack
    }
    /// Blocks a request can hold: `num_gpu_blocks`, or in `vllm_v1` one fewer (the null block).
    #[getter]
    fn usable_gpu_blocks(&self) -> u64 {
        self.inner.usable_gpu_blocks()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let mut parts = Vec::with_capacity(FIELDS.len());
        for (k, v) in self.values() {
            parts.push(format!("{k}={}", field_to_py(py, v)?.bind(py).repr()?));
        }
        Ok(format!("SchedulerConfig({})", parts.join(", ")))
    }

    /// Pickles (and copies) as the constructor called with every field by position.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let args = slf
            .get()
            .values()
            .map(|(_, v)| field_to_py(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        Ok((slf.get_type().into_any(), PyTuple::new(py, args)?))
    }

    fn __copy__(slf: &Bound<'_, Self>) -> Py<Self> {
        slf.clone().unbind()
    }

    fn __deepcopy__(slf: &Bound<'_, Self>, _memo: &Bound<'_, PyAny>) -> Py<Self> {
        slf.clone().unbind()
    }
}
