//! The engine scheduler's configuration: one type, the source of truth for the Rust core,
//! the Python class (`halffull.SchedulerConfig` is `bindings::config::PySchedulerConfig`
//! around it), the simulator's engine settings and the torch engine. Defaults are written
//! once ([`SchedulerConfig::new`]), values are checked once ([`SchedulerConfig::set`] per
//! field, [`SchedulerConfig::validate`] for the whole), and names (policy, preemption mode,
//! load signal) are parsed once into enums, so the hot loop compares enums.

use crate::error::{Error, Result, Value};
use crate::limits::{self, Blame, MAX_BLOCKS, MAX_COUNT, MAX_RATE};

/// An enum with a registry of names: one table of `(variant, name)`, in registry order.
pub trait Named: Copy + PartialEq + 'static {
    /// The config field that holds it (names it in errors).
    const FIELD: &'static str;
    const REGISTRY: &'static [(Self, &'static str)];

    fn name(self) -> &'static str {
        Self::REGISTRY
            .iter()
            .find(|(v, _)| *v == self)
            .map_or("", |(_, n)| *n)
    }

    fn names() -> Vec<&'static str> {
        Self::REGISTRY.iter().map(|(_, n)| *n).collect()
    }

    /// `UnknownName` (listing the valid names) if `name` is not in the registry.
    fn parse(name: &str) -> Result<Self> {
        Self::REGISTRY
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(v, _)| *v)
            .ok_or_else(|| Error::UnknownName {
                field: Self::FIELD,
                name: name.to_string(),
                valid: Self::names(),
            })
    }
}

/// `Display` as the registered name.
macro_rules! display_by_name {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    )*};
}
display_by_name!(PreemptMode, LarryLoad, PolicyKind);

/// Every engine policy. To add one: implement `sched::policy::Policy`, add a variant here,
/// its name to the registry below, and an arm to `sched::policy::make_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    Fcfs,
    Priority,
    NoPreempt,
    Sjf,
    OracleSrpt,
    Larry,
}

impl Named for PolicyKind {
    const FIELD: &'static str = "policy";
    const REGISTRY: &'static [(Self, &'static str)] = &[
        (PolicyKind::Fcfs, "fcfs"),
        (PolicyKind::Priority, "priority"),
        (PolicyKind::NoPreempt, "no_preempt"),
        (PolicyKind::Sjf, "sjf"),
        (PolicyKind::OracleSrpt, "oracle_srpt"),
        (PolicyKind::Larry, "larry"),
    ];
}

/// What happens to a preempted request's KV blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PreemptMode {
    /// Freed; the request is recomputed from its prompt.
    Recompute,
    /// Copied to CPU blocks (falls back to recompute when they run out).
    Swap,
}

impl Named for PreemptMode {
    const FIELD: &'static str = "preemption_mode";
    const REGISTRY: &'static [(Self, &'static str)] = &[
        (PreemptMode::Recompute, "recompute"),
        (PreemptMode::Swap, "swap"),
    ];
}

impl PreemptMode {
    pub fn as_str(self) -> &'static str {
        self.name()
    }
}

/// LARRY's load signal L.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LarryLoad {
    /// The number of waiting requests.
    Waiting,
    /// Waiting + running + swapped.
    Outstanding,
}

impl Named for LarryLoad {
    const FIELD: &'static str = "larry_load";
    const REGISTRY: &'static [(Self, &'static str)] = &[
        (LarryLoad::Waiting, "waiting"),
        (LarryLoad::Outstanding, "outstanding"),
    ];
}

/// Block size when none is given.
pub const DEFAULT_BLOCK_SIZE: u64 = 16;

/// Capacity, limits and policy of one engine's scheduler.
///
/// - `num_gpu_blocks` KV blocks of `block_size` tokens each on the GPU; `num_cpu_blocks`
///   host blocks for swap (0: swap always falls back to recompute).
/// - `max_num_seqs` seats (running requests), `max_num_batched_tokens` tokens per step.
/// - `watermark`: fraction of GPU blocks kept free when admitting new work, so running
///   requests can grow (ignored when nothing runs, so a lone request is always admissible).
/// - `larry_alpha` (tokens/s) trades waiting time against memory demand in LARRY;
///   `larry_load` is LARRY's load signal.
/// - `sjf_aging` (tokens/s): SJF's priority of a request improves by this much per second
///   waited, so long requests are eventually served.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub num_gpu_blocks: u64,
    pub block_size: u64,
    pub num_cpu_blocks: u64,
    pub max_num_seqs: u64,
    pub max_num_batched_tokens: u64,
    pub policy: PolicyKind,
    pub preemption_mode: PreemptMode,
    pub watermark: f64,
    pub larry_alpha: f64,
    pub larry_load: LarryLoad,
    pub sjf_aging: f64,
}

/// The field names, in declaration order (also the positional order in Python).
pub const FIELDS: &[&str] = &[
    "num_gpu_blocks",
    "block_size",
    "num_cpu_blocks",
    "max_num_seqs",
    "max_num_batched_tokens",
    "policy",
    "preemption_mode",
    "watermark",
    "larry_alpha",
    "larry_load",
    "sjf_aging",
];

/// A field's value, typed (for `to_dict`, getters and `repr`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue {
    Int(u64),
    Float(f64),
    Name(&'static str),
}

impl SchedulerConfig {
    /// The defaults, with the two sizes every engine must choose.
    pub fn new(num_gpu_blocks: u64, block_size: u64) -> Self {
        SchedulerConfig {
            num_gpu_blocks,
            block_size,
            num_cpu_blocks: 0,
            max_num_seqs: 256,
            max_num_batched_tokens: 8192,
            policy: PolicyKind::Fcfs,
            preemption_mode: PreemptMode::Recompute,
            watermark: 0.01,
            larry_alpha: 1000.0,
            larry_load: LarryLoad::Waiting,
            sjf_aging: 10.0,
        }
    }

    /// Build from `(field, value)` pairs over the defaults; `num_gpu_blocks` is required.
    /// Unknown fields are a `ConfigError` listing the valid ones.
    pub fn from_values<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Result<Self> {
        let mut cfg = SchedulerConfig::new(0, DEFAULT_BLOCK_SIZE);
        let mut has_blocks = false;
        for (field, value) in pairs {
            has_blocks |= field == "num_gpu_blocks";
            cfg.set(field, &value)?;
        }
        if !has_blocks {
            return Err(Error::config(
                "num_gpu_blocks",
                "num_gpu_blocks is required",
            ));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// A copy with some fields changed (Python's `replace(**changes)`), validated.
    pub fn with_values<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> Result<Self> {
        let mut cfg = self.clone();
        for (field, value) in pairs {
            cfg.set(field, &value)?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Set one field from a caller's value, checking its kind and range.
    pub fn set(&mut self, field: &str, v: &Value) -> Result<()> {
        let count = |field: &'static str, min: u64, max: u64| {
            limits::count_in(Blame::Config, field, v, min, max)
        };
        let rate =
            |field: &'static str| limits::float_in(Blame::Config, field, v, 0.0, MAX_RATE, false);
        match field {
            "num_gpu_blocks" => self.num_gpu_blocks = count("num_gpu_blocks", 1, MAX_BLOCKS)?,
            "block_size" => self.block_size = count("block_size", 1, MAX_COUNT - 1)?,
            "num_cpu_blocks" => self.num_cpu_blocks = count("num_cpu_blocks", 0, MAX_BLOCKS)?,
            "max_num_seqs" => self.max_num_seqs = count("max_num_seqs", 1, MAX_COUNT - 1)?,
            "max_num_batched_tokens" => {
                self.max_num_batched_tokens = count("max_num_batched_tokens", 1, MAX_COUNT - 1)?
            }
            "policy" => self.policy = parse_name(v)?,
            "preemption_mode" => self.preemption_mode = parse_name(v)?,
            "larry_load" => self.larry_load = parse_name(v)?,
            "watermark" => {
                self.watermark = limits::float_in(Blame::Config, "watermark", v, 0.0, 1.0, true)?
            }
            "larry_alpha" => self.larry_alpha = rate("larry_alpha")?,
            "sjf_aging" => self.sjf_aging = rate("sjf_aging")?,
            other => {
                return Err(Error::UnknownName {
                    field: "SchedulerConfig setting",
                    name: other.to_string(),
                    valid: FIELDS.to_vec(),
                })
            }
        }
        Ok(())
    }

    /// Check the whole configuration (each field's range, and that the GPU cache holds
    /// fewer than 2**40 tokens). A config built field by field through [`Self::set`] only
    /// needs the last check, but one built as a Rust literal needs them all.
    pub fn validate(&self) -> Result<()> {
        for field in FIELDS {
            let value = match self.get(field) {
                Some(FieldValue::Int(n)) => Value::from(n),
                Some(FieldValue::Float(x)) => Value::Float(x),
                Some(FieldValue::Name(s)) => Value::Str(s.to_string()),
                None => continue,
            };
            self.clone().set(field, &value)?;
        }
        if self.num_gpu_blocks.saturating_mul(self.block_size) >= MAX_COUNT {
            return Err(Error::Config {
                field: "num_gpu_blocks",
                value: Some(Value::from(self.num_gpu_blocks)),
                message: "num_gpu_blocks * block_size must be < 2**40 tokens".into(),
            });
        }
        Ok(())
    }

    /// A field by name (`None` if there is no such field).
    pub fn get(&self, field: &str) -> Option<FieldValue> {
        Some(match field {
            "num_gpu_blocks" => FieldValue::Int(self.num_gpu_blocks),
            "block_size" => FieldValue::Int(self.block_size),
            "num_cpu_blocks" => FieldValue::Int(self.num_cpu_blocks),
            "max_num_seqs" => FieldValue::Int(self.max_num_seqs),
            "max_num_batched_tokens" => FieldValue::Int(self.max_num_batched_tokens),
            "policy" => FieldValue::Name(self.policy.name()),
            "preemption_mode" => FieldValue::Name(self.preemption_mode.name()),
            "watermark" => FieldValue::Float(self.watermark),
            "larry_alpha" => FieldValue::Float(self.larry_alpha),
            "larry_load" => FieldValue::Name(self.larry_load.name()),
            "sjf_aging" => FieldValue::Float(self.sjf_aging),
            _ => return None,
        })
    }

    /// GPU blocks kept free when admitting: `floor(watermark * num_gpu_blocks)`.
    pub fn watermark_blocks(&self) -> u64 {
        (self.watermark * self.num_gpu_blocks as f64) as u64
    }

    pub fn capacity_tokens(&self) -> u64 {
        self.num_gpu_blocks * self.block_size
    }
}

fn parse_name<T: Named>(v: &Value) -> Result<T> {
    match v {
        Value::Str(s) => T::parse(s),
        other => Err(Error::Config {
            field: T::FIELD,
            value: Some(other.clone()),
            message: format!(
                "{} must be a str, one of {}; got {} {other}",
                T::FIELD,
                T::names().join(", "),
                other.kind()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(kv: &[(&'static str, Value)]) -> Vec<(&'static str, Value)> {
        kv.to_vec()
    }

    #[test]
    fn builds_from_values_over_the_defaults() {
        let c = SchedulerConfig::from_values(pairs(&[
            ("num_gpu_blocks", Value::Int(8)),
            ("policy", Value::Str("larry".into())),
            ("watermark", Value::Int(0)),
        ]))
        .unwrap();
        assert_eq!(c.policy, PolicyKind::Larry);
        assert_eq!(c.block_size, DEFAULT_BLOCK_SIZE);
        assert_eq!(c.watermark, 0.0);
        assert_eq!(
            c.with_values(pairs(&[("block_size", Value::Int(4))]))
                .unwrap()
                .block_size,
            4
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let bad = |field: &'static str, v: Value| {
            SchedulerConfig::from_values(pairs(&[("num_gpu_blocks", Value::Int(8)), (field, v)]))
                .unwrap_err()
        };
        assert!(matches!(
            bad("block_size", Value::Int(0)),
            Error::Config {
                field: "block_size",
                ..
            }
        ));
        assert!(matches!(
            bad("num_cpu_blocks", Value::Int(-1)),
            Error::Config {
                field: "num_cpu_blocks",
                ..
            }
        ));
        assert!(matches!(
            bad("watermark", Value::Float(1.0)),
            Error::Config {
                field: "watermark",
                ..
            }
        ));
        assert!(matches!(
            bad("policy", Value::Str("lary".into())),
            Error::UnknownName {
                field: "policy",
                ..
            }
        ));
        assert!(matches!(
            bad("larry_load", Value::Int(1)),
            Error::Config {
                field: "larry_load",
                ..
            }
        ));
        assert!(
            matches!(bad("typo", Value::Int(1)), Error::UnknownName { ref valid, .. } if valid == FIELDS)
        );
        assert!(matches!(
            SchedulerConfig::from_values(Vec::new()),
            Err(Error::Config {
                field: "num_gpu_blocks",
                ..
            })
        ));
        assert!(SchedulerConfig::new(1 << 30, 1 << 20).validate().is_err());
    }

    #[test]
    fn every_variant_is_registered() {
        for (v, n) in PreemptMode::REGISTRY {
            assert_eq!(PreemptMode::parse(n), Ok(*v));
        }
        for (v, n) in LarryLoad::REGISTRY {
            assert_eq!(LarryLoad::parse(n), Ok(*v));
        }
        for (v, n) in PolicyKind::REGISTRY {
            assert_eq!(PolicyKind::parse(n), Ok(*v));
        }
    }
}
