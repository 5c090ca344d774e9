//! The routers' errors: one enum, converted to Python exceptions in one place
//! (`bindings::router::to_pyerr`). A call that returns an error changed nothing.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum RouterError {
    /// The policy name is not in the registry (`policy_names()`).
    UnknownPolicy {
        name: String,
        valid: Vec<&'static str>,
    },
    /// A configuration value is invalid (zero replicas, zero blocks, a non-finite `beta` ...).
    Config {
        field: &'static str,
        message: String,
    },
    /// An argument is out of range (`value` is what was given).
    InvalidArgument {
        field: &'static str,
        value: u64,
        message: String,
    },
    /// A replica index is not in `[0, num_replicas)`.
    ReplicaOutOfRange { index: u64, num_replicas: usize },
    /// `route` got the id of a request that is still live.
    DuplicateRequest { id: String },
    /// No live request has this id (never routed, or already finished or aborted).
    UnknownRequest { id: String },
    /// `check_invariants` found the bookkeeping inconsistent (a bug).
    Invariant { message: String },
}

pub type Result<T> = std::result::Result<T, RouterError>;

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouterError::UnknownPolicy { name, valid } => {
                write!(
                    f,
                    "unknown router policy {name:?}; valid: {}",
                    valid.join(", ")
                )
            }
            RouterError::Config { message, .. } => write!(f, "{message}"),
            RouterError::InvalidArgument { message, .. } => write!(f, "{message}"),
            RouterError::ReplicaOutOfRange {
                index,
                num_replicas,
            } => write!(
                f,
                "replica index {index} is out of range: the router has {num_replicas} replicas"
            ),
            RouterError::DuplicateRequest { id } => write!(f, "request {id} is already live"),
            RouterError::UnknownRequest { id } => write!(f, "no live request {id}"),
            RouterError::Invariant { message } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for RouterError {}
