//! Python bindings of the routers: `Router` and `router_names`.
//!
//! Arguments become core values ([`super::convert`]) checked by the core's rules (ints, not
//! bools, in [min, 2**40]: [`crate::limits`]); core errors become `halffull.errors`
//! exceptions in [`super::error::to_pyerr`].

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::convert::{self, count, opt_count, opt_value, request_id as to_id, value};
use super::error::IntoPyResult;
use crate::error::{Error, Value};
use crate::hash::{hash_token_blocks, BlockHash};
use crate::id::RequestId;
use crate::limits::{self, Blame};
use crate::router::{
    bad_block_hash, policy_names, token_id, PolicyParams, ReplicaSnapshot, ReplicaSpec,
    RouteRequest, Router, RouterConfig,
};

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

fn replica_index(py: Python<'_>, ob: &Bound<'_, PyAny>, num_replicas: usize) -> PyResult<usize> {
    limits::replica_index(&value(ob), num_replicas).py(py)
}

/// An int, or a sequence of `n` ints (one per replica); `None` gives `default` everywhere.
fn per_replica(
    py: Python<'_>,
    field: &'static str,
    ob: Option<&Bound<'_, PyAny>>,
    n: usize,
    default: u64,
) -> PyResult<Vec<u64>> {
    let Some(ob) = ob.filter(|o| !o.is_none()) else {
        return Ok(vec![default; n]);
    };
    if ob.is_instance_of::<PyString>() || !ob.hasattr("__len__")? {
        return limits::config_count(field, &value(ob))
            .map(|v| vec![v; n])
            .py(py);
    }
    let values = ob
        .try_iter()?
        .map(|item| limits::config_count(field, &value(&item?)).py(py))
        .collect::<PyResult<Vec<u64>>>()?;
    if values.len() != n {
        let message = format!(
            "{field} has {} entries; expected one per replica ({n})",
            values.len()
        );
        return Err(Error::config(field, message)).py(py);
    }
    Ok(values)
}

/// A 1-d numpy `uint64` or `int64` array's values through `keep` (`None`: invalid, and
/// `bad` names it); `None` when `ob` is not such an array (then the generic conversion runs).
fn numpy_ints<T>(
    ob: &Bound<'_, PyAny>,
    keep: impl Fn(i128) -> Option<T>,
    bad: impl Fn(i128, usize) -> Error,
) -> Option<Result<Vec<T>, Error>> {
    let convert = |i: usize, x: i128| keep(x).ok_or_else(|| bad(x, i));
    if let Ok(a) = ob.cast::<PyArray1<u64>>() {
        let a = a.readonly();
        return Some(
            a.as_array()
                .iter()
                .enumerate()
                .map(|(i, &x)| convert(i, i128::from(x)))
                .collect(),
        );
    }
    if let Ok(a) = ob.cast::<PyArray1<i64>>() {
        let a = a.readonly();
        return Some(
            a.as_array()
                .iter()
                .enumerate()
                .map(|(i, &x)| convert(i, i128::from(x)))
                .collect(),
        );
    }
    None
}

/// Block hashes as the scheduler takes them ([`convert::block_hashes`]: ints in
/// `[0, 2**128)` or bytes), numpy integer arrays read in bulk.
fn block_hashes_arg(py: Python<'_>, ob: &Bound<'_, PyAny>) -> PyResult<Vec<BlockHash>> {
    let bulk = numpy_ints(
        ob,
        |x| u128::try_from(x).ok(),
        |x, i| bad_block_hash(Value::Int(x), i),
    );
    bulk.unwrap_or_else(|| convert::block_hashes(ob)).py(py)
}

/// Token ids as the scheduler takes them ([`convert::token_ids`]: ints in `[0, 2**32)`),
/// numpy integer arrays read in bulk.
fn token_ids_arg(py: Python<'_>, ob: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    let bulk = numpy_ints(
        ob,
        |x| u32::try_from(x).ok(),
        |x, i| match token_id(&Value::Int(x), i) {
            Err(e) => e,
            Ok(_) => Error::invalid("prompt_token_ids", "a token id must be an int"),
        },
    );
    bulk.unwrap_or_else(|| convert::token_ids(ob)).py(py)
}

/// Per-replica overlap counts: ints in `[0, 2**40]`.
fn overlap_counts(py: Python<'_>, ob: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    if ob.is_instance_of::<PyString>() || !ob.hasattr("__len__")? {
        let message = format!(
            "overlap_blocks must be a sequence of ints (one per replica), got {}",
            value(ob).kind()
        );
        return Err(Error::InvalidArgument {
            field: "overlap_blocks",
            value: Some(value(ob)),
            index: None,
            message,
        })
        .py(py);
    }
    ob.try_iter()?
        .enumerate()
        .map(|(i, x)| {
            limits::count("overlap_blocks", &value(&x?), 0)
                .map_err(|e| e.at(i))
                .py(py)
        })
        .collect()
}

fn not_both<T>(py: Python<'_>) -> PyResult<T> {
    Err(Error::invalid(
        "block_hashes",
        "give block_hashes or prompt_token_ids, not both",
    ))
    .py(py)
}

fn load_dict<'py>(
    py: Python<'py>,
    router: &Router<RequestId>,
    index: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let load = router.replica(index).py(py)?;
    let d = PyDict::new(py);
    d.set_item("waiting", load.waiting)?;
    d.set_item("running", load.running)?;
    d.set_item("queued_prefill_tokens", load.queued_prefill_tokens)?;
    d.set_item(
        "queued_prefill_uncached_tokens",
        load.queued_prefill_uncached_tokens,
    )?;
    d.set_item("remaining_decode_tokens", load.remaining_decode_tokens)?;
    d.set_item("used_blocks", load.used_blocks)?;
    d.set_item("free_blocks", load.free_blocks())?;
    d.set_item("num_gpu_blocks", load.num_gpu_blocks)?;
    d.set_item("block_size", load.block_size)?;
    d.set_item("max_num_batched_tokens", load.max_num_batched_tokens)?;
    d.set_item("outstanding_requests", load.outstanding_requests())?;
    d.set_item("outstanding_tokens", load.outstanding_tokens())?;
    d.set_item("record_blocks", router.record_blocks(index))?;
    d.set_item("active_blocks", router.active_blocks(index))?;
    Ok(d)
}

/// An optional float setting checked by the core's range (`RouterConfig::validate`).
fn opt_float(
    py: Python<'_>,
    field: &'static str,
    ob: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<f64>> {
    opt_value(ob)
        .map(|v| limits::number(Blame::Config, field, &v))
        .transpose()
        .py(py)
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

impl PyRouter {
    /// The prompt length given `prompt_token_ids` of length `n` (and maybe `prompt_tokens`).
    fn prompt_from_ids(&self, py: Python<'_>, given: Option<u64>, n: usize) -> PyResult<u64> {
        if n == 0 {
            return Err(Error::invalid(
                "prompt_token_ids",
                "prompt_token_ids is empty",
            ))
            .py(py);
        }
        match given {
            Some(p) if p != n as u64 => Err(Error::InvalidArgument {
                field: "prompt_tokens",
                value: Some(Value::from(p)),
                index: None,
                message: format!("prompt_tokens {p} does not match len(prompt_token_ids) {n}"),
            })
            .py(py),
            _ => Ok(n as u64),
        }
    }
}

/// `e` (an `InvalidArgumentError` about one row of a per-request argument) naming row `i`.
fn with_index(py: Python<'_>, e: PyErr, i: usize) -> PyErr {
    // Only our own exceptions, which declare `index`, come out of the row parsers.
    let _ = e.value(py).setattr("index", i);
    e
}

#[pymethods]
impl PyRouter {
    #[new]
    #[pyo3(signature = (policy, num_replicas, *, seed=None, num_gpu_blocks=None, block_size=None, max_num_batched_tokens=None, beta=None, prior_input_tokens=None, prior_output_tokens=None, cache_threshold=None, balance_abs_threshold=None, balance_rel_threshold=None, max_record_blocks=None, overlap_score_weight=None, router_temperature=None))]
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
        cache_threshold: Option<&Bound<'_, PyAny>>,
        balance_abs_threshold: Option<&Bound<'_, PyAny>>,
        balance_rel_threshold: Option<&Bound<'_, PyAny>>,
        max_record_blocks: Option<&Bound<'_, PyAny>>,
        overlap_score_weight: Option<&Bound<'_, PyAny>>,
        router_temperature: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let policy = match value(policy) {
            Value::Str(name) => name,
            other => other.to_string(),
        };
        // Check the policy name and replica count before per-replica lists (clearer errors).
        crate::router::make_policy(&policy, 0).py(py)?;
        let n = limits::replicas("num_replicas", &value(num_replicas)).py(py)?;
        let mut config = RouterConfig::new(&policy, n);
        if let Some(v) = opt_value(seed) {
            config.seed = limits::seed(&v).py(py)?;
        }
        config.beta = opt_value(beta)
            .map(|v| limits::number(Blame::Config, "beta", &v))
            .transpose()
            .py(py)?;
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
        config.replicas = (0..n)
            .map(|i| ReplicaSpec {
                num_gpu_blocks: blocks[i],
                block_size: sizes[i],
                max_num_batched_tokens: budgets[i],
            })
            .collect();
        if let Some(v) = opt_value(prior_input_tokens) {
            config.prior_input_tokens = limits::config_count("prior_input_tokens", &v).py(py)?;
        }
        if let Some(v) = opt_value(prior_output_tokens) {
            config.prior_output_tokens = limits::config_count("prior_output_tokens", &v).py(py)?;
        }
        let d = PolicyParams::default();
        config.params = PolicyParams {
            cache_threshold: opt_float(py, "cache_threshold", cache_threshold)?
                .unwrap_or(d.cache_threshold),
            balance_abs_threshold: opt_value(balance_abs_threshold)
                .map(|v| {
                    limits::count_in(
                        Blame::Config,
                        "balance_abs_threshold",
                        &v,
                        0,
                        limits::MAX_COUNT,
                    )
                })
                .transpose()
                .py(py)?
                .unwrap_or(d.balance_abs_threshold),
            balance_rel_threshold: opt_float(py, "balance_rel_threshold", balance_rel_threshold)?
                .unwrap_or(d.balance_rel_threshold),
            overlap_score_weight: opt_float(py, "overlap_score_weight", overlap_score_weight)?
                .unwrap_or(d.overlap_score_weight),
            router_temperature: opt_float(py, "router_temperature", router_temperature)?
                .unwrap_or(d.router_temperature),
        };
        if let Some(v) = opt_value(max_record_blocks) {
            config.max_record_blocks = Some(limits::config_count("max_record_blocks", &v).py(py)?);
        }
        let core = Router::new(config).py(py)?;
        Ok(PyRouter { core })
    }

    /// Pick the replica for a new request, record it there as waiting, and return the
    /// replica's index. Raises `DuplicateRequestError` if `request_id` is live.
    ///
    /// `block_hashes` (ints: the chained hashes of the prompt's full blocks at the replicas'
    /// block size) or `prompt_token_ids` (hashed here; `prompt_tokens` may then be omitted)
    /// let the cache-aware routers match prefixes; `overlap_blocks` (one int per replica)
    /// says exactly how many leading blocks each replica has cached.
    #[pyo3(signature = (request_id, prompt_tokens=None, max_output_tokens=None, predicted_output_tokens=None, *, block_hashes=None, prompt_token_ids=None, overlap_blocks=None))]
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        prompt_tokens: Option<&Bound<'_, PyAny>>,
        max_output_tokens: Option<&Bound<'_, PyAny>>,
        predicted_output_tokens: Option<&Bound<'_, PyAny>>,
        block_hashes: Option<&Bound<'_, PyAny>>,
        prompt_token_ids: Option<&Bound<'_, PyAny>>,
        overlap_blocks: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let id = to_id(request_id).py(py)?;
        let mut prompt = opt_count(py, "prompt_tokens", prompt_tokens, 1)?;
        let max_output_tokens = opt_count(py, "max_output_tokens", max_output_tokens, 1)?;
        let predicted_output_tokens =
            opt_count(py, "predicted_output_tokens", predicted_output_tokens, 0)?;
        let block_hashes = block_hashes.filter(|o| !o.is_none());
        let prompt_token_ids = prompt_token_ids.filter(|o| !o.is_none());
        let hashes = match (block_hashes, prompt_token_ids) {
            (Some(_), Some(_)) => return not_both(py),
            (None, Some(ids)) => {
                let tokens = token_ids_arg(py, ids)?;
                prompt = Some(self.prompt_from_ids(py, prompt, tokens.len())?);
                let bs = self.core.hash_block_size("prompt_token_ids").py(py)?;
                hash_token_blocks(&tokens, bs).py(py)?
            }
            (Some(h), None) => block_hashes_arg(py, h)?,
            (None, None) => Vec::new(),
        };
        let Some(prompt_tokens) = prompt else {
            return Err(Error::invalid(
                "prompt_tokens",
                "prompt_tokens is required (or prompt_token_ids)",
            ))
            .py(py);
        };
        let overlap = overlap_blocks
            .filter(|o| !o.is_none())
            .map(|o| overlap_counts(py, o))
            .transpose()?;
        let request = RouteRequest {
            prompt_tokens,
            max_output_tokens,
            predicted_output_tokens,
            block_hashes: &hashes,
            overlap_blocks: overlap.as_deref(),
        };
        self.core.route(id, request).py(py)
    }

    /// `route` for many requests at once (same results as calling it in order); returns an
    /// int64 array of replica indices. Everything is checked first: on error nothing is routed.
    /// `block_hashes` and `overlap_blocks`, when given, hold one entry per request (a
    /// sequence, or `None`).
    #[pyo3(signature = (request_ids, prompt_tokens, max_output_tokens=None, predicted_output_tokens=None, *, block_hashes=None, overlap_blocks=None))]
    #[allow(clippy::too_many_arguments)]
    fn route_many<'py>(
        &mut self,
        py: Python<'py>,
        request_ids: &Bound<'py, PyAny>,
        prompt_tokens: &Bound<'py, PyAny>,
        max_output_tokens: Option<&Bound<'py, PyAny>>,
        predicted_output_tokens: Option<&Bound<'py, PyAny>>,
        block_hashes: Option<&Bound<'py, PyAny>>,
        overlap_blocks: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let ids: Vec<Bound<'py, PyAny>> = request_ids.try_iter()?.collect::<PyResult<_>>()?;
        let column = |field: &'static str,
                      ob: Option<&Bound<'py, PyAny>>,
                      min: u64|
         -> PyResult<Option<Vec<u64>>> {
            let Some(ob) = ob.filter(|o| !o.is_none()) else {
                return Ok(None);
            };
            let mut values = Vec::with_capacity(ids.len());
            for (i, item) in ob.try_iter()?.enumerate() {
                values.push(
                    limits::count(field, &value(&item?), min)
                        .map_err(|e| e.at(i))
                        .py(py)?,
                );
            }
            if values.len() != ids.len() {
                let message = format!(
                    "{field} has {} entries but request_ids has {}",
                    values.len(),
                    ids.len()
                );
                return Err(Error::invalid(field, message)).py(py);
            }
            Ok(Some(values))
        };
        let prompts = column("prompt_tokens", Some(prompt_tokens), 1)?.unwrap_or_default();
        let caps = column("max_output_tokens", max_output_tokens, 1)?;
        let predictions = column("predicted_output_tokens", predicted_output_tokens, 0)?;
        let rows = |field: &'static str,
                    ob: Option<&Bound<'py, PyAny>>,
                    parse: &dyn Fn(&Bound<'py, PyAny>) -> PyResult<Vec<u128>>|
         -> PyResult<Option<Vec<Option<Vec<u128>>>>> {
            let Some(ob) = ob.filter(|o| !o.is_none()) else {
                return Ok(None);
            };
            let mut out = Vec::with_capacity(ids.len());
            for (i, row) in ob.try_iter()?.enumerate() {
                let row = row?;
                if row.is_none() {
                    out.push(None);
                    continue;
                }
                out.push(Some(parse(&row).map_err(|e| with_index(py, e, i))?));
            }
            if out.len() != ids.len() {
                let message = format!(
                    "{field} has {} entries but request_ids has {}",
                    out.len(),
                    ids.len()
                );
                return Err(Error::invalid(field, message)).py(py);
            }
            Ok(Some(out))
        };
        let hash_rows = rows("block_hashes", block_hashes, &|row| {
            block_hashes_arg(py, row)
        })?;
        let overlap_rows = rows("overlap_blocks", overlap_blocks, &|row| {
            Ok(overlap_counts(py, row)?
                .into_iter()
                .map(u128::from)
                .collect())
        })?;
        let overlaps: Vec<Option<Vec<u64>>> = match &overlap_rows {
            Some(r) => r
                .iter()
                .map(|o| o.as_ref().map(|v| v.iter().map(|&x| x as u64).collect()))
                .collect(),
            None => Vec::new(),
        };
        let mut requests = Vec::with_capacity(ids.len());
        for (i, ob) in ids.iter().enumerate() {
            let request = RouteRequest {
                prompt_tokens: prompts.get(i).copied().unwrap_or(0),
                max_output_tokens: caps.as_ref().and_then(|c| c.get(i).copied()),
                predicted_output_tokens: predictions.as_ref().and_then(|p| p.get(i).copied()),
                block_hashes: hash_rows
                    .as_ref()
                    .and_then(|r| r.get(i))
                    .and_then(|h| h.as_deref())
                    .unwrap_or(&[]),
                overlap_blocks: overlaps.get(i).and_then(|o| o.as_deref()),
            };
            requests.push((to_id(ob).map_err(|e| e.at(i)).py(py)?, request));
        }
        let chosen = self.core.route_many(requests).py(py)?;
        Ok(PyArray1::from_vec(
            py,
            chosen.into_iter().map(|i| i as i64).collect(),
        ))
    }

    /// The request has started (prefill done) and generated `output_tokens` tokens so far
    /// (cumulative; never decreasing; at most its `max_output_tokens`).
    fn on_progress(
        &mut self,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        output_tokens: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = to_id(request_id).py(py)?;
        let out = count(py, "output_tokens", output_tokens, 0)?;
        self.core.on_progress(&id, out).py(py)
    }

    /// The request finished with `output_tokens` generated tokens: its load leaves its
    /// replica and its lengths feed SAL's β and the default decode estimate.
    fn on_finish(
        &mut self,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        output_tokens: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = to_id(request_id).py(py)?;
        let out = count(py, "output_tokens", output_tokens, 0)?;
        self.core.on_finish(&id, out).py(py)
    }

    /// The request ended early (cancelled, failed): its load leaves its replica; β does not
    /// learn from it.
    fn on_abort(&mut self, py: Python<'_>, request_id: &Bound<'_, PyAny>) -> PyResult<()> {
        let id = to_id(request_id).py(py)?;
        self.core.on_abort(&id).py(py)
    }

    /// Overwrite replica `index`'s load with an engine's report; omitted fields keep their
    /// value. Later bookkeeping applies on top of it (never below zero).
    #[pyo3(signature = (index, *, waiting=None, running=None, queued_prefill_tokens=None, remaining_decode_tokens=None, free_blocks=None, queued_prefill_uncached_tokens=None))]
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
        queued_prefill_uncached_tokens: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let i = replica_index(py, index, self.core.num_replicas())?;
        let snapshot = ReplicaSnapshot {
            waiting: opt_count(py, "waiting", waiting, 0)?,
            running: opt_count(py, "running", running, 0)?,
            queued_prefill_tokens: opt_count(
                py,
                "queued_prefill_tokens",
                queued_prefill_tokens,
                0,
            )?,
            queued_prefill_uncached_tokens: opt_count(
                py,
                "queued_prefill_uncached_tokens",
                queued_prefill_uncached_tokens,
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
        self.core.update_replica(i, snapshot).py(py)
    }

    /// Replica `index`'s load as the router sees it (a fresh dict).
    fn replica<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let i = replica_index(py, index, self.core.num_replicas())?;
        load_dict(py, &self.core, i)
    }

    /// Every replica's load, in index order.
    fn replica_loads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let dicts = (0..self.core.num_replicas())
            .map(|i| load_dict(py, &self.core, i))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, dicts)
    }

    /// The replica a live request was routed to.
    fn replica_of(&self, py: Python<'_>, request_id: &Bound<'_, PyAny>) -> PyResult<usize> {
        let id = to_id(request_id).py(py)?;
        self.core.replica_of(&id).py(py)
    }

    /// Raise `InvariantError` if a replica's counters disagree with its live requests
    /// (replicas that got a snapshot are exempt).
    fn check_invariants(&self, py: Python<'_>) -> PyResult<()> {
        self.core.check_invariants().py(py)
    }

    fn __len__(&self) -> usize {
        self.core.num_live()
    }

    fn __contains__(&self, request_id: &Bound<'_, PyAny>) -> bool {
        to_id(request_id).is_ok_and(|id| self.core.contains(&id))
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

    #[getter]
    fn cache_threshold(&self) -> f64 {
        self.core.config().params.cache_threshold
    }

    #[getter]
    fn balance_abs_threshold(&self) -> u64 {
        self.core.config().params.balance_abs_threshold
    }

    #[getter]
    fn balance_rel_threshold(&self) -> f64 {
        self.core.config().params.balance_rel_threshold
    }

    /// The prefix record's cap per replica, in blocks (each replica's `num_gpu_blocks`
    /// unless set).
    #[getter]
    fn max_record_blocks(&self) -> Vec<u64> {
        (0..self.core.num_replicas())
            .map(|i| self.core.record_capacity(i))
            .collect()
    }

    #[getter]
    fn overlap_score_weight(&self) -> f64 {
        self.core.config().params.overlap_score_weight
    }

    #[getter]
    fn router_temperature(&self) -> f64 {
        self.core.config().params.router_temperature
    }

    /// The block hashes in replica `index`'s prefix record, least recently used first
    /// (empty for routers without one).
    fn record_hashes(&self, py: Python<'_>, index: &Bound<'_, PyAny>) -> PyResult<Vec<u128>> {
        let i = replica_index(py, index, self.core.num_replicas())?;
        Ok(self.core.record_hashes(i))
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
