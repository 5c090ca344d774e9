//! The PyO3 bindings: the only module that knows about Python. It converts arguments into
//! core types, core errors into `halffull.errors` exceptions (one place: [`to_pyerr`]), and
//! plans into numpy arrays and lists.

mod router;
mod sched;
mod sim;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::error::Error;
use crate::sched::RequestId;

/// Build an instance of `halffull.errors.<class>` with `attrs` as attributes.
pub(crate) fn py_error(
    py: Python<'_>,
    class: &str,
    message: &str,
    attrs: &[(&str, Py<PyAny>)],
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = py.import("halffull.errors")?.getattr(class)?;
        let kwargs = PyDict::new(py);
        for (k, v) in attrs {
            kwargs.set_item(*k, v.bind(py))?;
        }
        Ok(PyErr::from_value(cls.call((message,), Some(&kwargs))?))
    };
    build().unwrap_or_else(|e| e)
}

pub(crate) fn id_to_py(py: Python<'_>, id: &RequestId) -> PyResult<Py<PyAny>> {
    Ok(match id {
        RequestId::Int(n) => n.into_pyobject(py)?.into_any().unbind(),
        RequestId::Str(s) => s.as_ref().into_pyobject(py)?.into_any().unbind(),
    })
}

pub(crate) fn obj<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> Py<PyAny> {
    match v.into_bound_py_any(py) {
        Ok(b) => b.unbind(),
        Err(_) => py.None(),
    }
}

/// `ConfigError` for a name missing from its registry, with `field`, `value` and `valid`.
pub(crate) fn unknown_name(
    py: Python<'_>,
    msg: &str,
    field: &str,
    name: &str,
    valid: &[&str],
) -> PyErr {
    let valid = PyTuple::new(py, valid.iter())
        .map(|t| t.into_any().unbind())
        .unwrap_or_else(|_| py.None());
    py_error(
        py,
        "ConfigError",
        msg,
        &[
            ("field", obj(py, field)),
            ("value", obj(py, name)),
            ("valid", valid),
        ],
    )
}

/// The one conversion point from core errors to Python exceptions.
pub(crate) fn to_pyerr(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    let rid = |id: &RequestId| id_to_py(py, id).unwrap_or_else(|_| py.None());
    match &e {
        Error::Config { field, .. } => {
            py_error(py, "ConfigError", &msg, &[("field", obj(py, *field))])
        }
        Error::UnknownName { field, name, valid } => unknown_name(py, &msg, field, name, valid),
        Error::InvalidArgument { field, .. } => py_error(
            py,
            "InvalidArgumentError",
            &msg,
            &[("field", obj(py, *field))],
        ),
        Error::DuplicateRequest { id } => py_error(
            py,
            "DuplicateRequestError",
            &msg,
            &[("request_id", rid(id))],
        ),
        Error::UnknownRequest { id } => {
            py_error(py, "UnknownRequestError", &msg, &[("request_id", rid(id))])
        }
        Error::RequestTooLarge {
            id,
            need_blocks,
            capacity_blocks,
            ..
        } => py_error(
            py,
            "RequestTooLargeError",
            &msg,
            &[
                ("request_id", rid(id)),
                ("need_blocks", obj(py, *need_blocks)),
                ("capacity_blocks", obj(py, *capacity_blocks)),
            ],
        ),
        Error::StalePlan { pending_step, .. } => py_error(
            py,
            "StalePlanError",
            &msg,
            &[("pending_step", obj(py, *pending_step))],
        ),
        Error::Clock { now, clock } => py_error(
            py,
            "ClockError",
            &msg,
            &[("now", obj(py, *now)), ("clock", obj(py, *clock))],
        ),
        Error::InvalidUpdate { id, .. } => {
            py_error(py, "InvalidUpdateError", &msg, &[("request_id", rid(id))])
        }
        Error::Invariant { .. } => py_error(py, "InvariantError", &msg, &[]),
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    sched::register(m)?;
    router::register(m)?;
    sim::register(m)?;
    let limits = PyDict::new(m.py());
    limits.set_item("MAX_COUNT", crate::limits::MAX_COUNT)?;
    limits.set_item("MAX_TIME", crate::limits::MAX_TIME)?;
    limits.set_item("MAX_RATE", crate::limits::MAX_RATE)?;
    limits.set_item("MAX_BLOCKS", crate::limits::MAX_BLOCKS)?;
    limits.set_item("MAX_REPLICAS", crate::limits::MAX_REPLICAS)?;
    m.add("LIMITS", limits)?;
    Ok(())
}
