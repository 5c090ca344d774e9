//! Python objects to core values, shared by every binding. Nothing here judges a value: a
//! number becomes a [`Value`] for the core to check against [`crate::limits`] (`count`,
//! `time` call those checks); only a request id, which the core takes typed, is refused here
//! when it is neither a str nor an int.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString};

use super::error::IntoPyResult;
use crate::error::{Error, Result, Value};
use crate::hash::{bytes_block_hash, BlockHash};
use crate::id::RequestId;
use crate::limits;

fn repr(ob: &Bound<'_, PyAny>) -> String {
    ob.repr().map(|r| r.to_string()).unwrap_or_default()
}

/// A Python object as a core [`Value`]: bool, int (Python or numpy, by `__index__`), float
/// (anything with `__float__`), str, or anything else by its repr.
pub(crate) fn value(ob: &Bound<'_, PyAny>) -> Value {
    if ob.is_none() {
        return Value::None;
    }
    if ob.is_exact_instance_of::<PyInt>() {
        if let Ok(n) = ob.extract::<i64>() {
            return Value::Int(n.into()); // the common case, first
        }
    }
    if ob.is_instance_of::<PyBool>() {
        return Value::Bool(ob.is_truthy().unwrap_or(false));
    }
    if ob.is_instance_of::<PyInt>()
        || (!ob.is_instance_of::<PyFloat>() && ob.hasattr("__index__").unwrap_or(false))
    {
        return ob
            .extract::<i128>()
            .map_or_else(|_| Value::Other(repr(ob)), Value::Int);
    }
    if let Ok(s) = ob.cast::<PyString>() {
        return Value::Str(s.to_string());
    }
    if let Ok(x) = ob.extract::<f64>() {
        return Value::Float(x);
    }
    Value::Other(repr(ob))
}

/// `None` for a missing or `None` argument, else its [`value`].
pub(crate) fn opt_value(ob: Option<&Bound<'_, PyAny>>) -> Option<Value> {
    ob.filter(|o| !o.is_none()).map(value)
}

/// A request id: a str, or an int (not a bool) that fits in 64 bits.
pub(crate) fn request_id(ob: &Bound<'_, PyAny>) -> Result<RequestId> {
    let bad = |message: String| Error::InvalidArgument {
        field: "request_id",
        value: Some(value(ob)),
        index: None,
        message,
    };
    if let Ok(s) = ob.cast::<PyString>() {
        return Ok(RequestId::Str(Arc::from(s.to_string())));
    }
    if ob.is_instance_of::<PyInt>() && !ob.is_instance_of::<PyBool>() {
        return ob
            .extract::<i64>()
            .map(RequestId::Int)
            .map_err(|_| bad("an int request_id must fit in 64 bits".into()));
    }
    let kind = ob
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    Err(bad(format!(
        "request_id must be a str or an int, got {kind}"
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

/// Iterate a sequence argument (not a str or bytes), mapping each item; an item `f` refuses
/// names its position.
fn each<T>(
    field: &'static str,
    ob: &Bound<'_, PyAny>,
    mut f: impl FnMut(&Bound<'_, PyAny>) -> Result<T>,
) -> Result<Vec<T>> {
    let not_a_sequence = |message: String| Error::InvalidArgument {
        field,
        value: Some(value(ob)),
        index: None,
        message,
    };
    if ob.is_instance_of::<PyString>() || ob.is_instance_of::<PyBytes>() {
        return Err(not_a_sequence(format!(
            "{field} must be a sequence, not a str or bytes"
        )));
    }
    let iter = ob
        .try_iter()
        .map_err(|e| not_a_sequence(format!("{field} must be a sequence: {e}")))?;
    let mut out = Vec::with_capacity(ob.len().unwrap_or(0));
    for (i, item) in iter.enumerate() {
        let item = item.map_err(|e| not_a_sequence(format!("iterating {field} raised: {e}")))?;
        out.push(f(&item).map_err(|e| e.at(i))?);
    }
    Ok(out)
}

/// Token ids: a sequence of ints in `[0, 2**32)`.
pub(crate) fn token_ids(ob: &Bound<'_, PyAny>) -> Result<Vec<u32>> {
    each("prompt_token_ids", ob, |item| match value(item) {
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
    })
}

/// Precomputed block hashes: ints in `[0, 2**128)` taken as they are, or bytes (vLLM's
/// SHA-256 digests, say), hashed to 128 bits ([`crate::hash::bytes_block_hash`]).
pub(crate) fn block_hashes(ob: &Bound<'_, PyAny>) -> Result<Vec<BlockHash>> {
    each("block_hashes", ob, |item| {
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
