//! The core's errors: one enum for the scheduler, the routers and the simulator, converted to
//! Python exceptions in one place (`bindings::error::to_pyerr`, an exhaustive `match`). Every
//! variant keeps the numbers that matter (the field, the value given, the unknown id, the
//! blocks needed and available ...). A call that returns an error changed nothing.

use std::fmt;

use crate::id::RequestId;

/// A value as the caller gave it, kept in errors (`ConfigError.value`,
/// `InvalidArgumentError.value`) and checked by [`crate::limits`]. The bindings turn a Python
/// object into one of these without judging it; the core decides whether it is valid.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    /// Python's `None` (an optional setting left unset).
    None,
    /// Anything else (or an int too large for 128 bits), by its `repr`.
    Other(String),
}

impl Value {
    /// The kind of value, for "must be an int, got float 2.5".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::None => "NoneType",
            Value::Other(_) => "object",
        }
    }
}

impl fmt::Display for Value {
    /// Python's spelling (`True`, `2.0`, `nan`, `'x'`), as messages quote the caller.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) if x.is_nan() => write!(f, "nan"),
            Value::Float(x) if x.is_infinite() => {
                write!(f, "{}", if *x > 0.0 { "inf" } else { "-inf" })
            }
            Value::Float(x) if x.fract() == 0.0 && x.abs() < 1e16 => write!(f, "{x:.1}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::None => write!(f, "None"),
            Value::Other(repr) => write!(f, "{repr}"),
        }
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i128::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A configuration value is invalid (`value`: what was given, where known).
    Config {
        field: &'static str,
        value: Option<Value>,
        message: String,
    },
    /// A name (policy, preemption mode, load signal, router, preset, setting ...) is not in
    /// its registry.
    UnknownName {
        field: &'static str,
        name: String,
        valid: Vec<&'static str>,
    },
    /// An argument is negative, zero where invalid, NaN, infinite or of the wrong kind
    /// (`value`: what was given, where known; `index`: its position in an array argument).
    InvalidArgument {
        field: &'static str,
        value: Option<Value>,
        index: Option<u64>,
        message: String,
    },
    /// A replica index is not in `[0, num_replicas)`.
    ReplicaOutOfRange {
        index: Value,
        num_replicas: usize,
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
    /// An allocation the caller sized (`field`: the setting or argument that sized it) could
    /// not be made: `bytes` were asked for. Nothing was changed.
    OutOfMemory {
        field: &'static str,
        bytes: u64,
        message: String,
    },
    /// The object is in the middle of another call (a re-entrant call from a finalizer or a
    /// callback run by that call); nothing was done.
    Busy {
        what: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// `Config` without a recorded value.
    pub fn config(field: &'static str, message: impl Into<String>) -> Self {
        Error::Config {
            field,
            value: None,
            message: message.into(),
        }
    }

    /// `InvalidArgument` without a recorded value or index.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            value: None,
            index: None,
            message: message.into(),
        }
    }

    /// `OutOfMemory` for `count` items of `item_bytes` bytes each, sized by `field`.
    pub fn out_of_memory(field: &'static str, what: &str, count: u64, item_bytes: u64) -> Self {
        let bytes = count.saturating_mul(item_bytes);
        Error::OutOfMemory {
            field,
            bytes,
            message: format!(
                "cannot allocate {what}: {count} x {item_bytes} bytes = {bytes} bytes \
                 (sized by {field}); nothing was changed"
            ),
        }
    }

    /// The same error, naming position `i` of an array argument.
    pub fn at(self, i: usize) -> Self {
        match self {
            Error::InvalidArgument {
                field,
                value,
                message,
                ..
            } => Error::InvalidArgument {
                field,
                value,
                index: Some(i as u64),
                message,
            },
            other => other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { message, .. } => write!(f, "{message}"),
            Error::UnknownName { field, name, valid } => {
                write!(f, "unknown {field} {name:?}; valid: {}", valid.join(", "))
            }
            Error::InvalidArgument { message, .. } => write!(f, "{message}"),
            Error::ReplicaOutOfRange {
                index,
                num_replicas,
            } => write!(
                f,
                "replica index {index} is out of range: the router has {num_replicas} replicas"
            ),
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
            Error::OutOfMemory { message, .. } => write!(f, "{message}"),
            Error::Busy { what } => write!(
                f,
                "this {what} is in the middle of another call (a re-entrant call from a finalizer \
                 or callback); nothing was done: call it again after that call returns"
            ),
        }
    }
}

impl std::error::Error for Error {}
