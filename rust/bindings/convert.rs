//! Python objects to core values, shared by every binding. Nothing here judges a number: it
//! becomes a [`Value`] for the core to check against [`crate::limits`] (`count`, `time`,
//! `name`, `flag` call those checks). What is refused here is what the core never sees: a
//! request id that is neither a str nor an int (or a str Rust cannot hold), and a "list"
//! that is a string, bytes, a mapping, not iterable, or raises while it is iterated.
//!
//! Every refusal is a `halffull.errors` exception naming the argument (`field`), so a caller's
//! mistake never surfaces as a bare `TypeError`, `OverflowError` or `UnicodeEncodeError`.

use std::sync::Arc;

use pyo3::exceptions::{PyException, PyMemoryError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyString};

use super::error::{to_pyerr, IntoPyResult};
use crate::error::{Error, Result, Value};
use crate::hash::{bytes_block_hash, BlockHash};
use crate::id::RequestId;
use crate::limits::{self, Blame};

/// Longest `repr` kept in a [`Value::Other`] (a 300-digit int is cut, not echoed whole).
const MAX_REPR: usize = 80;

fn repr(ob: &Bound<'_, PyAny>) -> String {
    let r = ob.repr().map(|r| r.to_string()).unwrap_or_default();
    match r.char_indices().nth(MAX_REPR) {
        Some((cut, _)) => format!("{}...", &r[..cut]),
        None => r,
    }
}

/// The type's name, for "got float" (empty if it has none).
pub(crate) fn type_name(ob: &Bound<'_, PyAny>) -> String {
    ob.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// Is `ob` one of numpy's scalars (`np.int64`, `np.float32`, `np.bool_` ...)?
fn is_numpy(ob: &Bound<'_, PyAny>) -> bool {
    ob.get_type().module().is_ok_and(|m| m == "numpy")
}

/// numpy's bool scalar (`np.True_`): neither a Python bool nor an int, but a bool.
fn is_numpy_bool(ob: &Bound<'_, PyAny>) -> bool {
    is_numpy(ob)
        && ob
            .get_type()
            .name()
            .is_ok_and(|n| n == "bool" || n == "bool_")
}

/// A Python object as a core [`Value`], accepting what the reference accepts: bool
/// (Python's or numpy's), int (Python's or a numpy integer; beyond 128 bits it is kept by
/// its repr), float (Python's or a numpy floating), str, `None`, and anything else (a
/// `Fraction`, a complex, an object with `__index__`) by its shortened repr.
pub(crate) fn value(ob: &Bound<'_, PyAny>) -> Value {
    if ob.is_exact_instance_of::<PyInt>() {
        if let Ok(n) = ob.extract::<i64>() {
            return Value::Int(n.into()); // the common case, first
        }
    }
    if ob.is_none() {
        return Value::None;
    }
    if ob.is_instance_of::<PyBool>() {
        return Value::Bool(ob.is_truthy().unwrap_or(false));
    }
    if let Ok(f) = ob.cast::<PyFloat>() {
        return Value::Float(f.value());
    }
    if let Ok(s) = ob.cast::<PyString>() {
        return Value::Str(s.to_string_lossy().into_owned());
    }
    if ob.is_instance_of::<PyInt>() {
        return ob
            .extract::<i128>()
            .map_or_else(|_| Value::Other(repr(ob)), Value::Int);
    }
    if is_numpy(ob) {
        if is_numpy_bool(ob) {
            return Value::Bool(ob.is_truthy().unwrap_or(false));
        }
        let kind = |name: &str| {
            ob.py()
                .import("numpy")
                .and_then(|np| np.getattr(name))
                .and_then(|t| ob.is_instance(&t))
                .unwrap_or(false)
        };
        if kind("integer") {
            if let Ok(n) = ob.extract::<i128>() {
                return Value::Int(n);
            }
        } else if kind("floating") {
            if let Ok(x) = ob.extract::<f64>() {
                return Value::Float(x);
            }
        }
    }
    Value::Other(repr(ob))
}

/// `None` for a missing or `None` argument, else its [`value`].
pub(crate) fn opt_value(ob: Option<&Bound<'_, PyAny>>) -> Option<Value> {
    ob.filter(|o| !o.is_none()).map(value)
}

/// A request id: a str (valid Unicode: no lone surrogates, which Rust cannot hold and which
/// would otherwise collide), or an int (not a bool) that fits in 64 bits.
pub(crate) fn request_id(ob: &Bound<'_, PyAny>) -> Result<RequestId> {
    let bad = |message: String| Error::InvalidArgument {
        field: "request_id",
        value: Some(value(ob)),
        index: None,
        message,
    };
    if let Ok(s) = ob.cast::<PyString>() {
        return match s.to_str() {
            Ok(s) => Ok(RequestId::Str(Arc::from(s))),
            Err(_) => Err(Error::InvalidArgument {
                field: "request_id",
                value: Some(Value::Other(repr(ob))),
                index: None,
                message: format!(
                    "request_id {} is not valid Unicode (it holds a lone surrogate)",
                    repr(ob)
                ),
            }),
        };
    }
    if ob.is_instance_of::<PyInt>() && !ob.is_instance_of::<PyBool>() {
        return ob
            .extract::<i64>()
            .map(RequestId::Int)
            .map_err(|_| bad("an int request_id must fit in 64 bits".into()));
    }
    Err(bad(format!(
        "request_id must be a str or an int, got {}",
        type_name(ob)
    )))
}

/// A count argument (an int in `[min, 2**40]`), checked by the core.
pub(crate) fn count(
    py: Python<'_>,
    field: &'static str,
    ob: &Bound<'_, PyAny>,
    min: u64,
) -> PyResult<u64> {
    limits::count(field, &value(ob), min).py(py)
}

/// An optional count argument (`None` stays `None`).
pub(crate) fn opt_count(
    py: Python<'_>,
    field: &'static str,
    ob: Option<&Bound<'_, PyAny>>,
    min: u64,
) -> PyResult<Option<u64>> {
    opt_value(ob)
        .map(|v| limits::count(field, &v, min))
        .transpose()
        .py(py)
}

/// An optional time argument in seconds, checked by the core.
pub(crate) fn time(
    py: Python<'_>,
    field: &'static str,
    ob: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<f64>> {
    opt_value(ob)
        .map(|v| limits::time(field, &v))
        .transpose()
        .py(py)
}

/// A name (a registry key such as a router or a preset): a str; anything else is
/// `InvalidArgumentError` or `ConfigError` (`blame`) naming the field. The registry itself
/// judges the name.
pub(crate) fn name(
    py: Python<'_>,
    blame: Blame,
    field: &'static str,
    ob: &Bound<'_, PyAny>,
) -> PyResult<String> {
    match value(ob) {
        Value::Str(s) => Ok(s),
        v => Err(blame.error(
            field,
            &v,
            format!("{field} must be a str, got {} {v}", type_name(ob)),
        ))
        .py(py),
    }
}

/// A flag: a bool (Python's or numpy's), not an int.
pub(crate) fn flag(
    py: Python<'_>,
    blame: Blame,
    field: &'static str,
    ob: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    limits::flag(blame, field, &value(ob)).py(py)
}

/// Is this error one to hand on as it is: a halffull error already, or not an `Exception`
/// at all (`KeyboardInterrupt`, `SystemExit`), or `MemoryError`?
fn pass_through(py: Python<'_>, e: &PyErr) -> bool {
    let ours = py
        .import("halffull.errors")
        .and_then(|m| m.getattr("HalffullError"))
        .is_ok_and(|base| e.is_instance(py, &base));
    ours || !e.is_instance_of::<PyException>(py) || e.is_instance_of::<PyMemoryError>(py)
}

/// `InvalidArgumentError` naming `field` for an exception the caller's object raised while
/// we read it (its `__iter__` or `__next__`), chained to it (`__cause__`).
fn raised_while_reading(py: Python<'_>, blame: Blame, field: &'static str, e: PyErr) -> PyErr {
    if pass_through(py, &e) {
        return e;
    }
    let kind = e
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    let message = format!("{field}: reading it raised {kind}: {}", e.value(py));
    let ours = to_pyerr(py, blame.error(field, &Value::None, message));
    ours.set_cause(py, Some(e));
    ours
}

/// The items of a "list" argument (`what`: "request ids", "ints" ... for the message): any
/// iterable but a str, bytes, bytearray or mapping (their items would be characters, byte
/// values or keys). Not iterable, or raising while iterated: `InvalidArgumentError` naming
/// `field` (the exception it raised as its `__cause__`). Reads the whole iterable before
/// anything is checked, so a generator is consumed once, up front.
pub(crate) fn items<'py>(
    field: &'static str,
    ob: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    items_of(Blame::Argument, field, ob, what)
}

/// [`items`] of a configuration's list (`ConfigError` when it is not a list).
pub(crate) fn config_items<'py>(
    field: &'static str,
    ob: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    items_of(Blame::Config, field, ob, what)
}

fn items_of<'py>(
    blame: Blame,
    field: &'static str,
    ob: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let py = ob.py();
    let refuse = |why: &str| {
        let message = format!(
            "{field} must be a list of {what}, got {}{why}",
            type_name(ob)
        );
        Err(blame.error(field, &value(ob), message)).py(py)
    };
    if ob.is_instance_of::<PyString>()
        || ob.is_instance_of::<PyBytes>()
        || ob.is_instance_of::<PyByteArray>()
    {
        return refuse(" (a single value, not a list)");
    }
    if ob.is_instance_of::<PyDict>() || is_mapping(ob) {
        return refuse(" (a mapping: its keys would be read)");
    }
    let iter = match ob.try_iter() {
        Ok(iter) => iter,
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py) => {
            return refuse(" (not iterable)")
        }
        Err(e) => return Err(raised_while_reading(py, blame, field, e)),
    };
    let mut out = Vec::with_capacity(ob.len().unwrap_or(0));
    for item in iter {
        out.push(item.map_err(|e| raised_while_reading(py, blame, field, e))?);
    }
    Ok(out)
}

/// A `collections.abc.Mapping` (a dict subclass is caught before).
fn is_mapping(ob: &Bound<'_, PyAny>) -> bool {
    let py = ob.py();
    ob.hasattr("keys").unwrap_or(false)
        && py
            .import("collections.abc")
            .and_then(|m| m.getattr("Mapping"))
            .and_then(|mapping| ob.is_instance(&mapping))
            .unwrap_or(false)
}

/// The items of a sequence argument (as [`items`] reads them), each mapped by `f`; an item
/// `f` refuses names its position.
fn each<'py, T>(
    field: &'static str,
    ob: &Bound<'py, PyAny>,
    what: &str,
    mut f: impl FnMut(&Bound<'py, PyAny>) -> Result<T>,
) -> PyResult<Vec<T>> {
    let py = ob.py();
    items(field, ob, what)?
        .iter()
        .enumerate()
        .map(|(i, item)| f(item).map_err(|e| e.at(i)).py(py))
        .collect()
}

/// Token ids: a sequence of ints in `[0, 2**32)`.
pub(crate) fn token_ids(ob: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    each("prompt_token_ids", ob, "token ids", |item| {
        match value(item) {
            Value::Int(n) if (0..=i128::from(u32::MAX)).contains(&n) => Ok(n as u32),
            v => Err(Error::InvalidArgument {
                field: "prompt_token_ids",
                message: format!(
                    "a token id must be an int in [0, 2**32), got {} {v}",
                    v.kind()
                ),
                value: Some(v),
                index: None,
            }),
        }
    })
}

/// Precomputed block hashes: ints in `[0, 2**128)` taken as they are, or bytes (vLLM's
/// SHA-256 digests, say), hashed to 128 bits ([`crate::hash::bytes_block_hash`]).
pub(crate) fn block_hashes(ob: &Bound<'_, PyAny>) -> PyResult<Vec<BlockHash>> {
    each("block_hashes", ob, "block hashes", |item| {
        if let Ok(b) = item.cast::<PyBytes>() {
            return Ok(bytes_block_hash(b.as_bytes()));
        }
        if item.is_instance_of::<PyInt>() && !item.is_instance_of::<PyBool>() {
            if let Ok(h) = item.extract::<u128>() {
                return Ok(h);
            }
        } else if !item.is_instance_of::<PyBool>() && !item.is_instance_of::<PyFloat>() {
            // numpy integer scalars (as the reference takes them): through `__index__`
            if let Ok(h) = item
                .call_method0("__index__")
                .and_then(|i| i.extract::<u128>())
            {
                return Ok(h);
            }
        }
        let v = value(item);
        Err(Error::InvalidArgument {
            field: "block_hashes",
            message: format!(
                "a block hash must be an int in [0, 2**128) or bytes, got {} {v}",
                v.kind()
            ),
            value: Some(v),
            index: None,
        })
    })
}
