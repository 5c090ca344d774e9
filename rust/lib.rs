//! halffull: a scheduling core for LLM serving.
//!
//! - [`config`]: the engine scheduler's configuration (one type, enums for names).
//! - [`error`], [`limits`], [`id`]: the one error enum, the validated ranges, request ids.
//! - [`hash`]: prefix-cache block hashes (chained over full blocks).
//! - [`sched`]: the engine scheduler (requests, KV block pools, policies, the step).
//! - [`router`]: cluster load balancers (which replica gets a request).
//! - [`sim`]: the trace-driven cluster simulator (replicas behind a router, a cost model).
//! - `bindings` (feature `python`): the only module that knows about PyO3.
//!
//! The core never panics on input: every public entry point returns a `Result`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod config;
pub mod error;
pub mod hash;
pub mod id;
pub mod limits;
pub mod router;
pub mod sched;
pub mod sim;

#[cfg(feature = "python")]
mod bindings;
