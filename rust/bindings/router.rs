//! Python bindings of the routers: `Router` and `router_names`.
//!
//! Arguments are checked here with the reference's rules (ints, not bools, in [min, 2**40])
//! before the core sees them; core errors become `halffull.errors` exceptions in one place
//! ([`router_err`]), with the offending request id object, field or index as attributes.

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::sched::extract_id;
use super::{obj, py_error, unknown_name};
use crate::router::{
    policy_names, ReplicaLoad, ReplicaSnapshot, ReplicaSpec, RouteRequest, Router, RouterConfig,
    RouterError, MAX_COUNT,
};
use crate::sched::RequestId;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRouter>()?;
    m.add_function(wrap_pyfunction!(router_names, m)?)?;
    Ok(())
}

/// The names of every router policy, in registry order.
#[pyfunction]
fn router_names() -> Vec<&'static str> {
    policy_names()
}

/// The one conversion point from router errors to Python exceptions. `id` is the request id
/// object the caller passed, attached as `request_id` to id errors.
fn router_err(py: Python<'_>, e: RouterError, id: Option<&Bound<'_, PyAny>>) -> PyErr {
    let msg = e.to_string();
    let rid = || id.map(|o| o.clone().unbind()).unwrap_or_else(|| py.None());
    match e {
        RouterError::UnknownPolicy { name, valid } => {
            unknown_name(py, &msg, "policy", &name, &valid)
        }
        RouterError::Config { field, .. } => {
            py_error(py, "ConfigError", &msg, &[("field", obj(py, field))])
        }
        RouterError::InvalidArgument { field, value, .. } => py_error(
            py,
            "InvalidArgumentError",
            &msg,
            &[("field", obj(py, field)), ("value", obj(py, value))],
        ),
        RouterError::ReplicaOutOfRange {
            index,
            num_replicas,
        } => py_error(
            py,
            "InvalidArgumentError",
            &msg,
            &[
                ("field", obj(py, "index")),
                ("value", obj(py, index)),
                ("num_replicas", obj(py, num_replicas)),
            ],
        ),
        RouterError::DuplicateRequest { .. } => {
            py_error(py, "DuplicateRequestError", &msg, &[("request_id", rid())])
        }
        RouterError::UnknownRequest { .. } => {
            py_error(py, "UnknownRequestError", &msg, &[("request_id", rid())])
        }
        RouterError::Invariant { .. } => py_error(py, "InvariantError", &msg, &[]),
    }
}

fn bad(
    py: Python<'_>,
    class: &str,
    field: &str,
    value: &Bound<'_, PyAny>,
    message: String,
) -> PyErr {
    py_error(
        py,
        class,
        &message,
        &[("field", obj(py, field)), ("value", value.clone().unbind())],
    )
}

fn type_name(ob: &Bound<'_, PyAny>) -> String {
    ob.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// An int (Python or numpy, not bool) in `[min, 2**40]`; `class` is the exception to raise.
fn count_as(
    py: Python<'_>,
    class: &str,
    field: &str,
    ob: &Bound<'_, PyAny>,
    min: u64,
) -> PyResult<u64> {
    let is_int = ob.is_exact_instance_of::<PyInt>()
        || (!ob.is_instance_of::<PyBool>()
            && !ob.is_instance_of::<PyFloat>()
            && (ob.is_instance_of::<PyInt>() || ob.hasattr("__index__").unwrap_or(false)));
    if !is_int {
        let repr = ob.repr().map(|r| r.to_string()).unwrap_or_default();
        return Err(bad(
            py,
            class,
            field,
            ob,
            format!("{field} must be an int, got {} {repr}", type_name(ob)),
        ));
    }
    match ob.extract::<i64>() {
        Ok(v) if v >= 0 && (v as u64) >= min && (v as u64) <= MAX_COUNT => Ok(v as u64),
        _ => {
            let repr = ob.repr().map(|r| r.to_string()).unwrap_or_default();
            Err(bad(
                py,
                class,
                field,
                ob,
                format!("{field} must be in [{min}, 2**40], got {repr}"),
            ))
        }
    }
}

fn count(py: Python<'_>, field: &str, ob: &Bound<'_, PyAny>, min: u64) -> PyResult<u64> {
    count_as(py, "InvalidArgumentError", field, ob, min)
}

fn opt_count(
    py: Python<'_>,
    field: &str,
    ob: Option<&Bound<'_, PyAny>>,
    min: u64,
) -> PyResult<Option<u64>> {
    match ob {
        Some(o) if !o.is_none() => count(py, field, o, min).map(Some),
        _ => Ok(None),
    }
}

/// A replica index: an int in `[0, num_replicas)`.
fn index_arg(py: Python<'_>, ob: &Bound<'_, PyAny>, num_replicas: usize) -> PyResult<usize> {
    let out_of_range = |shown: String| {
        py_error(
            py,
            "InvalidArgumentError",
            &format!(
                "replica index {shown} is out of range: the router has {num_replicas} replicas"
            ),
            &[
                ("field", obj(py, "index")),
                ("value", ob.clone().unbind()),
                ("num_replicas", obj(py, num_replicas)),
            ],
        )
    };
    if ob.is_instance_of::<PyBool>()
        || !ob.is_instance_of::<PyInt>() && !ob.hasattr("__index__").unwrap_or(false)
    {
        return Err(bad(
            py,
            "InvalidArgumentError",
            "index",
            ob,
            format!("index must be an int, got {}", type_name(ob)),
        ));
    }
    match ob.extract::<i64>() {
        Ok(v) if v >= 0 && (v as u64) < num_replicas as u64 => Ok(v as usize),
        _ => Err(out_of_range(
            ob.repr().map(|r| r.to_string()).unwrap_or_default(),
        )),
    }
}

/// An int, or a sequence of `n` ints (one per replica); `None` gives `default` everywhere.
fn per_replica(
    py: Python<'_>,
    field: &str,
    ob: Option<&Bound<'_, PyAny>>,
    n: usize,
    default: u64,
) -> PyResult<Vec<u64>> {
    let Some(ob) = ob.filter(|o| !o.is_none()) else {
        return Ok(vec![default; n]);
    };
    if ob.is_instance_of::<PyString>() || !ob.hasattr("__len__").unwrap_or(false) {
        return Ok(vec![count_as(py, "ConfigError", field, ob, 1)?; n]);
    }
    let values: Vec<u64> = ob
        .try_iter()?
        .map(|item| count_as(py, "ConfigError", field, &item?, 1))
        .collect::<PyResult<_>>()?;
    if values.len() != n {
        return Err(bad(
            py,
            "ConfigError",
            field,
            ob,
            format!(
                "{field} has {} entries; expected one per replica ({n})",
                values.len()
            ),
        ));
    }
    Ok(values)
}

fn load_dict<'py>(py: Python<'py>, load: &ReplicaLoad) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("waiting", load.waiting)?;
    d.set_item("running", load.running)?;
    d.set_item("queued_prefill_tokens", load.queued_prefill_tokens)?;
    d.set_item("remaining_decode_tokens", load.remaining_decode_tokens)?;
    d.set_item("used_blocks", load.used_blocks)?;
    d.set_item("free_blocks", load.free_blocks())?;
    d.set_item("num_gpu_blocks", load.num_gpu_blocks)?;
    d.set_item("block_size", load.block_size)?;
    d.set_item("max_num_batched_tokens", load.max_num_batched_tokens)?;
    d.set_item("outstanding_requests", load.outstanding_requests())?;
    d.set_item("outstanding_tokens", load.outstanding_tokens())?;
    Ok(d)
}

/// A cluster load balancer: picks the replica for each request with one of the policies in
/// `router_names()` and keeps each replica's load from its own bookkeeping (`route`,
/// `on_progress`, `on_finish`, `on_abort`) and from engine snapshots (`update_replica`).
///
/// Capacity arguments take one int for every replica or a sequence of one per replica.
/// Errors leave the router unchanged.
#[pyclass(module = "halffull._core", name = "Router")]
pub struct PyRouter {
    core: Router<RequestId>,
}

#[pymethods]
impl PyRouter {
    #[new]
    #[pyo3(signature = (policy, num_replicas, *, seed=None, num_gpu_blocks=None, block_size=None, max_num_batched_tokens=None, beta=None, prior_input_tokens=None, prior_output_tokens=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        policy: &Bound<'_, PyAny>,
        num_replicas: &Bound<'_, PyAny>,
        seed: Option<&Bound<'_, PyAny>>,
        num_gpu_blocks: Option<&Bound<'_, PyAny>>,
        block_size: Option<&Bound<'_, PyAny>>,
        max_num_batched_tokens: Option<&Bound<'_, PyAny>>,
        beta: Option<&Bound<'_, PyAny>>,
        prior_input_tokens: Option<&Bound<'_, PyAny>>,
        prior_output_tokens: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let Some(policy) = policy
            .cast::<PyString>()
            .ok()
            .and_then(|s| s.to_str().ok().map(str::to_string))
        else {
            let valid = PyTuple::new(py, policy_names())?.into_any().unbind();
            return Err(py_error(
                py,
                "ConfigError",
                &format!(
                    "policy must be a str naming a router; valid: {}",
                    policy_names().join(", ")
                ),
                &[
                    ("field", obj(py, "policy")),
                    ("value", policy.clone().unbind()),
                    ("valid", valid),
                ],
            ));
        };
        if num_replicas.is_instance_of::<PyBool>() || !num_replicas.is_instance_of::<PyInt>() {
            return Err(bad(
                py,
                "ConfigError",
                "num_replicas",
                num_replicas,
                format!(
                    "num_replicas must be an int, got {}",
                    type_name(num_replicas)
                ),
            ));
        }
        let n = match num_replicas.extract::<i64>() {
            Ok(v) if v >= 0 => usize::try_from(v).unwrap_or(usize::MAX),
            _ => {
                return Err(bad(
                    py,
                    "ConfigError",
                    "num_replicas",
                    num_replicas,
                    format!(
                        "num_replicas must be in [1, {}], got {num_replicas}",
                        crate::router::MAX_REPLICAS
                    ),
                ));
            }
        };
        let seed = match seed.filter(|s| !s.is_none()) {
            None => 0,
            Some(seed) => match seed.extract::<u64>() {
                Ok(s) if !seed.is_instance_of::<PyBool>() && seed.is_instance_of::<PyInt>() => s,
                _ => {
                    return Err(bad(
                        py,
                        "ConfigError",
                        "seed",
                        seed,
                        format!("seed must be an int in [0, 2**64), got {}", seed.repr()?),
                    ));
                }
            },
        };
        let beta = match beta.filter(|b| !b.is_none()) {
            None => None,
            Some(b)
                if !b.is_instance_of::<PyBool>()
                    && (b.is_instance_of::<PyFloat>() || b.is_instance_of::<PyInt>()) =>
            {
                Some(b.extract::<f64>().map_err(|_| {
                    bad(
                        py,
                        "ConfigError",
                        "beta",
                        b,
                        "beta must be a finite number".into(),
                    )
                })?)
            }
            Some(b) => {
                return Err(bad(
                    py,
                    "ConfigError",
                    "beta",
                    b,
                    format!("beta must be a number, got {}", type_name(b)),
                ));
            }
        };
        let mut config = RouterConfig::new(&policy, 0);
        // Check the policy name and replica count before per-replica lists (clearer errors).
        if let Err(e) = crate::router::make_policy(&policy, seed) {
            return Err(router_err(py, e, None));
        }
        if n == 0 || n > crate::router::MAX_REPLICAS {
            return Err(bad(
                py,
                "ConfigError",
                "num_replicas",
                num_replicas,
                format!(
                    "num_replicas must be in [1, {}], got {n}",
                    crate::router::MAX_REPLICAS
                ),
            ));
        }
        let d = ReplicaSpec::default();
        let blocks = per_replica(py, "num_gpu_blocks", num_gpu_blocks, n, d.num_gpu_blocks)?;
        let sizes = per_replica(py, "block_size", block_size, n, d.block_size)?;
        let budgets = per_replica(
            py,
            "max_num_batched_tokens",
            max_num_batched_tokens,
            n,
            d.max_num_batched_tokens,
        )?;
        config.seed = seed;
        config.replicas = (0..n)
            .map(|i| ReplicaSpec {
                num_gpu_blocks: blocks[i],
                block_size: sizes[i],
                max_num_batched_tokens: budgets[i],
            })
            .collect();
        config.beta = beta;
        if let Some(ob) = prior_input_tokens.filter(|o| !o.is_none()) {
            config.prior_input_tokens = count_as(py, "ConfigError", "prior_input_tokens", ob, 1)?;
        }
        if let Some(ob) = prior_output_tokens.filter(|o| !o.is_none()) {
            config.prior_output_tokens = count_as(py, "ConfigError", "prior_output_tokens", ob, 1)?;
        }
        let core = Router::new(config).map_err(|e| router_err(py, e, None))?;
        Ok(PyRouter { core })
    }

    /// Pick the replica for a new request, record it there as waiting, and return the
    /// replica's index. Raises `DuplicateRequestError` if `request_id` is live.
    #[pyo3(signature = (request_id, prompt_tokens, max_output_tokens=None, predicted_output_tokens=None))]
    fn route(
        &mut self,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        prompt_tokens: &Bound<'_, PyAny>,
        max_output_tokens: Option<&Bound<'_, PyAny>>,
        predicted_output_tokens: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let id = extract_id(py, request_id)?;
        let request = RouteRequest {
            prompt_tokens: count(py, "prompt_tokens", prompt_tokens, 1)?,
            max_output_tokens: opt_count(py, "max_output_tokens", max_output_tokens, 1)?,
            predicted_output_tokens: opt_count(
                py,
                "predicted_output_tokens",
                predicted_output_tokens,
                0,
            )?,
        };
        self.core
            .route(id, request)
            .map_err(|e| router_err(py, e, Some(request_id)))
    }

    /// `route` for many requests at once (same results as calling it in order); returns an
    /// int64 array of replica indices. Everything is checked first: on error nothing is routed.
    #[pyo3(signature = (request_ids, prompt_tokens, max_output_tokens=None, predicted_output_tokens=None))]
    fn route_many<'py>(
        &mut self,
        py: Python<'py>,
        request_ids: &Bound<'py, PyAny>,
        prompt_tokens: &Bound<'py, PyAny>,
        max_output_tokens: Option<&Bound<'py, PyAny>>,
        predicted_output_tokens: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let ids: Vec<Bound<'py, PyAny>> = request_ids.try_iter()?.collect::<PyResult<_>>()?;
        let column =
            |field: &str, ob: Option<&Bound<'py, PyAny>>, min: u64| -> PyResult<Option<Vec<u64>>> {
                let Some(ob) = ob.filter(|o| !o.is_none()) else {
                    return Ok(None);
                };
                let values: Vec<u64> = ob
                    .try_iter()?
                    .map(|item| count(py, field, &item?, min))
                    .collect::<PyResult<_>>()?;
                if values.len() != ids.len() {
                    return Err(bad(
                        py,
                        "InvalidArgumentError",
                        field,
                        ob,
                        format!(
                            "{field} has {} entries but request_ids has {}",
                            values.len(),
                            ids.len()
                        ),
                    ));
                }
                Ok(Some(values))
            };
        let prompts = column("prompt_tokens", Some(prompt_tokens), 1)?.unwrap_or_default();
        let caps = column("max_output_tokens", max_output_tokens, 1)?;
        let predictions = column("predicted_output_tokens", predicted_output_tokens, 0)?;
        let mut requests = Vec::with_capacity(ids.len());
        for (i, ob) in ids.iter().enumerate() {
            let request = RouteRequest {
                prompt_tokens: prompts.get(i).copied().unwrap_or(0),
                max_output_tokens: caps.as_ref().and_then(|c| c.get(i).copied()),
                predicted_output_tokens: predictions.as_ref().and_then(|p| p.get(i).copied()),
            };
            requests.push((extract_id(py, ob)?, request));
        }
        match self.core.route_many(requests) {
            Ok(chosen) => Ok(PyArray1::from_vec(
                py,
                chosen.into_iter().map(|i| i as i64).collect(),
            )),
            Err(e @ RouterError::DuplicateRequest { .. }) => {
                let RouterError::DuplicateRequest { id } = &e else {
                    return Err(router_err(py, e, None));
                };
                let culprit = ids
                    .iter()
                    .find(|ob| {
                        extract_id(py, ob)
                            .map(|k| k.to_string() == *id)
                            .unwrap_or(false)
                    })
                    .cloned();
                Err(router_err(py, e, culprit.as_ref()))
            }
            Err(e) => Err(router_err(py, e, None)),
        }
    }

    /// The request has started (prefill done) and generated `output_tokens` tokens so far
    /// (cumulative; never decreasing; at most its `max_output_tokens`).
    fn on_progress(
        &mut self,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        output_tokens: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = extract_id(py, request_id)?;
        let out = count(py, "output_tokens", output_tokens, 0)?;
        self.core
            .on_progress(&id, out)
            .map_err(|e| router_err(py, e, Some(request_id)))
    }

    /// The request finished with `output_tokens` generated tokens: its load leaves its
    /// replica and its lengths feed SAL's β and the default decode estimate.
    fn on_finish(
        &mut self,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        output_tokens: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = extract_id(py, request_id)?;
        let out = count(py, "output_tokens", output_tokens, 0)?;
        self.core
            .on_finish(&id, out)
            .map_err(|e| router_err(py, e, Some(request_id)))
    }

    /// The request ended early (cancelled, failed): its load leaves its replica; β does not
    /// learn from it.
    fn on_abort(&mut self, py: Python<'_>, request_id: &Bound<'_, PyAny>) -> PyResult<()> {
        let id = extract_id(py, request_id)?;
        self.core
            .on_abort(&id)
            .map_err(|e| router_err(py, e, Some(request_id)))
    }

    /// Overwrite replica `index`'s load with an engine's report; omitted fields keep their
    /// value. Later bookkeeping applies on top of it (never below zero).
    #[pyo3(signature = (index, *, waiting=None, running=None, queued_prefill_tokens=None, remaining_decode_tokens=None, free_blocks=None))]
    #[allow(clippy::too_many_arguments)]
    fn update_replica(
        &mut self,
        py: Python<'_>,
        index: &Bound<'_, PyAny>,
        waiting: Option<&Bound<'_, PyAny>>,
        running: Option<&Bound<'_, PyAny>>,
        queued_prefill_tokens: Option<&Bound<'_, PyAny>>,
        remaining_decode_tokens: Option<&Bound<'_, PyAny>>,
        free_blocks: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let i = index_arg(py, index, self.core.num_replicas())?;
        let snapshot = ReplicaSnapshot {
            waiting: opt_count(py, "waiting", waiting, 0)?,
            running: opt_count(py, "running", running, 0)?,
            queued_prefill_tokens: opt_count(
                py,
                "queued_prefill_tokens",
                queued_prefill_tokens,
                0,
            )?,
            remaining_decode_tokens: opt_count(
                py,
                "remaining_decode_tokens",
                remaining_decode_tokens,
                0,
            )?,
            free_blocks: opt_count(py, "free_blocks", free_blocks, 0)?,
        };
        self.core
            .update_replica(i, snapshot)
            .map_err(|e| router_err(py, e, None))
    }

    /// Replica `index`'s load as the router sees it (a fresh dict).
    fn replica<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let i = index_arg(py, index, self.core.num_replicas())?;
        let load = self.core.replica(i).map_err(|e| router_err(py, e, None))?;
        load_dict(py, load)
    }

    /// Every replica's load, in index order.
    fn replica_loads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let dicts = self
            .core
            .replicas()
            .iter()
            .map(|l| load_dict(py, l))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, dicts)
    }

    /// The replica a live request was routed to.
    fn replica_of(&self, py: Python<'_>, request_id: &Bound<'_, PyAny>) -> PyResult<usize> {
        let id = extract_id(py, request_id)?;
        self.core
            .replica_of(&id)
            .map_err(|e| router_err(py, e, Some(request_id)))
    }

    /// Raise `InvariantError` if a replica's counters disagree with its live requests
    /// (replicas that got a snapshot are exempt).
    fn check_invariants(&self, py: Python<'_>) -> PyResult<()> {
        self.core
            .check_invariants()
            .map_err(|e| router_err(py, e, None))
    }

    fn __len__(&self) -> usize {
        self.core.num_live()
    }

    fn __contains__(&self, py: Python<'_>, request_id: &Bound<'_, PyAny>) -> bool {
        extract_id(py, request_id)
            .map(|id| self.core.contains(&id))
            .unwrap_or(false)
    }

    #[getter]
    fn policy(&self) -> &'static str {
        self.core.policy_name()
    }

    #[getter]
    fn num_replicas(&self) -> usize {
        self.core.num_replicas()
    }

    #[getter]
    fn seed(&self) -> u64 {
        self.core.config().seed
    }

    /// SAL's β now: the fixed value, or `(Σ in + Σ out) / Σ out` over finished requests, or
    /// the prior's `(prior_in + prior_out) / prior_out`.
    #[getter]
    fn beta(&self) -> f64 {
        self.core.beta()
    }

    /// Mean output length of finished requests, rounded half up (the prior before any).
    #[getter]
    fn mean_output_tokens(&self) -> u64 {
        self.core.mean_output_tokens()
    }

    #[getter]
    fn num_finished(&self) -> u64 {
        self.core.num_finished()
    }

    fn __repr__(&self) -> String {
        format!(
            "Router(policy='{}', num_replicas={}, live={})",
            self.core.policy_name(),
            self.core.num_replicas(),
            self.core.num_live()
        )
    }
}
