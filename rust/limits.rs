//! The validated ranges, in one place, and the checks against them. The core checks against
//! these; the bindings export them as `halffull._core.LIMITS`, and `halffull.limits`
//! re-exports them for the reference and the pure-Python modules.
//!
//! The checks take a [`Value`] (what the caller gave, unjudged) or a plain number, and say
//! whom to blame: a configuration ([`Blame::Config`], `ConfigError`) or a call's argument
//! ([`Blame::Argument`], `InvalidArgumentError`). Every range check of the crate goes
//! through them, so a bound and its message are written once.

use crate::error::{Error, Result, Value};

/// Largest count of tokens, blocks or requests an argument may hold.
pub const MAX_COUNT: u64 = 1 << 40;
/// Largest time in seconds (arrivals, `now`): keeps every key exact in an f64.
pub const MAX_TIME: f64 = 1e12;
/// Largest rate-like parameter (`larry_alpha`, `sjf_aging`: tokens per second).
pub const MAX_RATE: f64 = 1e9;
/// Largest number of blocks in one pool: block ids are 32-bit and one id is kept unused.
pub const MAX_BLOCKS: u64 = u32::MAX as u64 - 1;
/// Largest number of replicas behind one router.
pub const MAX_REPLICAS: usize = 1 << 16;

/// Who gave the bad value: a configuration or a call's argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Config,
    Argument,
}

impl Blame {
    pub fn error(self, field: &'static str, value: &Value, message: String) -> Error {
        let value = Some(value.clone());
        match self {
            Blame::Config => Error::Config {
                field,
                value,
                message,
            },
            Blame::Argument => Error::InvalidArgument {
                field,
                value,
                index: None,
                message,
            },
        }
    }
}

fn bound(v: i128) -> String {
    match v {
        v if v == i128::from(MAX_COUNT) => "2**40".into(),
        v if v == i128::from(u64::MAX) => "2**64 - 1".into(),
        v => v.to_string(),
    }
}

/// An int (not a bool) in `[lo, hi]`.
pub fn int_in(blame: Blame, field: &'static str, v: &Value, lo: i128, hi: i128) -> Result<i128> {
    match v {
        Value::Int(n) if (lo..=hi).contains(n) => Ok(*n),
        Value::Int(_) => Err(blame.error(
            field,
            v,
            format!("{field} must be in [{}, {}], got {v}", bound(lo), bound(hi)),
        )),
        _ => Err(blame.error(
            field,
            v,
            format!("{field} must be an int, got {} {v}", v.kind()),
        )),
    }
}

/// A count: an int in `[min, max]`.
pub fn count_in(blame: Blame, field: &'static str, v: &Value, min: u64, max: u64) -> Result<u64> {
    int_in(blame, field, v, i128::from(min), i128::from(max)).map(|n| n as u64)
}

/// A call's count argument: an int in `[min, 2**40]`.
pub fn count(field: &'static str, v: &Value, min: u64) -> Result<u64> {
    count_in(Blame::Argument, field, v, min, MAX_COUNT)
}

/// A configured count (blocks, tokens, a prior length): an int in `[1, 2**40]`.
pub fn config_count(field: &'static str, v: &Value) -> Result<u64> {
    count_in(Blame::Config, field, v, 1, MAX_COUNT)
}

/// A number of replicas (`field`: how the caller names it): an int in `[1, 2**16]`.
pub fn replicas(field: &'static str, v: &Value) -> Result<usize> {
    count_in(Blame::Config, field, v, 1, MAX_REPLICAS as u64).map(|n| n as usize)
}

/// A random seed: an int in `[0, 2**64)`.
pub fn seed(v: &Value) -> Result<u64> {
    count_in(Blame::Config, "seed", v, 0, u64::MAX)
}

/// A request's priority: any 64-bit int (smaller is served first by `priority`).
pub fn priority(v: &Value) -> Result<i64> {
    int_in(
        Blame::Argument,
        "priority",
        v,
        i64::MIN.into(),
        i64::MAX.into(),
    )
    .map(|p| p as i64)
}

/// A count the core was given as a number: in `[min, 2**40]`.
pub fn check_count(field: &'static str, v: u64, min: u64) -> Result<u64> {
    count(field, &Value::from(v), min)
}

/// A number (an int or a float, not a bool), finite and in `[lo, hi]` (`[lo, hi)` if
/// `hi_open`).
pub fn float_in(
    blame: Blame,
    field: &'static str,
    v: &Value,
    lo: f64,
    hi: f64,
    hi_open: bool,
) -> Result<f64> {
    let x = match v {
        Value::Float(x) => *x,
        Value::Int(n) => *n as f64,
        _ => {
            return Err(blame.error(
                field,
                v,
                format!("{field} must be a number, got {} {v}", v.kind()),
            ))
        }
    };
    let inside = x.is_finite() && x >= lo && (x < hi || (!hi_open && x == hi));
    if !inside {
        let close = if hi_open { ')' } else { ']' };
        return Err(blame.error(
            field,
            v,
            format!(
                "{field} must be finite and in [{}, {}{close}, got {v}",
                Value::Float(lo),
                Value::Float(hi)
            ),
        ));
    }
    Ok(x)
}

/// A flag: a bool (not an int).
pub fn flag(blame: Blame, field: &'static str, v: &Value) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        _ => Err(blame.error(
            field,
            v,
            format!("{field} must be a bool, got {} {v}", v.kind()),
        )),
    }
}

/// A number (an int or a float, not a bool), any value; the caller checks the range.
pub fn number(blame: Blame, field: &'static str, v: &Value) -> Result<f64> {
    match v {
        Value::Float(x) => Ok(*x),
        Value::Int(n) => Ok(*n as f64),
        _ => Err(blame.error(
            field,
            v,
            format!("{field} must be a number, got {} {v}", v.kind()),
        )),
    }
}

/// A replica index: an int in `[0, num_replicas)`.
pub fn replica_index(v: &Value, num_replicas: usize) -> Result<usize> {
    match v {
        Value::Int(n) if *n >= 0 && *n < num_replicas as i128 => Ok(*n as usize),
        Value::Int(_) => Err(Error::ReplicaOutOfRange {
            index: v.clone(),
            num_replicas,
        }),
        _ => Err(Blame::Argument.error(
            "index",
            v,
            format!("index must be an int, got {} {v}", v.kind()),
        )),
    }
}

/// A time argument in seconds: finite and in `[0, 1e12]`.
pub fn time(field: &'static str, v: &Value) -> Result<f64> {
    float_in(Blame::Argument, field, v, 0.0, MAX_TIME, false).map_err(|e| match e {
        Error::InvalidArgument { value, .. } => Error::InvalidArgument {
            field,
            index: None,
            message: format!("{field} must be finite and in [0, 1e12] seconds, got {v}"),
            value,
        },
        other => other,
    })
}

/// A time the core was given as a number.
pub fn check_time(field: &'static str, t: f64) -> Result<f64> {
    time(field, &Value::Float(t))
}

/// Largest number of replica snapshots one simulation may push (`snapshot_interval` over
/// the trace's span of arrivals): beyond it a run would take hours, or never end.
pub const MAX_SNAPSHOTS: u64 = 10_000_000;

/// Can `bytes` be had in one allocation? Asked for and given back at once, untouched: under
/// a memory limit (`ulimit -v`), or under Linux's default overcommit for a request beyond
/// RAM and swap, it is refused here, where several smaller allocations would each be granted
/// and the process killed when it touches them. Callers then raise `OutOfMemory` before
/// building anything.
pub fn can_allocate(bytes: u64) -> bool {
    let mut probe: Vec<u8> = Vec::new();
    usize::try_from(bytes).is_ok_and(|b| probe.try_reserve_exact(b).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_field_and_keep_the_value() {
        let e = count("prompt_tokens", &Value::Int(-1), 1).unwrap_err();
        assert_eq!(
            e,
            Error::InvalidArgument {
                field: "prompt_tokens",
                value: Some(Value::Int(-1)),
                index: None,
                message: "prompt_tokens must be in [1, 2**40], got -1".into(),
            }
        );
        assert!(count("n", &Value::Bool(true), 0).is_err());
        assert!(count("n", &Value::Float(2.0), 0).is_err());
        assert_eq!(count("n", &Value::Int(1 << 40), 0), Ok(1 << 40));
        assert!(check_time("now", f64::NAN).is_err());
        assert!(check_time("now", -1.0).is_err());
        assert_eq!(check_time("now", 3.0), Ok(3.0));
        let w = float_in(
            Blame::Config,
            "watermark",
            &Value::Float(1.0),
            0.0,
            1.0,
            true,
        );
        assert!(matches!(
            w,
            Err(Error::Config {
                field: "watermark",
                ..
            })
        ));
        assert_eq!(
            float_in(Blame::Config, "w", &Value::Int(0), 0.0, 1.0, true),
            Ok(0.0)
        );
    }
}
