//! What a router knows about one replica: its capacity (fixed) and its load (kept by the
//! router's own bookkeeping, or overwritten by engine snapshots).

/// A replica's capacity: KV blocks, tokens per block, tokens per engine step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaSpec {
    pub num_gpu_blocks: u64,
    pub block_size: u64,
    pub max_num_batched_tokens: u64,
}

impl Default for ReplicaSpec {
    fn default() -> Self {
        ReplicaSpec {
            num_gpu_blocks: 8192,
            block_size: 16,
            max_num_batched_tokens: 8192,
        }
    }
}

/// The router's view of one replica.
///
/// ```text
/// outstanding requests = waiting + running
/// outstanding tokens   = queued_prefill_tokens + remaining_decode_tokens
/// free_blocks          = max(0, num_gpu_blocks - used_blocks)
/// queued_blocks        = ceil(queued_prefill_tokens / block_size)   (queued KV demand)
/// queued_prefill_uncached_tokens  the part of queued_prefill_tokens not expected from the
///                                 prefix cache (equal to it when nothing is cached)
/// ```
///
/// Bookkeeping never lets a counter go below 0 (it saturates), so a stale snapshot followed by
/// finishes cannot underflow; `used_blocks` may exceed `num_gpu_blocks` (then nothing is free).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaLoad {
    /// Requests dispatched here whose prefill has not been reported done.
    pub waiting: u64,
    /// Requests reported started (prefill done) and not finished.
    pub running: u64,
    /// Prompt tokens of the waiting requests.
    pub queued_prefill_tokens: u64,
    /// The part of `queued_prefill_tokens` to compute, not found in the replica's prefix
    /// cache: each waiting request's prompt minus its cached tokens there when it was routed
    /// (Dynamo's "active prefill tokens").
    pub queued_prefill_uncached_tokens: u64,
    /// Sum over outstanding requests of `max(0, decode estimate - tokens generated)`.
    pub remaining_decode_tokens: u64,
    /// KV blocks held by the running requests: `ceil((prompt + generated) / block_size)` each.
    pub used_blocks: u64,
    pub num_gpu_blocks: u64,
    pub block_size: u64,
    pub max_num_batched_tokens: u64,
}

impl ReplicaLoad {
    pub fn new(spec: ReplicaSpec) -> Self {
        ReplicaLoad {
            waiting: 0,
            running: 0,
            queued_prefill_tokens: 0,
            queued_prefill_uncached_tokens: 0,
            remaining_decode_tokens: 0,
            used_blocks: 0,
            num_gpu_blocks: spec.num_gpu_blocks,
            block_size: spec.block_size,
            max_num_batched_tokens: spec.max_num_batched_tokens,
        }
    }

    #[inline]
    pub fn outstanding_requests(&self) -> u64 {
        self.waiting.saturating_add(self.running)
    }

    #[inline]
    pub fn outstanding_tokens(&self) -> u64 {
        self.queued_prefill_tokens
            .saturating_add(self.remaining_decode_tokens)
    }

    #[inline]
    pub fn free_blocks(&self) -> u64 {
        self.num_gpu_blocks.saturating_sub(self.used_blocks)
    }

    /// KV blocks the waiting requests will need to start.
    #[inline]
    pub fn queued_blocks(&self) -> u64 {
        self.queued_prefill_tokens.div_ceil(self.block_size.max(1))
    }

    /// KV blocks for `tokens` tokens on this replica.
    #[inline]
    pub fn blocks_for(&self, tokens: u64) -> u64 {
        tokens.div_ceil(self.block_size.max(1))
    }
}

/// A replica's load as an engine reports it. `None` keeps the router's current value; the
/// given fields overwrite it. Later `route` / `on_progress` / `on_finish` calls apply their
/// changes on top of the snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaSnapshot {
    pub waiting: Option<u64>,
    pub running: Option<u64>,
    pub queued_prefill_tokens: Option<u64>,
    pub queued_prefill_uncached_tokens: Option<u64>,
    pub remaining_decode_tokens: Option<u64>,
    pub free_blocks: Option<u64>,
}
