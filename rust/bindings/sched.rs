//! Python bindings of the engine scheduler: `Scheduler`, `StepPlan`, `policy_names`.

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};

use super::config::PySchedulerConfig;
use super::convert::{self, count, opt_count, opt_value, request_id as to_id, time};
use super::error::{id_to_py, IntoPyResult};
use crate::error::Error;
use crate::hash::{hash_token_blocks, BlockHash};
use crate::limits;
use crate::sched::{BlockId, NewRequest, Scheduler, StepPlan};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyScheduler>()?;
    m.add_class::<PyStepPlan>()?;
    m.add_function(wrap_pyfunction!(policy_names, m)?)?;
    m.add_function(wrap_pyfunction!(py_block_hashes, m)?)?;
    Ok(())
}

/// The chained prefix-cache hashes of the full blocks of `token_ids` (xxh3-128, see
/// `halffull.Scheduler.add_request`): what `prompt_token_ids=` computes, for passing the
/// same hashes to a router and a scheduler.
#[pyfunction(name = "block_hashes")]
fn py_block_hashes(
    py: Python<'_>,
    token_ids: &Bound<'_, PyAny>,
    block_size: &Bound<'_, PyAny>,
) -> PyResult<Vec<BlockHash>> {
    let bs = count(py, "block_size", block_size, 1)?;
    let ids = convert::token_ids(token_ids).py(py)?;
    hash_token_blocks(&ids, bs).py(py)
}

/// The names of every engine policy, in registry order.
#[pyfunction]
fn policy_names() -> Vec<&'static str> {
    crate::sched::policy_names()
}

/// The Rust engine scheduler. `Scheduler(config)`; each step call `schedule(now)` for a
/// `StepPlan`, run it, then `update(plan, finished=[ids stopped on EOS], now=...)`.
#[pyclass(module = "halffull._core", name = "Scheduler")]
pub struct PyScheduler {
    core: Scheduler,
    config: Py<PyAny>,
    /// The caller's id object per slot (kept so plans hand back the very same objects).
    ids: Vec<Option<Py<PyAny>>>,
}

impl PyScheduler {
    /// The prompt's length and block hashes from `add_request`'s arguments.
    fn prompt<'py>(
        &self,
        prompt_tokens: Option<&Bound<'py, PyAny>>,
        token_ids: Option<&Bound<'py, PyAny>>,
        block_hashes: Option<&Bound<'py, PyAny>>,
    ) -> crate::error::Result<(u64, Vec<BlockHash>)> {
        fn given<'a, 'py>(o: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
            o.filter(|o| !o.is_none())
        }
        let (prompt_tokens, token_ids, block_hashes) =
            (given(prompt_tokens), given(token_ids), given(block_hashes));
        let declared = prompt_tokens
            .as_ref()
            .map(|o| limits::count("prompt_tokens", &convert::value(o), 1))
            .transpose()?;
        match (token_ids, block_hashes) {
            (Some(_), Some(_)) => Err(Error::invalid(
                "block_hashes",
                "give prompt_token_ids or block_hashes, not both",
            )),
            (Some(ids), None) => {
                let ids = convert::token_ids(ids)?;
                let n = ids.len() as u64;
                if let Some(p) = declared.filter(|&p| p != n) {
                    return Err(Error::InvalidArgument {
                        field: "prompt_tokens",
                        value: Some(crate::error::Value::from(p)),
                        index: None,
                        message: format!("prompt_tokens={p} but prompt_token_ids has {n} tokens"),
                    });
                }
                let n = limits::count("prompt_token_ids", &crate::error::Value::from(n), 1)
                    .map_err(|_| Error::invalid("prompt_token_ids", "prompt_token_ids is empty"))?;
                Ok((n, hash_token_blocks(&ids, self.core.config().block_size)?))
            }
            (None, hashes) => {
                let Some(p) = declared else {
                    return Err(Error::invalid(
                        "prompt_tokens",
                        "prompt_tokens is required (or give prompt_token_ids)",
                    ));
                };
                let hashes = hashes.map(convert::block_hashes).transpose()?;
                Ok((p, hashes.unwrap_or_default()))
            }
        }
    }

    fn id_of(&self, py: Python<'_>, slot: u32) -> PyResult<Py<PyAny>> {
        match self.ids.get(slot as usize) {
            Some(Some(ob)) => Ok(ob.clone_ref(py)),
            _ => match self.core.request_id(slot) {
                Some(id) => id_to_py(py, id),
                None => Ok(py.None()),
            },
        }
    }

    fn mapping_array<'py>(
        py: Python<'py>,
        rows: &[(BlockId, BlockId)],
    ) -> PyResult<Bound<'py, PyAny>> {
        let flat: Vec<i64> = rows
            .iter()
            .flat_map(|&(a, b)| [i64::from(a), i64::from(b)])
            .collect();
        Ok(PyArray1::from_vec(py, flat)
            .reshape([rows.len(), 2])?
            .into_any())
    }

    fn build_plan(&self, py: Python<'_>, plan: StepPlan) -> PyResult<PyStepPlan> {
        let n = plan.scheduled.len();
        let mut ids = Vec::with_capacity(n);
        let mut new_tokens = Vec::with_capacity(n);
        let mut computed = Vec::with_capacity(n);
        let mut prefill = Vec::with_capacity(n);
        let mut samples = Vec::with_capacity(n);
        let mut cached = Vec::with_capacity(n);
        for s in &plan.scheduled {
            cached.push(s.num_cached_tokens as i64);
            ids.push(self.id_of(py, s.slot)?);
            new_tokens.push(s.num_new_tokens as i64);
            computed.push(s.num_computed_tokens as i64);
            prefill.push(s.is_prefill);
            samples.push(s.samples);
        }
        let num_batched_tokens: i64 = new_tokens.iter().sum();
        let admitted = PyList::new(
            py,
            plan.admitted
                .iter()
                .map(|&s| self.id_of(py, s))
                .collect::<PyResult<Vec<_>>>()?,
        )?;
        let preempted = PyList::empty(py);
        for &(slot, mode) in &plan.preempted {
            preempted.append(PyTuple::new(
                py,
                [
                    self.id_of(py, slot)?,
                    mode.as_str().into_pyobject(py)?.into_any().unbind(),
                ],
            )?)?;
        }
        let swaps = |list: &[(u32, Vec<(BlockId, BlockId)>)]| -> PyResult<Py<PyList>> {
            let out = PyList::empty(py);
            for (slot, rows) in list {
                out.append(PyTuple::new(
                    py,
                    [
                        self.id_of(py, *slot)?.into_bound(py),
                        Self::mapping_array(py, rows)?,
                    ],
                )?)?;
            }
            Ok(out.unbind())
        };
        let new_blocks = PyList::empty(py);
        for (slot, blocks) in &plan.new_blocks {
            new_blocks.append(PyTuple::new(
                py,
                [
                    self.id_of(py, *slot)?.into_bound(py),
                    PyList::new(py, blocks)?.into_any(),
                ],
            )?)?;
        }
        let finished = PyList::new(
            py,
            plan.finished
                .iter()
                .map(|id| id_to_py(py, id))
                .collect::<PyResult<Vec<_>>>()?,
        )?;
        Ok(PyStepPlan {
            step: plan.step,
            scheduler_id: plan.scheduler_id,
            num_batched_tokens,
            req_ids: PyArray1::from_vec(py, ids).into_any().unbind(),
            num_new_tokens: PyArray1::from_vec(py, new_tokens).into_any().unbind(),
            num_computed_tokens: PyArray1::from_vec(py, computed).into_any().unbind(),
            is_prefill: PyArray1::from_vec(py, prefill).into_any().unbind(),
            samples: PyArray1::from_vec(py, samples).into_any().unbind(),
            num_cached_tokens: PyArray1::from_vec(py, cached).into_any().unbind(),
            admitted: admitted.unbind(),
            preempted: preempted.unbind(),
            swapped_out: swaps(&plan.swapped_out)?,
            swapped_in: swaps(&plan.swapped_in)?,
            new_blocks: new_blocks.unbind(),
            finished: finished.unbind(),
        })
    }
}

#[pymethods]
impl PyScheduler {
    #[new]
    fn new(py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<Self> {
        let Ok(cfg) = config.cast::<PySchedulerConfig>() else {
            let kind = config.get_type().name()?;
            return Err(Error::config(
                "config",
                format!("expected a SchedulerConfig, got {kind}"),
            ))
            .py(py);
        };
        let core = Scheduler::new(cfg.get().inner.clone()).py(py)?;
        Ok(PyScheduler {
            core,
            config: config.clone().unbind(),
            ids: Vec::new(),
        })
    }

    /// Queue a request. Raises (changing nothing) on a duplicate live id, a bad value, or a
    /// request that can never fit in the GPU cache (`RequestTooLargeError`).
    ///
    /// For prefix caching, give the prompt's content as `prompt_token_ids` (then
    /// `prompt_tokens` may be omitted) or as `block_hashes`: the chained hashes of its
    /// first full blocks (ints below 2**128, or bytes such as vLLM's digests).
    #[pyo3(signature = (request_id, prompt_tokens=None, max_output_tokens=None, arrival_time=None, *, priority=None, predicted_output_tokens=None, true_output_tokens=None, prompt_token_ids=None, block_hashes=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_request(
        &mut self,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        prompt_tokens: Option<&Bound<'_, PyAny>>,
        max_output_tokens: Option<&Bound<'_, PyAny>>,
        arrival_time: Option<&Bound<'_, PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
        predicted_output_tokens: Option<&Bound<'_, PyAny>>,
        true_output_tokens: Option<&Bound<'_, PyAny>>,
        prompt_token_ids: Option<&Bound<'_, PyAny>>,
        block_hashes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let id = to_id(request_id).py(py)?;
        let (prompt_tokens, hashes) = self
            .prompt(prompt_tokens, prompt_token_ids, block_hashes)
            .py(py)?;
        let Some(max_output_tokens) = max_output_tokens.filter(|o| !o.is_none()) else {
            return Err(Error::invalid(
                "max_output_tokens",
                "max_output_tokens is required",
            ))
            .py(py);
        };
        let new = NewRequest {
            id,
            prompt_tokens,
            max_output_tokens: count(py, "max_output_tokens", max_output_tokens, 1)?,
            arrival_time: time(py, "arrival_time", arrival_time)?,
            priority: opt_value(priority)
                .map(|v| limits::priority(&v))
                .transpose()
                .py(py)?
                .unwrap_or(0),
            predicted_output_tokens: opt_count(
                py,
                "predicted_output_tokens",
                predicted_output_tokens,
                0,
            )?,
            true_output_tokens: opt_count(py, "true_output_tokens", true_output_tokens, 1)?,
            block_hashes: hashes,
        };
        let slot = self.core.add_request(new).py(py)? as usize;
        if self.ids.len() <= slot {
            self.ids.resize_with(slot + 1, || None);
        }
        self.ids[slot] = Some(request_id.clone().unbind());
        Ok(())
    }

    /// The prefix cache's counters since construction: `requests`, `queries` and `hits`
    /// (tokens, counted once per admission), the same three for requests admitted again
    /// after a preemption (`preempted_*`), and `evictions` (cached blocks reused).
    fn prefix_cache_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let st = self.core.prefix_cache_stats();
        let d = PyDict::new(py);
        d.set_item("requests", st.requests)?;
        d.set_item("queries", st.queries)?;
        d.set_item("hits", st.hits)?;
        d.set_item("preempted_requests", st.preempted_requests)?;
        d.set_item("preempted_queries", st.preempted_queries)?;
        d.set_item("preempted_hits", st.preempted_hits)?;
        d.set_item("evictions", st.evictions)?;
        Ok(d)
    }

    /// Prefix caching: name the request's next full blocks, from block `start` (the number of
    /// hashes it holds now), with the caller's hashes — vLLM's `Request.block_hashes` as
    /// generated tokens fill blocks — so generated blocks are found by content. Without it a
    /// generated block gets a hash of the request's own. No-op with caching off.
    #[pyo3(signature = (request_id, block_hashes, *, start))]
    fn extend_block_hashes(
        &mut self,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        block_hashes: &Bound<'_, PyAny>,
        start: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = to_id(request_id).py(py)?;
        let start = count(py, "start", start, 0)?;
        let hashes = convert::block_hashes(block_hashes).py(py)?;
        self.core.extend_block_hashes(&id, start, &hashes).py(py)
    }

    /// How many leading blocks of `block_hashes` the prefix cache holds now.
    fn prefix_hit_blocks(
        &self,
        py: Python<'_>,
        block_hashes: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let hashes = convert::block_hashes(block_hashes).py(py)?;
        Ok(self.core.prefix_hit_blocks(&hashes))
    }

    /// Forget every cached block hash, only when no GPU block is held (vLLM's
    /// `reset_prefix_cache`): returns whether it did.
    fn reset_prefix_cache(&mut self) -> bool {
        self.core.reset_prefix_cache()
    }

    /// End a live request now (waiting, running or swapped); its blocks are freed at once.
    fn abort(&mut self, py: Python<'_>, request_id: &Bound<'_, PyAny>) -> PyResult<()> {
        let id = to_id(request_id).py(py)?;
        self.core.abort(&id).py(py)
    }

    /// Decide this step; `now` (seconds) must not go backwards. Call `update` before the
    /// next `schedule`.
    #[pyo3(signature = (now=None))]
    fn schedule(&mut self, py: Python<'_>, now: Option<&Bound<'_, PyAny>>) -> PyResult<PyStepPlan> {
        let now = time(py, "now", now)?;
        let plan = self.core.schedule(now).py(py)?;
        self.build_plan(py, plan)
    }

    /// Apply what the step produced: every scheduled request whose prefill is complete after
    /// the step produced one token; `finished` names those that stopped early (EOS).
    /// Returns the ids that finished. On error nothing changes.
    #[pyo3(signature = (plan, finished=None, now=None))]
    fn update(
        &mut self,
        py: Python<'_>,
        plan: &Bound<'_, PyAny>,
        finished: Option<&Bound<'_, PyAny>>,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyList>> {
        let Ok(plan) = plan.cast::<PyStepPlan>() else {
            let kind = plan.get_type().name()?;
            return Err(Error::StalePlan {
                message: format!(
                    "update() takes the StepPlan returned by this scheduler's schedule(), got {kind}"
                ),
                pending_step: None,
            })
            .py(py);
        };
        let (step, sid) = {
            let p = plan.borrow();
            (p.step, p.scheduler_id)
        };
        let mut early = Vec::new();
        if let Some(f) = finished.filter(|f| !f.is_none()) {
            if f.is_instance_of::<PyString>() || f.is_instance_of::<PyInt>() {
                return Err(Error::invalid(
                    "finished",
                    "finished must be a list of request ids, not a single id",
                ))
                .py(py);
            }
            for item in f.try_iter()? {
                early.push(to_id(&item?).py(py)?);
            }
        }
        let now = time(py, "now", now)?;
        let ended = self.core.update(step, sid, &early, now).py(py)?;
        Ok(PyList::new(
            py,
            ended
                .iter()
                .map(|id| id_to_py(py, id))
                .collect::<PyResult<Vec<_>>>()?,
        )?
        .unbind())
    }

    /// Raise `InvariantError` naming the request or block if the state is inconsistent.
    fn check_invariants(&self, py: Python<'_>) -> PyResult<()> {
        self.core.check_invariants().py(py)
    }

    /// Status, token counts and blocks of a live request.
    fn request_info<'py>(
        &self,
        py: Python<'py>,
        request_id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let id = to_id(request_id).py(py)?;
        let r = self.core.get(&id).py(py)?;
        let d = PyDict::new(py);
        d.set_item("status", r.status.as_str())?;
        d.set_item("num_computed_tokens", r.num_computed_tokens)?;
        d.set_item("num_output_tokens", r.num_output_tokens)?;
        d.set_item("num_preemptions", r.num_preemptions)?;
        d.set_item("block_table", PyList::new(py, &r.block_table)?)?;
        d.set_item("num_cpu_blocks", r.cpu_blocks.len())?;
        Ok(d)
    }

    /// The GPU free queue, head (allocated next) to tail.
    fn free_gpu_block_ids(&self) -> Vec<u32> {
        self.core.free_gpu_block_ids()
    }

    fn has_unfinished_requests(&self) -> bool {
        self.core.num_live() > 0
    }

    fn __len__(&self) -> usize {
        self.core.num_live()
    }

    #[getter]
    fn config(&self, py: Python<'_>) -> Py<PyAny> {
        self.config.clone_ref(py)
    }
    #[getter]
    fn num_waiting(&self) -> usize {
        self.core.num_waiting()
    }
    #[getter]
    fn num_running(&self) -> usize {
        self.core.num_running()
    }
    #[getter]
    fn num_swapped(&self) -> usize {
        self.core.num_swapped()
    }
    #[getter]
    fn num_free_gpu_blocks(&self) -> usize {
        self.core.num_free_gpu_blocks()
    }
    #[getter]
    fn num_free_cpu_blocks(&self) -> usize {
        self.core.num_free_cpu_blocks()
    }
    #[getter]
    fn now(&self) -> f64 {
        self.core.now()
    }
    #[getter]
    fn num_steps(&self) -> u64 {
        self.core.num_steps()
    }
    #[getter]
    fn num_preemptions(&self) -> u64 {
        self.core.num_preemptions()
    }

    fn __repr__(&self) -> String {
        format!(
            "Scheduler(policy={:?}, waiting={}, running={}, swapped={}, free_gpu_blocks={}/{})",
            self.core.config().policy.to_string(),
            self.core.num_waiting(),
            self.core.num_running(),
            self.core.num_swapped(),
            self.core.num_free_gpu_blocks(),
            self.core.config().num_gpu_blocks
        )
    }
}

/// What one step runs: numpy arrays per scheduled request (`req_ids`, `num_new_tokens`,
/// `num_computed_tokens`, `is_prefill`, `samples`) and lists (`admitted`, `preempted`,
/// `swapped_out`, `swapped_in`, `new_blocks`, `finished`). See `halffull.reference.StepPlan`.
#[pyclass(module = "halffull._core", name = "StepPlan", frozen)]
pub struct PyStepPlan {
    #[pyo3(get)]
    step: u64,
    #[pyo3(get)]
    scheduler_id: u64,
    #[pyo3(get)]
    num_batched_tokens: i64,
    #[pyo3(get)]
    req_ids: Py<PyAny>,
    #[pyo3(get)]
    num_new_tokens: Py<PyAny>,
    #[pyo3(get)]
    num_computed_tokens: Py<PyAny>,
    #[pyo3(get)]
    is_prefill: Py<PyAny>,
    #[pyo3(get)]
    samples: Py<PyAny>,
    #[pyo3(get)]
    num_cached_tokens: Py<PyAny>,
    #[pyo3(get)]
    admitted: Py<PyList>,
    #[pyo3(get)]
    preempted: Py<PyList>,
    #[pyo3(get)]
    swapped_out: Py<PyList>,
    #[pyo3(get)]
    swapped_in: Py<PyList>,
    #[pyo3(get)]
    new_blocks: Py<PyList>,
    #[pyo3(get)]
    finished: Py<PyList>,
}

#[pymethods]
impl PyStepPlan {
    #[getter]
    fn num_scheduled(&self, py: Python<'_>) -> PyResult<usize> {
        self.req_ids.bind(py).len()
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.req_ids.bind(py).len()
    }

    /// Plain Python values, for comparing plans and logging.
    fn to_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let f = py
            .import("halffull.reference.scheduler")?
            .getattr("StepPlan")?
            .getattr("to_dict")?;
        f.call1((slf,))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "StepPlan(step={}, scheduled={}, tokens={}, admitted={}, preempted={}, swapped_in={}, finished={})",
            self.step,
            self.req_ids.bind(py).len()?,
            self.num_batched_tokens,
            self.admitted.bind(py).len(),
            self.preempted.bind(py).len(),
            self.swapped_in.bind(py).len(),
            self.finished.bind(py).len()
        ))
    }
}
