//! The engine scheduler's configuration: one type, the source of truth for the Rust core,
//! the Python class (`halffull.SchedulerConfig` is `bindings::config::PySchedulerConfig`
//! around it), the simulator's engine settings and the torch engine. Defaults are written
//! once ([`SchedulerConfig::new`]), values are checked once ([`SchedulerConfig::set`] per
//! field, [`SchedulerConfig::validate`] for the whole), and names (policy, preemption mode,
//! load signal) are parsed once into enums, so the hot loop compares enums.

use crate::error::{Error, Result, Value};
use crate::limits::{self, Blame, MAX_BLOCKS, MAX_COUNT, MAX_RATE, MAX_TIME};

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
display_by_name!(PreemptMode, LarryLoad, PolicyKind, Semantics);

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
    LarryTail,
    LarrySlack,
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
        (PolicyKind::LarryTail, "larry_tail"),
        (PolicyKind::LarrySlack, "larry_slack"),
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

/// Which scheduler's decisions the step reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Semantics {
    /// halffull's own model (DESIGN §4): the whole prompt's blocks at admission, a FIFO free
    /// queue, swap or recompute.
    Halffull,
    /// vLLM 0.33's V1 scheduler (`/work/wt/vllm/SPEC.md`): block 0 is the null block, blocks
    /// per chunk, a LIFO free queue, recompute only.
    VllmV1,
}

impl Named for Semantics {
    const FIELD: &'static str = "semantics";
    const REGISTRY: &'static [(Self, &'static str)] = &[
        (Semantics::Halffull, "halffull"),
        (Semantics::VllmV1, "vllm_v1"),
    ];
}

impl Semantics {
    /// The watermark when none is configured: halffull keeps 1% free, vLLM 0.33 none.
    pub fn default_watermark(self) -> f64 {
        match self {
            Semantics::Halffull => 0.01,
            Semantics::VllmV1 => 0.0,
        }
    }
}

/// `larry_tail`'s deadline (s) when none is given (chosen on the shared traces: README).
pub const DEFAULT_LARRY_DEADLINE: f64 = 30.0;

/// `larry_slack`'s slack when none is given (chosen on the shared traces: README).
pub const DEFAULT_LARRY_SLACK: f64 = 0.75;

/// Block size when none is given.
pub const DEFAULT_BLOCK_SIZE: u64 = 16;

/// Capacity, limits and policy of one engine's scheduler.
///
/// - `num_gpu_blocks` KV blocks of `block_size` tokens each on the GPU; `num_cpu_blocks`
///   host blocks for swap (0: swap always falls back to recompute).
/// - `max_num_seqs` seats (running requests), `max_num_batched_tokens` tokens per step.
/// - `watermark`: fraction of GPU blocks kept free when admitting new work, so running
///   requests can grow (ignored when nothing runs, so a lone request is always admissible).
///   `None`: the semantics' default ([`Semantics::default_watermark`]); read it with
///   [`SchedulerConfig::watermark`].
/// - `larry_alpha` (tokens/s) trades waiting time against memory demand in LARRY;
///   `larry_load` is LARRY's load signal.
/// - `sjf_aging` (tokens/s): SJF's priority of a request improves by this much per second
///   waited, so long requests are eventually served.
/// - `semantics`: whose decisions the step makes ([`Semantics`]); `vllm_v1` does not swap
///   (`preemption_mode = "recompute"`, `num_cpu_blocks = 0`), and there `num_gpu_blocks` is
///   vLLM's `num_blocks` (block 0 is the null block: N - 1 usable).
/// - `max_model_len`: a request finishes when prompt + outputs reaches it, and a prompt with
///   no room for one output token under it is refused (`None`: no cap). Both semantics.
/// - `long_prefill_token_threshold`: if > 0, no request runs more than this many tokens in a
///   step (ignored in a step that starts with at most one live request). Both semantics.
/// - `reserve_full_prompt`: vLLM's `scheduler_reserve_full_isl`: admission needs blocks for
///   the whole sequence, not just the first chunk. `vllm_v1` only (halffull allocates the
///   whole sequence at admission anyway, so it is ignored there).
/// - `enable_prefix_caching`: blocks full of known tokens are kept findable by their hash
///   (`crate::hash`) after their request frees them, and an admitted request starts from
///   the longest cached prefix of its blocks (vLLM's automatic prefix caching). `vllm_v1`
///   only; off by default (vLLM's engine turns it on by default).
/// - `larry_deadline` (s): `larry_tail`'s starvation bound. A waiting request that has
///   waited this long is *due*: due requests go first, oldest first; LARRY orders the rest.
/// - `larry_slack`: `larry_slack`'s bound, relative to the backlog. A waiting request is due
///   once the tokens that left the waiting queue since it joined reach `larry_slack` times
///   the tokens waiting now; due requests go first, in the order they joined.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub num_gpu_blocks: u64,
    pub block_size: u64,
    pub num_cpu_blocks: u64,
    pub max_num_seqs: u64,
    pub max_num_batched_tokens: u64,
    pub policy: PolicyKind,
    pub preemption_mode: PreemptMode,
    pub watermark: Option<f64>,
    pub larry_alpha: f64,
    pub larry_load: LarryLoad,
    pub sjf_aging: f64,
    pub semantics: Semantics,
    pub max_model_len: Option<u64>,
    pub long_prefill_token_threshold: u64,
    pub reserve_full_prompt: bool,
    pub enable_prefix_caching: bool,
    pub larry_deadline: f64,
    pub larry_slack: f64,
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
    "semantics",
    "max_model_len",
    "long_prefill_token_threshold",
    "reserve_full_prompt",
    "enable_prefix_caching",
    "larry_deadline",
    "larry_slack",
];

/// A field's value, typed (for `to_dict`, getters and `repr`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue {
    Int(u64),
    Float(f64),
    Name(&'static str),
    Bool(bool),
    /// An optional field left unset.
    None,
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
            watermark: None,
            larry_alpha: 1000.0,
            larry_load: LarryLoad::Waiting,
            sjf_aging: 10.0,
            semantics: Semantics::Halffull,
            max_model_len: None,
            long_prefill_token_threshold: 0,
            reserve_full_prompt: true,
            enable_prefix_caching: false,
            larry_deadline: DEFAULT_LARRY_DEADLINE,
            larry_slack: DEFAULT_LARRY_SLACK,
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
                self.watermark = match v {
                    Value::None => None,
                    v => Some(limits::float_in(
                        Blame::Config,
                        "watermark",
                        v,
                        0.0,
                        1.0,
                        true,
                    )?),
                }
            }
            "semantics" => self.semantics = parse_name(v)?,
            "max_model_len" => {
                self.max_model_len = match v {
                    Value::None => None,
                    v => Some(limits::config_count("max_model_len", v)?),
                }
            }
            "long_prefill_token_threshold" => {
                self.long_prefill_token_threshold =
                    count("long_prefill_token_threshold", 0, MAX_COUNT)?
            }
            "reserve_full_prompt" => {
                self.reserve_full_prompt = limits::flag(Blame::Config, "reserve_full_prompt", v)?
            }
            "enable_prefix_caching" => {
                self.enable_prefix_caching =
                    limits::flag(Blame::Config, "enable_prefix_caching", v)?
            }
            "larry_alpha" => self.larry_alpha = rate("larry_alpha")?,
            "larry_slack" => self.larry_slack = rate("larry_slack")?,
            "larry_deadline" => {
                self.larry_deadline =
                    limits::float_in(Blame::Config, "larry_deadline", v, 0.0, MAX_TIME, false)?
            }
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
                Some(FieldValue::Bool(b)) => Value::Bool(b),
                Some(FieldValue::None) => Value::None,
                None => continue,
            };
            self.clone().set(field, &value)?;
        }
        if self.semantics == Semantics::VllmV1 {
            if self.preemption_mode == PreemptMode::Swap {
                return Err(Error::Config {
                    field: "preemption_mode",
                    value: Some(Value::Str("swap".into())),
                    message: "semantics=\"vllm_v1\" does not swap (vLLM V1 recomputes): use \
                              preemption_mode=\"recompute\""
                        .into(),
                });
            }
            if self.num_cpu_blocks > 0 {
                return Err(Error::Config {
                    field: "num_cpu_blocks",
                    value: Some(Value::from(self.num_cpu_blocks)),
                    message: format!(
                        "semantics=\"vllm_v1\" does not swap, so num_cpu_blocks must be 0, got {}",
                        self.num_cpu_blocks
                    ),
                });
            }
        }
        if self.enable_prefix_caching && self.semantics != Semantics::VllmV1 {
            return Err(Error::Config {
                field: "enable_prefix_caching",
                value: Some(Value::Bool(true)),
                message:
                    "prefix caching is modelled in semantics=\"vllm_v1\" only (vLLM V1's block \
                          pool): set semantics=\"vllm_v1\""
                        .into(),
            });
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
            "watermark" => self.watermark.map_or(FieldValue::None, FieldValue::Float),
            "larry_alpha" => FieldValue::Float(self.larry_alpha),
            "larry_load" => FieldValue::Name(self.larry_load.name()),
            "sjf_aging" => FieldValue::Float(self.sjf_aging),
            "semantics" => FieldValue::Name(self.semantics.name()),
            "max_model_len" => self.max_model_len.map_or(FieldValue::None, FieldValue::Int),
            "long_prefill_token_threshold" => FieldValue::Int(self.long_prefill_token_threshold),
            "reserve_full_prompt" => FieldValue::Bool(self.reserve_full_prompt),
            "enable_prefix_caching" => FieldValue::Bool(self.enable_prefix_caching),
            "larry_deadline" => FieldValue::Float(self.larry_deadline),
            "larry_slack" => FieldValue::Float(self.larry_slack),
            _ => return None,
        })
    }

    /// The effective watermark: the configured one, or the semantics' default.
    pub fn watermark(&self) -> f64 {
        self.watermark
            .unwrap_or_else(|| self.semantics.default_watermark())
    }

    /// GPU blocks kept free when admitting: `floor(watermark * num_gpu_blocks)` (in
    /// `vllm_v1`, as vLLM counts it, over all blocks, the null block included).
    pub fn watermark_blocks(&self) -> u64 {
        (self.watermark() * self.num_gpu_blocks as f64) as u64
    }

    /// Blocks a request can hold: all of them, or in `vllm_v1` all but the null block.
    pub fn usable_gpu_blocks(&self) -> u64 {
        match self.semantics {
            Semantics::Halffull => self.num_gpu_blocks,
            Semantics::VllmV1 => self.num_gpu_blocks.saturating_sub(1),
        }
    }

    /// Tokens the GPU cache holds: `usable_gpu_blocks * block_size`.
    pub fn capacity_tokens(&self) -> u64 {
        self.usable_gpu_blocks() * self.block_size
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
        assert_eq!(c.watermark(), 0.0);
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
        for (v, n) in Semantics::REGISTRY {
            assert_eq!(Semantics::parse(n), Ok(*v));
        }
    }

    #[test]
    fn vllm_v1_fields_and_defaults() {
        let base = [("num_gpu_blocks", Value::Int(8))];
        let c = SchedulerConfig::from_values(pairs(&base)).unwrap();
        assert_eq!((c.watermark, c.watermark()), (None, 0.01));
        let v1 = c
            .with_values(pairs(&[("semantics", Value::Str("vllm_v1".into()))]))
            .unwrap();
        assert_eq!((v1.watermark(), v1.usable_gpu_blocks()), (0.0, 7));
        assert_eq!(v1.capacity_tokens(), 7 * 16);
        let set = v1
            .with_values(pairs(&[
                ("watermark", Value::Float(0.25)),
                ("max_model_len", Value::Int(100)),
                ("long_prefill_token_threshold", Value::Int(4)),
                ("reserve_full_prompt", Value::Bool(false)),
            ]))
            .unwrap();
        assert_eq!(set.watermark_blocks(), 2);
        assert_eq!(set.max_model_len, Some(100));
        assert!(!set.reserve_full_prompt);
        let back = set
            .with_values(pairs(&[
                ("watermark", Value::None),
                ("max_model_len", Value::None),
            ]))
            .unwrap();
        assert_eq!((back.watermark, back.max_model_len), (None, None));
        let bad = |kv: &[(&'static str, Value)]| v1.with_values(pairs(kv)).unwrap_err();
        for (kv, field) in [
            (
                vec![("preemption_mode", Value::Str("swap".into()))],
                "preemption_mode",
            ),
            (vec![("num_cpu_blocks", Value::Int(4))], "num_cpu_blocks"),
            (
                vec![("reserve_full_prompt", Value::Int(1))],
                "reserve_full_prompt",
            ),
            (vec![("max_model_len", Value::Int(0))], "max_model_len"),
            (
                vec![("long_prefill_token_threshold", Value::Int(-1))],
                "long_prefill_token_threshold",
            ),
        ] {
            assert!(
                matches!(bad(&kv), Error::Config { field: f, .. } if f == field),
                "{field}"
            );
        }
        assert!(matches!(
            bad(&[("semantics", Value::Str("vllm".into()))]),
            Error::UnknownName {
                field: "semantics",
                ..
            }
        ));
    }
}
