//! The PyO3 bindings: the only module that knows about Python. It converts Python objects
//! into core values ([`convert`]), core errors into `halffull.errors` exceptions (one place:
//! [`error::to_pyerr`]), and plans into numpy arrays and lists. Every check of a value's
//! range lives in the core.

mod config;
mod convert;
mod error;
mod router;
mod sched;
mod sim;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::config::{LarryLoad, Named, PreemptMode, Semantics};

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    config::register(m)?;
    sched::register(m)?;
    router::register(m)?;
    sim::register(m)?;
    // Cargo.toml's version, compiled in: the package metadata may be absent when the source
    // tree is imported from PYTHONPATH (as the vLLM parity step of CI does).
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let py = m.py();
    let limits = PyDict::new(py);
    limits.set_item("MAX_COUNT", crate::limits::MAX_COUNT)?;
    limits.set_item("MAX_TIME", crate::limits::MAX_TIME)?;
    limits.set_item("MAX_RATE", crate::limits::MAX_RATE)?;
    limits.set_item("MAX_BLOCKS", crate::limits::MAX_BLOCKS)?;
    limits.set_item("MAX_REPLICAS", crate::limits::MAX_REPLICAS)?;
    limits.set_item("MAX_SNAPSHOTS", crate::limits::MAX_SNAPSHOTS)?;
    m.add("LIMITS", limits)?;
    m.add("PREEMPTION_MODES", PyTuple::new(py, PreemptMode::names())?)?;
    m.add("LARRY_LOADS", PyTuple::new(py, LarryLoad::names())?)?;
    m.add("SEMANTICS", PyTuple::new(py, Semantics::names())?)?;
    Ok(())
}
