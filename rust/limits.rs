//! The validated ranges, in one place. The core checks against these; the bindings export
//! them as `halffull._core.LIMITS`, and `halffull.limits` re-exports them for the reference
//! and the pure-Python modules.

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
