//! Python bindings of the routers: `Router` and `router_names`.
//!
//! Arguments become core values ([`super::convert`]) checked by the core's rules (ints, not
//! bools, in [min, 2**40]: [`crate::limits`]); core errors become `halffull.errors`
//! exceptions in [`super::error::to_pyerr`].

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use pyo3::IntoPyObjectExt;

use super::convert::{
    self, config_items, count, items, name, opt_count, opt_value, request_id as to_id, value,
};
use super::error::{id_to_py, to_pyerr, IntoPyResult};
use crate::error::{Error, Value};
use crate::hash::{hash_token_blocks, BlockHash};
use crate::id::RequestId;
use crate::limits::{self, Blame};
use crate::router::{
    bad_block_hash, policy_names, token_id, Live, PolicyParams, PrefixUse, ReplicaLoad,
    ReplicaSnapshot, ReplicaSpec, RouteRequest, Router, RouterConfig, RouterState,
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

/// An int (for all `n` replicas), or a sequence of ints (one per replica; not a mapping, a
/// str or bytes; its length is checked by [`one_per_replica`]); `None` gives `default`
/// everywhere.
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
    if !ob.hasattr("__iter__").unwrap_or(false) || ob.is_instance_of::<PyString>() {
        return limits::config_count(field, &value(ob))
            .map(|v| vec![v; n])
            .py(py);
    }
    config_items(field, ob, "ints (one per replica)")?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            limits::config_count(field, &value(item))
                .map_err(|e| e.at(i))
                .py(py)
        })
        .collect()
}

/// `ConfigError` unless `values` has one entry per replica.
fn one_per_replica(py: Python<'_>, field: &'static str, values: &[u64], n: usize) -> PyResult<()> {
    if values.len() != n {
        let message = format!(
            "{field} has {} entries; expected one per replica ({n})",
            values.len()
        );
        return Err(Error::config(field, message)).py(py);
    }
    Ok(())
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
    match bulk {
        Some(values) => values.py(py),
        None => convert::block_hashes(ob),
    }
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
    match bulk {
        Some(values) => values.py(py),
        None => convert::token_ids(ob),
    }
}

/// Per-replica overlap counts: ints in `[0, 2**40]` (a sequence, read as [`items`] reads it).
fn overlap_counts(py: Python<'_>, ob: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    items("overlap_blocks", ob, "ints (one per replica)")?
        .iter()
        .enumerate()
        .map(|(i, x)| {
            limits::count("overlap_blocks", &value(x), 0)
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

/// A router's configuration and state from `Router.__reduce__`'s dict (any mistake is a
/// Python error, which `_from_state` turns into `InvalidArgumentError`).
fn router_state(d: &Bound<'_, PyAny>) -> PyResult<(RouterConfig, RouterState<RequestId>)> {
    let get = |key: &str| d.get_item(key);
    let specs: Vec<(u64, u64, u64)> = get("replicas")?.extract()?;
    let mut config = RouterConfig::new(&get("policy")?.extract::<String>()?, specs.len());
    config.seed = get("seed")?.extract()?;
    config.replicas = specs
        .iter()
        .map(
            |&(num_gpu_blocks, block_size, max_num_batched_tokens)| ReplicaSpec {
                num_gpu_blocks,
                block_size,
                max_num_batched_tokens,
            },
        )
        .collect();
    config.beta = get("beta")?.extract()?;
    config.prior_input_tokens = get("prior_input_tokens")?.extract()?;
    config.prior_output_tokens = get("prior_output_tokens")?.extract()?;
    let (
        cache_threshold,
        balance_abs_threshold,
        balance_rel_threshold,
        overlap_score_weight,
        router_temperature,
    ) = get("params")?.extract()?;
    config.params = PolicyParams {
        cache_threshold,
        balance_abs_threshold,
        balance_rel_threshold,
        overlap_score_weight,
        router_temperature,
    };
    config.max_record_blocks = get("max_record_blocks")?.extract()?;
    let loads: Vec<(u64, u64, u64, u64, u64, u64)> = get("loads")?.extract()?;
    let replicas = loads
        .iter()
        .zip(&config.replicas)
        .map(|(&(w, r, q, qu, rd, u), spec)| ReplicaLoad {
            waiting: w,
            running: r,
            queued_prefill_tokens: q,
            queued_prefill_uncached_tokens: qu,
            remaining_decode_tokens: rd,
            used_blocks: u,
            ..ReplicaLoad::new(*spec)
        })
        .collect();
    let mut live = Vec::new();
    for row in get("live")?.try_iter()? {
        let row = row?;
        let id = to_id(&row.get_item(0)?).map_err(|e| to_pyerr(d.py(), e))?;
        #[allow(clippy::type_complexity)]
        let (
            _,
            replica,
            prompt_tokens,
            max_output_tokens,
            decode_estimate,
            output_tokens,
            started,
            used_blocks,
            cached_tokens,
        ): (
            Bound<'_, PyAny>,
            usize,
            u64,
            Option<u64>,
            u64,
            u64,
            bool,
            u64,
            u64,
        ) = row.extract()?;
        live.push((
            id,
            Live {
                replica,
                prompt_tokens,
                max_output_tokens,
                decode_estimate,
                output_tokens,
                started,
                used_blocks,
                cached_tokens,
                hashes: Box::default(),
                own_blocks: 0,
            },
        ));
    }
    let mut snapshotted: Vec<bool> = get("snapshotted")?.extract()?;
    if loads.len() != config.replicas.len() {
        snapshotted.clear(); // from_state names the mismatch
    }
    let state = RouterState {
        policy_state: get("policy_state")?.extract()?,
        replicas,
        snapshotted,
        live,
        num_finished: get("num_finished")?.extract()?,
        sum_input_tokens: get("sum_input_tokens")?.extract()?,
        sum_output_tokens: get("sum_output_tokens")?.extract()?,
    };
    Ok((config, state))
}

/// What `replica()` shows of one replica, copied while the router is held.
struct LoadView {
    load: ReplicaLoad,
    record_blocks: u64,
    active_blocks: u64,
}

fn load_view(router: &Router<RequestId>, index: usize) -> crate::error::Result<LoadView> {
    Ok(LoadView {
        load: *router.replica(index)?,
        record_blocks: router.record_blocks(index),
        active_blocks: router.active_blocks(index),
    })
}

fn load_dict<'py>(py: Python<'py>, view: &LoadView) -> PyResult<Bound<'py, PyDict>> {
    let load = &view.load;
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
    d.set_item("record_blocks", view.record_blocks)?;
    d.set_item("active_blocks", view.active_blocks)?;
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
///
/// Safe to share between threads: each call converts its arguments, then holds the router
/// only while Rust runs, then builds its result; calls apply one at a time. Pickles and copies
/// with its whole state (`__reduce__`), so a restored router makes the same decisions; the
/// cache-aware policies (their prefix records) do not pickle yet.
#[pyclass(module = "halffull._core", name = "Router")]
pub struct PyRouter {
    core: Router<RequestId>,
}

/// The router for one call into the core: held only while Rust runs.
fn hold<'py>(slf: &Bound<'py, PyRouter>) -> PyResult<PyRefMut<'py, PyRouter>> {
    slf.try_borrow_mut()
        .map_err(|_| to_pyerr(slf.py(), Error::Busy { what: "Router" }))
}

fn hold_ref<'py>(slf: &Bound<'py, PyRouter>) -> PyResult<PyRef<'py, PyRouter>> {
    slf.try_borrow()
        .map_err(|_| to_pyerr(slf.py(), Error::Busy { what: "Router" }))
}

impl PyRouter {
    /// The prompt length given `prompt_token_ids` of length `n` (and maybe `prompt_tokens`).
    fn prompt_from_ids(py: Python<'_>, given: Option<u64>, n: usize) -> PyResult<u64> {
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
        let policy = name(py, Blame::Config, "policy", policy)?;
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
        // Every value checked, then the lengths (a bad value is named before a short list).
        one_per_replica(py, "num_gpu_blocks", &blocks, n)?;
        one_per_replica(py, "block_size", &sizes, n)?;
        one_per_replica(py, "max_num_batched_tokens", &budgets, n)?;
        config.replicas = (0..n)
            .map(|i| ReplicaSpec {
                num_gpu_blocks: blocks[i],
                block_size: sizes[i],
                max_num_batched_tokens: budgets[i],
            })
            .collect();
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
        slf: &Bound<'_, Self>,
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
                prompt = Some(Self::prompt_from_ids(py, prompt, tokens.len())?);
                let bs = hold_ref(slf)?.core.hash_block_size("prompt_token_ids");
                hash_token_blocks(&tokens, bs.py(py)?).py(py)?
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
        let result = hold(slf)?.core.route(id, request);
        result.py(py)
    }

    /// `route` for many requests at once (same results as calling it in order); returns an
    /// int64 array of replica indices. Everything is checked first: on error nothing is routed.
    /// `block_hashes` and `overlap_blocks`, when given, hold one entry per request (a
    /// sequence, or `None`).
    #[pyo3(signature = (request_ids, prompt_tokens, max_output_tokens=None, predicted_output_tokens=None, *, block_hashes=None, overlap_blocks=None))]
    #[allow(clippy::too_many_arguments)]
    fn route_many<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
        request_ids: &Bound<'py, PyAny>,
        prompt_tokens: &Bound<'py, PyAny>,
        max_output_tokens: Option<&Bound<'py, PyAny>>,
        predicted_output_tokens: Option<&Bound<'py, PyAny>>,
        block_hashes: Option<&Bound<'py, PyAny>>,
        overlap_blocks: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let ids = items("request_ids", request_ids, "request ids")?
            .iter()
            .enumerate()
            .map(|(i, ob)| to_id(ob).map_err(|e| e.at(i)).py(py))
            .collect::<PyResult<Vec<_>>>()?;
        // `None` is no column, except for prompt_tokens, which is required.
        let column = |field: &'static str,
                      ob: Option<&Bound<'py, PyAny>>,
                      min: u64|
         -> PyResult<Option<Vec<u64>>> {
            let Some(ob) = ob.filter(|o| field == "prompt_tokens" || !o.is_none()) else {
                return Ok(None);
            };
            items(field, ob, "ints")?
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    limits::count(field, &value(item), min)
                        .map_err(|e| e.at(i))
                        .py(py)
                })
                .collect::<PyResult<Vec<u64>>>()
                .map(Some)
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
            let rows = items(field, ob, "sequences (one per request)")?;
            let mut out = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                if row.is_none() {
                    out.push(None);
                    continue;
                }
                out.push(Some(parse(row).map_err(|e| with_index(py, e, i))?));
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
        // Every value first, then the lengths (a bad value is named before a short column).
        for (field, len) in [
            ("prompt_tokens", Some(prompts.len())),
            ("max_output_tokens", caps.as_ref().map(Vec::len)),
            (
                "predicted_output_tokens",
                predictions.as_ref().map(Vec::len),
            ),
            ("block_hashes", hash_rows.as_ref().map(Vec::len)),
            ("overlap_blocks", overlap_rows.as_ref().map(Vec::len)),
        ] {
            if let Some(len) = len.filter(|&len| len != ids.len()) {
                let message = format!(
                    "{field} has {len} entries but request_ids has {}",
                    ids.len()
                );
                return Err(Error::invalid(field, message)).py(py);
            }
        }
        let overlaps: Vec<Option<Vec<u64>>> = match &overlap_rows {
            Some(r) => r
                .iter()
                .map(|o| o.as_ref().map(|v| v.iter().map(|&x| x as u64).collect()))
                .collect(),
            None => Vec::new(),
        };
        let requests = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
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
                (id, request)
            })
            .collect();
        let chosen = hold(slf)?.core.route_many(requests);
        Ok(PyArray1::from_vec(
            py,
            chosen.py(py)?.into_iter().map(|i| i as i64).collect(),
        ))
    }

    /// The request has started (prefill done) and generated `output_tokens` tokens so far
    /// (cumulative; never decreasing; at most its `max_output_tokens`).
    fn on_progress(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        output_tokens: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = to_id(request_id).py(py)?;
        let out = count(py, "output_tokens", output_tokens, 0)?;
        let result = hold(slf)?.core.on_progress(&id, out);
        result.py(py)
    }

    /// The request finished with `output_tokens` generated tokens: its load leaves its
    /// replica and its lengths feed SAL's β and the default decode estimate.
    fn on_finish(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
        output_tokens: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = to_id(request_id).py(py)?;
        let out = count(py, "output_tokens", output_tokens, 0)?;
        let result = hold(slf)?.core.on_finish(&id, out);
        result.py(py)
    }

    /// The request ended early (cancelled, failed): its load leaves its replica; β does not
    /// learn from it.
    fn on_abort(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let id = to_id(request_id).py(py)?;
        let result = hold(slf)?.core.on_abort(&id);
        result.py(py)
    }

    /// Overwrite replica `index`'s load with an engine's report; omitted fields keep their
    /// value. Later bookkeeping applies on top of it (never below zero).
    #[pyo3(signature = (index, *, waiting=None, running=None, queued_prefill_tokens=None, remaining_decode_tokens=None, free_blocks=None, queued_prefill_uncached_tokens=None))]
    #[allow(clippy::too_many_arguments)]
    fn update_replica(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        index: &Bound<'_, PyAny>,
        waiting: Option<&Bound<'_, PyAny>>,
        running: Option<&Bound<'_, PyAny>>,
        queued_prefill_tokens: Option<&Bound<'_, PyAny>>,
        remaining_decode_tokens: Option<&Bound<'_, PyAny>>,
        free_blocks: Option<&Bound<'_, PyAny>>,
        queued_prefill_uncached_tokens: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let n = hold_ref(slf)?.core.num_replicas();
        let i = replica_index(py, index, n)?;
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
        let result = hold(slf)?.core.update_replica(i, snapshot);
        result.py(py)
    }

    /// Replica `index`'s load as the router sees it (a fresh dict).
    fn replica<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let n = hold_ref(slf)?.core.num_replicas();
        let i = replica_index(py, index, n)?;
        let view = load_view(&hold_ref(slf)?.core, i);
        load_dict(py, &view.py(py)?)
    }

    /// Every replica's load, in index order.
    fn replica_loads<'py>(slf: &Bound<'py, Self>, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let views = {
            let me = hold_ref(slf)?;
            (0..me.core.num_replicas())
                .map(|i| load_view(&me.core, i))
                .collect::<crate::error::Result<Vec<_>>>()
        };
        let dicts = views
            .py(py)?
            .iter()
            .map(|v| load_dict(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, dicts)
    }

    /// The replica a live request was routed to.
    fn replica_of(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        request_id: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let id = to_id(request_id).py(py)?;
        let result = hold_ref(slf)?.core.replica_of(&id);
        result.py(py)
    }

    /// Raise `InvariantError` if a replica's counters disagree with its live requests
    /// (replicas that got a snapshot are exempt).
    fn check_invariants(slf: &Bound<'_, Self>, py: Python<'_>) -> PyResult<()> {
        let result = hold_ref(slf)?.core.check_invariants();
        result.py(py)
    }

    /// Pickles (and copies) as `Router._from_state(state)`: the configuration and everything
    /// learned since (loads, live requests, β's sums, the generator's state), as plain data.
    /// The cache-aware policies do not pickle yet (`TypeError`): their prefix records are not
    /// part of the state.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let (config, state, prefix_use) = {
            let me = hold_ref(slf)?;
            (
                me.core.config().clone(),
                me.core.state(),
                me.core.prefix_use(),
            )
        };
        if prefix_use != PrefixUse::None {
            return Err(PyTypeError::new_err(format!(
                "a '{}' Router cannot be pickled or copied yet: its prefix records are not part of \
                 its saved state; rebuild it from its arguments",
                config.policy
            )));
        }
        let d = PyDict::new(py);
        d.set_item("policy", &config.policy)?;
        d.set_item("seed", config.seed)?;
        let specs: Vec<(u64, u64, u64)> = config
            .replicas
            .iter()
            .map(|r| (r.num_gpu_blocks, r.block_size, r.max_num_batched_tokens))
            .collect();
        d.set_item("replicas", specs)?;
        d.set_item("beta", config.beta)?;
        d.set_item("prior_input_tokens", config.prior_input_tokens)?;
        d.set_item("prior_output_tokens", config.prior_output_tokens)?;
        let p = config.params;
        d.set_item(
            "params",
            (
                p.cache_threshold,
                p.balance_abs_threshold,
                p.balance_rel_threshold,
                p.overlap_score_weight,
                p.router_temperature,
            ),
        )?;
        d.set_item("max_record_blocks", config.max_record_blocks)?;
        d.set_item("policy_state", state.policy_state)?;
        let loads: Vec<(u64, u64, u64, u64, u64, u64)> = state
            .replicas
            .iter()
            .map(|l| {
                (
                    l.waiting,
                    l.running,
                    l.queued_prefill_tokens,
                    l.queued_prefill_uncached_tokens,
                    l.remaining_decode_tokens,
                    l.used_blocks,
                )
            })
            .collect();
        d.set_item("loads", loads)?;
        d.set_item("snapshotted", state.snapshotted)?;
        let live = PyList::empty(py);
        for (id, l) in &state.live {
            let row: Vec<Py<PyAny>> = vec![
                id_to_py(py, id)?,
                l.replica.into_py_any(py)?,
                l.prompt_tokens.into_py_any(py)?,
                l.max_output_tokens.into_py_any(py)?,
                l.decode_estimate.into_py_any(py)?,
                l.output_tokens.into_py_any(py)?,
                l.started.into_py_any(py)?,
                l.used_blocks.into_py_any(py)?,
                l.cached_tokens.into_py_any(py)?,
            ];
            live.append(PyTuple::new(py, row)?)?;
        }
        d.set_item("live", live)?;
        d.set_item("num_finished", state.num_finished)?;
        d.set_item("sum_input_tokens", state.sum_input_tokens)?;
        d.set_item("sum_output_tokens", state.sum_output_tokens)?;
        let rebuild = slf.get_type().getattr("_from_state")?;
        Ok((rebuild, PyTuple::new(py, [d])?))
    }

    /// Rebuild a pickled router (`__reduce__`'s state, checked against its configuration);
    /// not public API.
    #[staticmethod]
    fn _from_state(py: Python<'_>, state: &Bound<'_, PyAny>) -> PyResult<Self> {
        let bad = |e: PyErr| {
            to_pyerr(
                py,
                Error::invalid("state", format!("not a router state: {e}")),
            )
        };
        let (config, state) = router_state(state).map_err(bad)?;
        let core = Router::from_state(config, state).py(py)?;
        Ok(PyRouter { core })
    }

    fn __len__(&self) -> usize {
        self.core.num_live()
    }

    /// Is `request_id` live here? (False for anything that is not a valid id.)
    fn __contains__(slf: &Bound<'_, Self>, request_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(id) = to_id(request_id) else {
            return Ok(false);
        };
        Ok(hold_ref(slf)?.core.contains(&id))
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
    fn record_hashes(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        index: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<u128>> {
        let n = hold_ref(slf)?.core.num_replicas();
        let i = replica_index(py, index, n)?;
        Ok(hold_ref(slf)?.core.record_hashes(i))
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
