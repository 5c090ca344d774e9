//! A pool of KV blocks (GPU or CPU): owns the free queue, nothing else.
//!
//! Free blocks form a FIFO queue: allocation pops from the front, release appends to the
//! back, so block ids are reused in a fixed, reproducible order (the reference does the same).

use std::collections::VecDeque;

pub type BlockId = u32;

#[derive(Debug, Clone)]
pub(crate) struct BlockPool {
    num_blocks: u32,
    free: VecDeque<BlockId>,
}

impl BlockPool {
    pub(crate) fn new(num_blocks: u32) -> Self {
        BlockPool {
            num_blocks,
            free: (0..num_blocks).collect(),
        }
    }

    pub(crate) fn num_blocks(&self) -> u32 {
        self.num_blocks
    }

    pub(crate) fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Take `n` blocks and append them to `out`. Returns false (taking nothing) if fewer
    /// than `n` are free; callers check capacity first, so false means a bug.
    pub(crate) fn allocate_into(&mut self, n: usize, out: &mut Vec<BlockId>) -> bool {
        if n > self.free.len() {
            return false;
        }
        out.extend(self.free.drain(..n));
        true
    }

    pub(crate) fn release(&mut self, blocks: &[BlockId]) {
        self.free.extend(blocks.iter().copied());
    }

    pub(crate) fn free_blocks(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.free.iter().copied()
    }
}

/// Blocks needed to hold `num_tokens` tokens: `ceil(num_tokens / block_size)`.
#[inline]
pub fn blocks_for(num_tokens: u64, block_size: u64) -> u64 {
    num_tokens.div_ceil(block_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_reuse_order() {
        let mut pool = BlockPool::new(4);
        let mut a = Vec::new();
        assert!(pool.allocate_into(3, &mut a));
        assert_eq!(a, vec![0, 1, 2]);
        pool.release(&[1, 0]);
        let mut b = Vec::new();
        assert!(pool.allocate_into(2, &mut b));
        assert_eq!(b, vec![3, 1]);
        assert!(!pool.allocate_into(2, &mut b));
        assert_eq!(pool.num_free(), 1);
    }

    #[test]
    fn blocks_for_rounds_up() {
        assert_eq!(blocks_for(0, 16), 0);
        assert_eq!(blocks_for(1, 16), 1);
        assert_eq!(blocks_for(16, 16), 1);
        assert_eq!(blocks_for(17, 16), 2);
    }
}
