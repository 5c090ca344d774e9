//! Python bindings of the engine scheduler: `Scheduler`, `StepPlan`, `policy_names`.

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::config::PySchedulerConfig;
use super::convert::{self, count, items, opt_count, opt_value, request_id as to_id, time};
use super::error::{id_to_py, to_pyerr, IntoPyResult};
use crate::error::{Error, Result};
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
    let ids = convert::token_ids(token_ids)?;
    hash_token_blocks(&ids, bs).py(py)
}

/// The names of every engine policy, in registry order.
#[pyfunction]
fn policy_names() -> Vec<&'static str> {
    crate::sched::policy_names()
}

/// The Rust engine scheduler. `Scheduler(config)`; each step call `schedule(now)` for a
/// `StepPlan`, run it, then `update(plan, finished=[ids stopped on EOS], now=...)`.
///
/// Safe to share between threads: each call converts its arguments first, then holds the
/// scheduler only while Rust runs (no Python code, so no other thread can enter), then builds
/// its Python results. Calls are applied one at a time, in the order they take the
/// scheduler; a call re-entering it from a finalizer raises `BusyError`.
#[pyclass(module = "halffull._core", name = "Scheduler")]
pub struct PyScheduler {
    core: Scheduler,
    config: Py<PyAny>,
    /// The caller's id object per slot of a live request (so plans hand back the very same
    /// objects), released when the request finishes or is aborted.
    ids: Vec<Option<Py<PyAny>>>,
}

/// The caller's id objects of the requests a plan names, list by list in the plan's order,
/// taken while the scheduler is held (new references only: no Python code runs).
#[derive(Default)]
struct PlanIds {
    scheduled: Vec<Py<PyAny>>,
    admitted: Vec<Py<PyAny>>,
    preempted: Vec<Py<PyAny>>,
    swapped_out: Vec<Py<PyAny>>,
    swapped_in: Vec<Py<PyAny>>,
    new_blocks: Vec<Py<PyAny>>,
}

/// The scheduler for one call into the core: held only while Rust runs.
fn hold<'py>(slf: &Bound<'py, PyScheduler>) -> PyResult<PyRefMut<'py, PyScheduler>> {
    slf.try_borrow_mut()
        .map_err(|_| to_pyerr(slf.py(), Error::Busy { what: "Scheduler" }))
}

fn hold_ref<'py>(slf: &Bound<'py, PyScheduler>) -> PyResult<PyRef<'py, PyScheduler>> {
    slf.try_borrow()
        .map_err(|_| to_pyerr(slf.py(), Error::Busy { what: "Scheduler" }))
}

impl PyScheduler {
    /// The prompt's length and block hashes from `add_request`'s arguments.
    /// (Reads the caller's sequences, so it runs before the scheduler is held.)
    fn prompt<'py>(
        py: Python<'py>,
        block_size: u64,
        prompt_tokens: Option<&Bound<'py, PyAny>>,
        token_ids: Option<&Bound<'py, PyAny>>,
        block_hashes: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(u64, Vec<BlockHash>)> {
        fn given<'a, 'py>(o: Option<&'a Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
            o.filter(|o| !o.is_none())
        }
        let (prompt_tokens, token_ids, block_hashes) =
            (given(prompt_tokens), given(token_ids), given(block_hashes));
        let declared = prompt_tokens
            .as_ref()
            .map(|o| limits::count("prompt_tokens", &convert::value(o), 1))
            .transpose()
            .py(py)?;
        match (token_ids, block_hashes) {
            (Some(_), Some(_)) => Err(Error::invalid(
                "block_hashes",
                "give prompt_token_ids or block_hashes, not both",
            ))
            .py(py),
            (Some(ids), None) => {
                let ids = convert::token_ids(ids)?;
                let n = ids.len() as u64;
                if let Some(p) = declared.filter(|&p| p != n) {
                    return Err(Error::InvalidArgument {
                        field: "prompt_tokens",
                        value: Some(crate::error::Value::from(p)),
                        index: None,
                        message: format!("prompt_tokens={p} but prompt_token_ids has {n} tokens"),
                    })
                    .py(py);
                }
                let n = limits::count("prompt_token_ids", &crate::error::Value::from(n), 1)
                    .map_err(|_| Error::invalid("prompt_token_ids", "prompt_token_ids is empty"))
                    .py(py)?;
                Ok((n, hash_token_blocks(&ids, block_size).py(py)?))
            }
            (None, hashes) => {
                let Some(p) = declared else {
                    return Err(Error::invalid(
                        "prompt_tokens",
                        "prompt_tokens is required (or give prompt_token_ids)",
                    ))
                    .py(py);
                };
                let hashes = hashes.map(convert::block_hashes).transpose()?;
                Ok((p, hashes.unwrap_or_default()))
            }
        }
    }

    /// The id object of `slot` (the caller's, or a new one from the core's id); `None` for
    /// a free slot. Creates no container, so it may run while the scheduler is held.
    fn id_ob(&self, py: Python<'_>, slot: u32) -> PyResult<Py<PyAny>> {
        match self.ids.get(slot as usize) {
            Some(Some(ob)) => Ok(ob.clone_ref(py)),
            _ => match self.core.request_id(slot) {
                Some(id) => id_to_py(py, id),
                None => Ok(py.None()),
            },
        }
    }

    /// The id objects of every request `plan` names.
    fn plan_ids(&self, py: Python<'_>, plan: &StepPlan) -> PyResult<PlanIds> {
        let ids = |slots: &mut dyn Iterator<Item = u32>| -> PyResult<Vec<Py<PyAny>>> {
            slots.map(|slot| self.id_ob(py, slot)).collect()
        };
        Ok(PlanIds {
            scheduled: ids(&mut plan.scheduled.iter().map(|s| s.slot))?,
            admitted: ids(&mut plan.admitted.iter().copied())?,
            preempted: ids(&mut plan.preempted.iter().map(|&(s, _)| s))?,
            swapped_out: ids(&mut plan.swapped_out.iter().map(|(s, _)| *s))?,
            swapped_in: ids(&mut plan.swapped_in.iter().map(|(s, _)| *s))?,
            new_blocks: ids(&mut plan.new_blocks.iter().map(|(s, _)| *s))?,
        })
    }

    /// Keep the caller's id object of the request just added in `slot`; returns what the slot
    /// held (nothing, as slots are released when requests end) for the caller to drop.
    fn keep_id(&mut self, slot: u32, ob: Py<PyAny>) -> Option<Py<PyAny>> {
        let slot = slot as usize;
        if self.ids.len() <= slot {
            self.ids.resize_with(slot + 1, || None);
        }
        self.ids[slot].replace(ob)
    }

    /// Release the id objects of `slots` that no longer hold a live request; the caller drops
    /// them once the scheduler is no longer held (dropping may run a finalizer).
    fn release_ids(&mut self, slots: impl IntoIterator<Item = u32>) -> Vec<Py<PyAny>> {
        let mut released = Vec::new();
        for slot in slots {
            if self.core.request(slot).is_none() {
                if let Some(ob) = self.ids.get_mut(slot as usize).and_then(Option::take) {
                    released.push(ob);
                }
            }
        }
        released
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

    /// The Python plan, built once the scheduler is no longer held.
    fn build_plan(py: Python<'_>, plan: StepPlan, plan_ids: PlanIds) -> PyResult<PyStepPlan> {
        let n = plan.scheduled.len();
        let ids = plan_ids.scheduled;
        let mut slots = Vec::with_capacity(n);
        let mut new_tokens = Vec::with_capacity(n);
        let mut computed = Vec::with_capacity(n);
        let mut prefill = Vec::with_capacity(n);
        let mut samples = Vec::with_capacity(n);
        let mut cached = Vec::with_capacity(n);
        for s in &plan.scheduled {
            cached.push(s.num_cached_tokens as i64);
            slots.push(s.slot);
            new_tokens.push(s.num_new_tokens as i64);
            computed.push(s.num_computed_tokens as i64);
            prefill.push(s.is_prefill);
            samples.push(s.samples);
        }
        let num_batched_tokens: i64 = new_tokens.iter().sum();
        let admitted = PyList::new(py, plan_ids.admitted)?;
        let preempted = PyList::empty(py);
        for (id, &(_, mode)) in plan_ids.preempted.into_iter().zip(&plan.preempted) {
            preempted.append(PyTuple::new(
                py,
                [id, mode.as_str().into_pyobject(py)?.into_any().unbind()],
            )?)?;
        }
        let swaps = |ids: Vec<Py<PyAny>>,
                     list: &[(u32, Vec<(BlockId, BlockId)>)]|
         -> PyResult<Py<PyList>> {
            let out = PyList::empty(py);
            for (id, (_, rows)) in ids.into_iter().zip(list) {
                out.append(PyTuple::new(
                    py,
                    [id.into_bound(py), Self::mapping_array(py, rows)?],
                )?)?;
            }
            Ok(out.unbind())
        };
        let new_blocks = PyList::empty(py);
        for (id, (_, blocks)) in plan_ids.new_blocks.into_iter().zip(&plan.new_blocks) {
            new_blocks.append(PyTuple::new(
                py,
                [id.into_bound(py), PyList::new(py, blocks)?.into_any()],
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
            swapped_out: swaps(plan_ids.swapped_out, &plan.swapped_out)?,
            swapped_in: swaps(plan_ids.swapped_in, &plan.swapped_in)?,
            new_blocks: new_blocks.unbind(),
            finished: finished.unbind(),
            slots,
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
        slf: &Bound<'_, Self>,
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
        let block_size = hold_ref(slf)?.core.config().block_size;
        let (prompt_tokens, hashes) = Self::prompt(
            py,
            block_size,
            prompt_tokens,
            prompt_token_ids,
            block_hashes,
        )?;
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
        let id_ob = request_id.clone().unbind();
        let (result, old) = {
            let mut me = hold(slf)?;
            match me.core.add_request(new) {
                Ok(slot) => (Ok(()), me.keep_id(slot, id_ob)),
                Err(e) => (Err(e), Some(id_ob)),
            }
        };
        drop(old); // outside the hold: dropping may run a finalizer
        result.py(py)
    }

    /// The prefix cache's counters since construction: `requests`, `queries` and `hits`
    /// (tokens, counted once per admission), the same three for requests admitted again
    /// after a preemption (`preempted_*`), and `evictions` (cached blocks reused).
    fn prefix_cache_stats<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let st = hold_ref(slf)?.core.prefix_cache_stats();
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
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        block_hashes: &Bound<'_, PyAny>,
        start: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = to_id(request_id).py(py)?;
        let start = count(py, "start", start, 0)?;
        let hashes = convert::block_hashes(block_hashes)?;
        let result = hold(slf)?.core.extend_block_hashes(&id, start, &hashes);
        result.py(py)
    }

    /// How many leading blocks of `block_hashes` the prefix cache holds now.
    fn prefix_hit_blocks(
        slf: &Bound<'_, Self>,
        block_hashes: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let hashes = convert::block_hashes(block_hashes)?;
        Ok(hold_ref(slf)?.core.prefix_hit_blocks(&hashes))
    }

    /// Forget every cached block hash, only when no GPU block is held (vLLM's
    /// `reset_prefix_cache`): returns whether it did.
    fn reset_prefix_cache(slf: &Bound<'_, Self>) -> PyResult<bool> {
        Ok(hold(slf)?.core.reset_prefix_cache())
    }

    /// End a live request now (waiting, running or swapped); its blocks are freed at once.
    fn abort(slf: &Bound<'_, Self>, py: Python<'_>, request_id: &Bound<'_, PyAny>) -> PyResult<()> {
        let id = to_id(request_id).py(py)?;
        let (result, released) = {
            let mut me = hold(slf)?;
            let slot = me.core.slot_of(&id);
            let result = me.core.abort(&id);
            (result, me.release_ids(slot))
        };
        drop(released);
        result.py(py)
    }

    /// Decide this step; `now` (seconds) must not go backwards. Call `update` before the
    /// next `schedule`.
    #[pyo3(signature = (now=None))]
    fn schedule(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyStepPlan> {
        let now = time(py, "now", now)?;
        let planned: Result<(StepPlan, PyResult<PlanIds>)> = {
            let mut me = hold(slf)?;
            me.core.schedule(now).map(|plan| {
                let ids = me.plan_ids(py, &plan);
                (plan, ids)
            })
        };
        let (plan, ids) = planned.py(py)?;
        Self::build_plan(py, plan, ids?)
    }

    /// Apply what the step produced: every scheduled request whose prefill is complete after
    /// the step produced one token; `finished` names those that stopped early (EOS): any
    /// iterable of ids but a str, bytes or a mapping. Returns the ids that finished. On error
    /// nothing changes.
    #[pyo3(signature = (plan, finished=None, now=None))]
    fn update(
        slf: &Bound<'_, Self>,
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
        let plan = plan.get();
        let mut early = Vec::new();
        if let Some(f) = finished.filter(|f| !f.is_none()) {
            if f.is_instance_of::<PyString>() || f.is_instance_of::<PyInt>() {
                return Err(Error::invalid(
                    "finished",
                    "finished must be a list of request ids, not a single id",
                ))
                .py(py);
            }
            for (i, item) in items("finished", f, "request ids")?.iter().enumerate() {
                early.push(to_id(item).map_err(|e| e.at(i)).py(py)?);
            }
        }
        let now = time(py, "now", now)?;
        let (result, released) = {
            let mut me = hold(slf)?;
            let result = me.core.update(plan.step, plan.scheduler_id, &early, now);
            let released = match result {
                Ok(_) => me.release_ids(plan.slots.iter().copied()),
                Err(_) => Vec::new(),
            };
            (result, released)
        };
        drop(released);
        let ended = result.py(py)?;
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
    fn check_invariants(slf: &Bound<'_, Self>, py: Python<'_>) -> PyResult<()> {
        let result = hold_ref(slf)?.core.check_invariants();
        result.py(py)
    }

    /// Status, token counts and blocks of a live request.
    fn request_info<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
        request_id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let id = to_id(request_id).py(py)?;
        let info = hold_ref(slf)?.core.get(&id).map(|r| {
            (
                r.status.as_str(),
                r.num_computed_tokens,
                r.num_output_tokens,
                r.num_preemptions,
                r.block_table.clone(),
                r.cpu_blocks.len(),
            )
        });
        let (status, computed, output, preemptions, table, cpu) = info.py(py)?;
        let d = PyDict::new(py);
        d.set_item("status", status)?;
        d.set_item("num_computed_tokens", computed)?;
        d.set_item("num_output_tokens", output)?;
        d.set_item("num_preemptions", preemptions)?;
        d.set_item("block_table", PyList::new(py, &table)?)?;
        d.set_item("num_cpu_blocks", cpu)?;
        Ok(d)
    }

    /// The GPU free queue, head (allocated next) to tail.
    fn free_gpu_block_ids(slf: &Bound<'_, Self>) -> PyResult<Vec<u32>> {
        Ok(hold_ref(slf)?.core.free_gpu_block_ids())
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

    /// A scheduler does not pickle yet (its state is about to grow: prefix caching); the
    /// error says so rather than pickling something incomplete.
    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err(
            "a Scheduler cannot be pickled or copied yet; rebuild it from its config \
             (Scheduler(s.config)) and re-add the requests",
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> std::result::Result<(), PyTraverseError> {
        visit.call(&self.config)?;
        for ob in self.ids.iter().flatten() {
            visit.call(ob)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        drop(ids);
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
    /// The scheduled requests' slots (not shown to Python): `update` releases the id objects
    /// of those that ended.
    slots: Vec<u32>,
}

#[pymethods]
impl PyStepPlan {
    /// Rebuild a pickled `StepPlan` (`StepPlan.__reduce__`); not public API.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    fn _from_state(
        step: u64,
        scheduler_id: u64,
        num_batched_tokens: i64,
        req_ids: Py<PyAny>,
        num_new_tokens: Py<PyAny>,
        num_computed_tokens: Py<PyAny>,
        is_prefill: Py<PyAny>,
        samples: Py<PyAny>,
        num_cached_tokens: Py<PyAny>,
        admitted: Py<PyList>,
        preempted: Py<PyList>,
        swapped_out: Py<PyList>,
        swapped_in: Py<PyList>,
        new_blocks: Py<PyList>,
        finished: Py<PyList>,
        slots: Vec<u32>,
    ) -> PyStepPlan {
        PyStepPlan {
            step,
            scheduler_id,
            num_batched_tokens,
            req_ids,
            num_new_tokens,
            num_computed_tokens,
            is_prefill,
            samples,
            num_cached_tokens,
            admitted,
            preempted,
            swapped_out,
            swapped_in,
            new_blocks,
            finished,
            slots,
        }
    }

    #[getter]
    fn num_scheduled(&self, py: Python<'_>) -> PyResult<usize> {
        self.req_ids.bind(py).len()
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.req_ids.bind(py).len()
    }

    /// Pickles (and copies) with every field: a restored plan is equal field for field and,
    /// in the process that made it, `update` takes it as the original.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let rebuild = py.get_type::<Self>().getattr("_from_state")?;
        let args: Vec<Py<PyAny>> = vec![
            self.step.into_pyobject(py)?.into_any().unbind(),
            self.scheduler_id.into_pyobject(py)?.into_any().unbind(),
            self.num_batched_tokens
                .into_pyobject(py)?
                .into_any()
                .unbind(),
            self.req_ids.clone_ref(py),
            self.num_new_tokens.clone_ref(py),
            self.num_computed_tokens.clone_ref(py),
            self.is_prefill.clone_ref(py),
            self.samples.clone_ref(py),
            self.num_cached_tokens.clone_ref(py),
            self.admitted.clone_ref(py).into_any(),
            self.preempted.clone_ref(py).into_any(),
            self.swapped_out.clone_ref(py).into_any(),
            self.swapped_in.clone_ref(py).into_any(),
            self.new_blocks.clone_ref(py).into_any(),
            self.finished.clone_ref(py).into_any(),
            PyList::new(py, &self.slots)?.into_any().unbind(),
        ];
        Ok((rebuild, PyTuple::new(py, args)?))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> std::result::Result<(), PyTraverseError> {
        for ob in [
            &self.req_ids,
            &self.num_new_tokens,
            &self.num_computed_tokens,
            &self.is_prefill,
            &self.samples,
            &self.num_cached_tokens,
        ] {
            visit.call(ob)?;
        }
        for list in [
            &self.admitted,
            &self.preempted,
            &self.swapped_out,
            &self.swapped_in,
            &self.new_blocks,
            &self.finished,
        ] {
            visit.call(list)?;
        }
        Ok(())
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
