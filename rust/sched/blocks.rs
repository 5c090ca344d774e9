//! A pool of KV blocks (GPU or CPU): owns the free queue, nothing else.
//!
//! The free queue is an intrusive doubly linked list over block ids ([`LinkedIds`]): O(1)
//! pop from the head, push at either end, and unlink from the middle (what prefix caching
//! needs to take a cached free block back). Allocation always pops from the head; where a
//! released table goes depends on the semantics ([`ReleaseOrder`]):
//!
//! ```text
//!   free queue (head -> tail):   5 6 7 8        a request frees its table [1 2 3]
//!   Fifo    (halffull):          5 6 7 8 1 2 3  appended in table order: reuse is FIFO
//!   Lifo    (vLLM V1, unhashed): 3 2 1 5 6 7 8  prepended in reverse order: the last block
//!                                               becomes the head, reuse is LIFO
//! ```
//!
//! In `vllm_v1` block 0 is vLLM's null block: taken out of the queue at construction, never
//! handed out, never freed, so `N` blocks leave `N - 1` usable.

use std::collections::TryReserveError;

use crate::error::{Error, Result};
use crate::limits::can_allocate;

pub type BlockId = u32;

const NIL: u32 = u32::MAX;

/// Bytes a [`LinkedIds`] (a block pool's free queue) holds per id: two links and a flag.
pub const BYTES_PER_ID: u64 = 9;

/// An intrusive doubly linked list over the ids `0..n` (each id at most once). Also the
/// deque of `vllm_v1`'s FCFS waiting queue (over request slots).
#[derive(Debug, Clone)]
pub(crate) struct LinkedIds {
    prev: Vec<u32>,
    next: Vec<u32>,
    linked: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl Default for LinkedIds {
    fn default() -> Self {
        LinkedIds::new()
    }
}

impl LinkedIds {
    pub(crate) fn new() -> Self {
        LinkedIds {
            prev: Vec::new(),
            next: Vec::new(),
            linked: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    /// The list `0, 1, ..., n - 1`, head to tail; `Err` (allocating nothing) if its
    /// [`BYTES_PER_ID`]` * n` bytes cannot be had.
    pub(crate) fn with_range(n: u32) -> std::result::Result<Self, TryReserveError> {
        let mut l = LinkedIds::new();
        let len = n as usize;
        l.prev.try_reserve_exact(len)?;
        l.next.try_reserve_exact(len)?;
        l.linked.try_reserve_exact(len)?;
        l.grow(n);
        for id in 0..n {
            l.push_back(id);
        }
        Ok(l)
    }

    fn grow(&mut self, n: u32) {
        let n = n as usize;
        if self.linked.len() < n {
            self.prev.resize(n, NIL);
            self.next.resize(n, NIL);
            self.linked.resize(n, false);
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.linked.get(id as usize).copied().unwrap_or(false)
    }

    pub(crate) fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// Link `id` at the tail (no-op if already linked).
    pub(crate) fn push_back(&mut self, id: u32) {
        self.grow(id + 1);
        if self.contains(id) {
            return;
        }
        let i = id as usize;
        self.prev[i] = self.tail;
        self.next[i] = NIL;
        match self.tail {
            NIL => self.head = id,
            t => self.next[t as usize] = id,
        }
        self.tail = id;
        self.linked[i] = true;
        self.len += 1;
    }

    /// Link `id` at the head (no-op if already linked).
    pub(crate) fn push_front(&mut self, id: u32) {
        self.grow(id + 1);
        if self.contains(id) {
            return;
        }
        let i = id as usize;
        self.next[i] = self.head;
        self.prev[i] = NIL;
        match self.head {
            NIL => self.tail = id,
            h => self.prev[h as usize] = id,
        }
        self.head = id;
        self.linked[i] = true;
        self.len += 1;
    }

    /// Unlink `id` wherever it is; false if it was not linked.
    pub(crate) fn remove(&mut self, id: u32) -> bool {
        if !self.contains(id) {
            return false;
        }
        let i = id as usize;
        let (p, n) = (self.prev[i], self.next[i]);
        match p {
            NIL => self.head = n,
            p => self.next[p as usize] = n,
        }
        match n {
            NIL => self.tail = p,
            n => self.prev[n as usize] = p,
        }
        self.linked[i] = false;
        self.prev[i] = NIL;
        self.next[i] = NIL;
        self.len -= 1;
        true
    }

    pub(crate) fn pop_front(&mut self) -> Option<u32> {
        let h = self.front()?;
        self.remove(h);
        Some(h)
    }

    /// Head to tail.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let id = cur;
            cur = self.next[id as usize];
            Some(id)
        })
    }
}

/// Where a released table's blocks go in the free queue (chosen once, from the semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReleaseOrder {
    /// Appended at the tail in table order (halffull).
    Fifo,
    /// Prepended at the head in reverse table order (vLLM V1's `free_blocks` of unhashed
    /// blocks: the table's last block becomes the head).
    Lifo,
}

#[derive(Debug, Clone)]
pub(crate) struct BlockPool {
    num_blocks: u32,
    free: LinkedIds,
    order: ReleaseOrder,
    /// vLLM's null block (block 0), never free and never held.
    null_block: Option<BlockId>,
}

impl BlockPool {
    /// halffull's pool: every block free, FIFO reuse. `OutOfMemory` (naming `field`, the
    /// setting that sized it) if its free queue cannot be allocated.
    pub(crate) fn new(num_blocks: u32, field: &'static str) -> Result<Self> {
        Ok(BlockPool {
            num_blocks,
            free: free_queue(num_blocks, field)?,
            order: ReleaseOrder::Fifo,
            null_block: None,
        })
    }

    /// vLLM V1's pool: block 0 is the null block, the free queue is `1..N`, LIFO reuse.
    pub(crate) fn new_v1(num_blocks: u32, field: &'static str) -> Result<Self> {
        let mut free = free_queue(num_blocks, field)?;
        let null_block = free.pop_front();
        Ok(BlockPool {
            num_blocks,
            free,
            order: ReleaseOrder::Lifo,
            null_block,
        })
    }

    pub(crate) fn num_blocks(&self) -> u32 {
        self.num_blocks
    }

    /// Blocks a request can hold (all but the null block).
    pub(crate) fn num_usable(&self) -> u32 {
        self.num_blocks - u32::from(self.null_block.is_some())
    }

    pub(crate) fn null_block(&self) -> Option<BlockId> {
        self.null_block
    }

    #[inline]
    pub(crate) fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Take `n` blocks from the head and append them to `out`. Returns false (taking
    /// nothing) if fewer than `n` are free; callers check capacity first, so false means a bug.
    pub(crate) fn allocate_into(&mut self, n: usize, out: &mut Vec<BlockId>) -> bool {
        if n > self.free.len() {
            return false;
        }
        out.reserve(n);
        for _ in 0..n {
            if let Some(b) = self.free.pop_front() {
                out.push(b);
            }
        }
        true
    }

    /// Give a table's blocks back, in this pool's [`ReleaseOrder`].
    pub(crate) fn release(&mut self, blocks: &[BlockId]) {
        match self.order {
            ReleaseOrder::Fifo => blocks.iter().for_each(|&b| self.free.push_back(b)),
            // Pushing each at the head in table order leaves them in reverse order there.
            ReleaseOrder::Lifo => blocks.iter().for_each(|&b| self.free.push_front(b)),
        }
    }

    /// The free queue, head to tail.
    pub(crate) fn free_blocks(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.free.iter()
    }
}

/// `OutOfMemory` unless the free queues of a GPU and a CPU pool fit together.
pub(crate) fn check_pools_fit(num_gpu_blocks: u64, num_cpu_blocks: u64) -> Result<()> {
    let blocks = num_gpu_blocks.saturating_add(num_cpu_blocks);
    if can_allocate(blocks.saturating_mul(BYTES_PER_ID)) {
        return Ok(());
    }
    let field = if num_gpu_blocks >= num_cpu_blocks {
        "num_gpu_blocks"
    } else {
        "num_cpu_blocks"
    };
    Err(Error::out_of_memory(
        field,
        "the block pools (num_gpu_blocks + num_cpu_blocks blocks)",
        blocks,
        BYTES_PER_ID,
    ))
}

/// Every block of a pool free, allocated fallibly.
fn free_queue(num_blocks: u32, field: &'static str) -> Result<LinkedIds> {
    LinkedIds::with_range(num_blocks).map_err(|_| {
        Error::out_of_memory(field, "a block pool", u64::from(num_blocks), BYTES_PER_ID)
    })
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
        let mut pool = BlockPool::new(4, "num_gpu_blocks").unwrap();
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
    fn v1_null_block_and_lifo_reuse() {
        // SPEC §5.1 (checks.py): a finished table [3,2,1,6,7] makes the queue start 7,6,1,2,3.
        let mut pool = BlockPool::new_v1(10, "num_gpu_blocks").unwrap();
        assert_eq!(pool.null_block(), Some(0));
        assert_eq!((pool.num_free(), pool.num_usable()), (9, 9));
        assert_eq!(
            pool.free_blocks().collect::<Vec<_>>(),
            (1..10).collect::<Vec<_>>()
        );
        let mut t = Vec::new();
        assert!(pool.allocate_into(7, &mut t));
        assert_eq!(t, vec![1, 2, 3, 4, 5, 6, 7]);
        pool.release(&[4, 5]);
        pool.release(&[3, 2, 1, 6, 7]);
        assert_eq!(
            pool.free_blocks().collect::<Vec<_>>(),
            vec![7, 6, 1, 2, 3, 5, 4, 8, 9]
        );
        let mut u = Vec::new();
        assert!(pool.allocate_into(2, &mut u));
        assert_eq!(u, vec![7, 6]);
        assert!(!pool.free_blocks().any(|b| b == 0));
    }

    #[test]
    fn linked_ids_unlink_from_the_middle() {
        let mut l = LinkedIds::with_range(5).unwrap();
        assert!(l.remove(2) && !l.remove(2));
        l.push_front(2);
        l.remove(4);
        l.push_back(4);
        l.remove(0);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![2, 1, 3, 4]);
        assert_eq!((l.len(), l.pop_front(), l.front()), (4, Some(2), Some(1)));
        let mut e = LinkedIds::default();
        assert_eq!((e.pop_front(), e.front()), (None, None));
        e.push_back(7);
        assert_eq!(e.iter().collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn blocks_for_rounds_up() {
        assert_eq!(blocks_for(0, 16), 0);
        assert_eq!(blocks_for(1, 16), 1);
        assert_eq!(blocks_for(16, 16), 1);
        assert_eq!(blocks_for(17, 16), 2);
    }
}
