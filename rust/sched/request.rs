//! Requests: ids, states and per-request token and block bookkeeping.

use super::blocks::BlockId;
use crate::hash::{own_block_hash, BlockHash, ROOT};

pub use crate::id::RequestId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Waiting,
    Running,
    Swapped,
    Finished,
    Aborted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Running => "running",
            Status::Swapped => "swapped",
            Status::Finished => "finished",
            Status::Aborted => "aborted",
        }
    }
}

/// What the caller says about a new request.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub id: RequestId,
    pub prompt_tokens: u64,
    pub max_output_tokens: u64,
    /// `None`: the scheduler's clock.
    pub arrival_time: Option<f64>,
    pub priority: i64,
    pub predicted_output_tokens: Option<u64>,
    /// The true output length, known only in simulation (for `oracle_srpt`).
    pub true_output_tokens: Option<u64>,
    /// Prefix caching: the chained hashes of the prompt's first full blocks (at most
    /// `prompt_tokens / block_size`, [`crate::hash`]); blocks past them are the request's
    /// own. Ignored when caching is off.
    pub block_hashes: Vec<BlockHash>,
}

/// Builders for the tests (the bindings and the simulator fill every field).
#[cfg(test)]
impl NewRequest {
    pub(crate) fn new(
        id: impl Into<RequestId>,
        prompt_tokens: u64,
        max_output_tokens: u64,
    ) -> Self {
        NewRequest {
            id: id.into(),
            prompt_tokens,
            max_output_tokens,
            arrival_time: None,
            priority: 0,
            predicted_output_tokens: None,
            true_output_tokens: None,
            block_hashes: Vec::new(),
        }
    }

    pub(crate) fn arrival(mut self, t: f64) -> Self {
        self.arrival_time = Some(t);
        self
    }
}

/// A live request. Token arithmetic for prompt P and o generated tokens:
///
/// ```text
///   tokens:   [ p0 .. p(P-1) | g0 .. g(o-1) ]     num_tokens = P + o
///   computed: [ <-- num_computed_tokens --> ]     KV in the cache for these
/// ```
///
/// A step that computes the last known token samples one more (o += 1).
#[derive(Debug, Clone)]
pub struct Request {
    pub id: RequestId,
    /// Order of `add_request`: the last tie-breaker of every order.
    pub(crate) seq: u64,
    pub(crate) arrival_time: f64,
    pub prompt_tokens: u64,
    /// Effective maximum: the caller's, capped so that prompt + output fit the GPU cache.
    pub max_output_tokens: u64,
    pub(crate) priority: i64,
    pub(crate) predicted_output_tokens: Option<u64>,
    pub(crate) true_output_tokens: Option<u64>,
    pub status: Status,
    pub num_output_tokens: u64,
    pub num_computed_tokens: u64,
    pub num_preemptions: u32,
    pub block_table: Vec<BlockId>,
    pub cpu_blocks: Vec<BlockId>,
    /// Prefix caching: one hash per full block of known tokens so far (the caller's, then
    /// the request's own, extended as blocks fill, [`Request::hashes_upto`]); kept across
    /// preemptions.
    pub(crate) block_hashes: Vec<BlockHash>,
    /// Leading blocks of `block_table` registered in the cache (vLLM's `num_cached_block`).
    pub(crate) num_cached_blocks: usize,
}

impl Request {
    #[inline]
    pub(crate) fn num_tokens(&self) -> u64 {
        self.prompt_tokens + self.num_output_tokens
    }

    pub(crate) fn predicted_remaining(&self) -> u64 {
        self.predicted_output_tokens
            .unwrap_or(self.max_output_tokens)
            .saturating_sub(self.num_output_tokens)
    }

    /// The hashes of the first `n` blocks, extending the request's own (unshared) ones as
    /// needed; `n` must not exceed its full blocks of known tokens.
    pub(crate) fn hashes_upto(&mut self, n: usize) -> &[BlockHash] {
        while self.block_hashes.len() < n {
            let parent = self.block_hashes.last().copied().unwrap_or(ROOT);
            let i = self.block_hashes.len() as u64;
            self.block_hashes.push(own_block_hash(parent, self.seq, i));
        }
        &self.block_hashes[..n]
    }

    pub(crate) fn true_remaining(&self) -> u64 {
        self.true_output_tokens
            .unwrap_or(self.max_output_tokens)
            .saturating_sub(self.num_output_tokens)
    }
}
