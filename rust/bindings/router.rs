//! Python bindings of the routers. Placeholder: filled in by the routers work.
use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
