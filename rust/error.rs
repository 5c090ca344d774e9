//! The core's errors. One enum, converted to Python exceptions in one place
//! (`bindings::to_pyerr`); every variant keeps the numbers that matter.

use std::fmt;

use crate::sched::RequestId;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A configuration value is invalid.
    Config {
        field: &'static str,
        message: String,
    },
    /// A name (policy, preemption mode, load signal, router ...) is not in its registry.
    UnknownName {
        field: &'static str,
        name: String,
        valid: Vec<&'static str>,
    },
    /// An argument is negative, zero where invalid, NaN or infinite.
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    DuplicateRequest {
        id: RequestId,
    },
    UnknownRequest {
        id: RequestId,
    },
    RequestTooLarge {
        id: RequestId,
        need_blocks: u64,
        capacity_blocks: u64,
        message: String,
    },
    /// `update` got a plan that is not the pending one, or `schedule` was called twice.
    StalePlan {
        message: String,
        pending_step: Option<u64>,
    },
    /// Time went backwards.
    Clock {
        now: f64,
        clock: f64,
    },
    /// `update(finished=...)` names a request that did not sample this step.
    InvalidUpdate {
        id: RequestId,
        message: String,
    },
    /// `check_invariants` found an inconsistency (a bug).
    Invariant {
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { message, .. } => write!(f, "{message}"),
            Error::UnknownName { field, name, valid } => {
                write!(f, "unknown {field} {name:?}; valid: {}", valid.join(", "))
            }
            Error::InvalidArgument { message, .. } => write!(f, "{message}"),
            Error::DuplicateRequest { id } => write!(f, "request {id} is already live"),
            Error::UnknownRequest { id } => write!(f, "no live request {id}"),
            Error::RequestTooLarge { message, .. } => write!(f, "{message}"),
            Error::StalePlan { message, .. } => write!(f, "{message}"),
            Error::Clock { now, clock } => {
                write!(
                    f,
                    "time went backwards: now={now} < scheduler clock {clock}"
                )
            }
            Error::InvalidUpdate { message, .. } => write!(f, "{message}"),
            Error::Invariant { message } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for Error {}
