//! The one conversion from core errors to `halffull.errors` exceptions. The `match` has no
//! catch-all arm, so a new variant does not compile until it is mapped here; each arm sets
//! exactly attributes its class declares (`ATTRIBUTES` in `errors.py`).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::error::{Error, Value};
use crate::id::RequestId;

/// Core results to Python results: `result.py(py)?`.
pub(crate) trait IntoPyResult<T> {
    fn py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for crate::error::Result<T> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_pyerr(py, e))
    }
}

pub(crate) fn id_to_py(py: Python<'_>, id: &RequestId) -> PyResult<Py<PyAny>> {
    match id {
        RequestId::Int(n) => n.into_py_any(py),
        RequestId::Str(s) => s.as_ref().into_py_any(py),
    }
}

fn value_to_py(py: Python<'_>, v: &Value) -> PyResult<Py<PyAny>> {
    match v {
        Value::Bool(b) => b.into_py_any(py),
        Value::Int(n) => n.into_py_any(py),
        Value::Float(x) => x.into_py_any(py),
        Value::Str(s) | Value::Other(s) => s.into_py_any(py),
        Value::None => Ok(py.None()),
    }
}

/// An exception class (a name in `halffull.errors`) and its attributes.
type ClassAndAttrs = (&'static str, Vec<(&'static str, Py<PyAny>)>);

fn class_and_attrs(py: Python<'_>, e: &Error) -> PyResult<ClassAndAttrs> {
    let opt = |v: &Option<Value>| -> PyResult<Py<PyAny>> {
        v.as_ref().map_or(Ok(py.None()), |v| value_to_py(py, v))
    };
    Ok(match e {
        Error::Config {
            field,
            value,
            message: _,
        } => (
            "ConfigError",
            vec![("field", field.into_py_any(py)?), ("value", opt(value)?)],
        ),
        Error::UnknownName { field, name, valid } => (
            "ConfigError",
            vec![
                ("field", field.into_py_any(py)?),
                ("value", name.into_py_any(py)?),
                ("valid", PyTuple::new(py, valid)?.into_any().unbind()),
            ],
        ),
        Error::InvalidArgument {
            field,
            value,
            index,
            message: _,
        } => (
            "InvalidArgumentError",
            vec![
                ("field", field.into_py_any(py)?),
                ("value", opt(value)?),
                ("index", index.into_py_any(py)?),
            ],
        ),
        Error::ReplicaOutOfRange {
            index,
            num_replicas,
        } => (
            "InvalidArgumentError",
            vec![
                ("field", "index".into_py_any(py)?),
                ("value", value_to_py(py, index)?),
                ("num_replicas", num_replicas.into_py_any(py)?),
            ],
        ),
        Error::DuplicateRequest { id } => (
            "DuplicateRequestError",
            vec![("request_id", id_to_py(py, id)?)],
        ),
        Error::UnknownRequest { id } => (
            "UnknownRequestError",
            vec![("request_id", id_to_py(py, id)?)],
        ),
        Error::RequestTooLarge {
            id,
            need_blocks,
            capacity_blocks,
            message: _,
        } => (
            "RequestTooLargeError",
            vec![
                ("request_id", id_to_py(py, id)?),
                ("need_blocks", need_blocks.into_py_any(py)?),
                ("capacity_blocks", capacity_blocks.into_py_any(py)?),
            ],
        ),
        Error::StalePlan {
            message: _,
            pending_step,
        } => (
            "StalePlanError",
            vec![("pending_step", pending_step.into_py_any(py)?)],
        ),
        Error::Clock { now, clock } => (
            "ClockError",
            vec![
                ("now", now.into_py_any(py)?),
                ("clock", clock.into_py_any(py)?),
            ],
        ),
        Error::InvalidUpdate { id, message: _ } => (
            "InvalidUpdateError",
            vec![("request_id", id_to_py(py, id)?)],
        ),
        Error::Invariant { message: _ } => ("InvariantError", vec![]),
        Error::OutOfMemory {
            field,
            bytes,
            message: _,
        } => (
            "OutOfMemoryError",
            vec![
                ("field", field.into_py_any(py)?),
                ("bytes", bytes.into_py_any(py)?),
            ],
        ),
        Error::Busy { what } => ("BusyError", vec![("what", what.into_py_any(py)?)]),
    })
}

/// The one conversion point from core errors to Python exceptions.
pub(crate) fn to_pyerr(py: Python<'_>, e: Error) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let (class, attrs) = class_and_attrs(py, &e)?;
        let cls = py.import("halffull.errors")?.getattr(class)?;
        let kwargs = PyDict::new(py);
        for (k, v) in attrs {
            kwargs.set_item(k, v)?;
        }
        Ok(PyErr::from_value(
            cls.call((e.to_string(),), Some(&kwargs))?,
        ))
    };
    build().unwrap_or_else(|err| err)
}
