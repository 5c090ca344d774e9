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

use std::collections::{HashMap, TryReserveError};
use std::hash::BuildHasherDefault;

use crate::error::{Error, Result};
use crate::hash::BlockHash;
use crate::limits::can_allocate;

pub type BlockId = u32;

const NIL: u32 = u32::MAX;

/// Bytes a pool holds per block: its free-queue links and flag (9) and its reference count
/// (4); with prefix caching, [`BYTES_PER_CACHED_BLOCK`] more.
pub const BYTES_PER_BLOCK: u64 = 13;

/// With prefix caching on, the bytes per block of its hash slot (`Option<BlockHash>`); the
/// cache map itself grows with the blocks that carry a hash.
pub const BYTES_PER_CACHED_BLOCK: u64 = std::mem::size_of::<Option<BlockHash>>() as u64;

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

    /// The list `0, 1, ..., n - 1`, head to tail; `Err` (allocating nothing) if its arrays
    /// cannot be had.
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

/// Where a released table's blocks go in the free queue (chosen once, from the semantics);
/// with prefix caching, blocks that carry a hash go to the tail whatever the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReleaseOrder {
    /// Appended at the tail in table order (halffull).
    Fifo,
    /// Prepended at the head in reverse table order (vLLM V1's `free_blocks` of unhashed
    /// blocks: the table's last block becomes the head).
    Lifo,
}

/// What the prefix cache has done since the scheduler was built (vLLM's `PrefixCacheStats`,
/// cumulative, plus evictions). Counted once per admission: `queries` is the admitted
/// request's known tokens, `hits` its cached ones; requests admitted again after a preemption
/// count in the `preempted_*` fields instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    pub requests: u64,
    pub queries: u64,
    pub hits: u64,
    pub preempted_requests: u64,
    pub preempted_queries: u64,
    pub preempted_hits: u64,
    /// Cached blocks whose hash was dropped because the block was handed out again.
    pub evictions: u64,
}

impl std::ops::AddAssign for PrefixCacheStats {
    fn add_assign(&mut self, o: Self) {
        self.requests += o.requests;
        self.queries += o.queries;
        self.hits += o.hits;
        self.preempted_requests += o.preempted_requests;
        self.preempted_queries += o.preempted_queries;
        self.preempted_hits += o.preempted_hits;
        self.evictions += o.evictions;
    }
}

impl PrefixCacheStats {
    /// Record one admission of a request with `queries` known tokens, `hits` of them cached.
    pub(crate) fn record(&mut self, preempted_before: bool, queries: u64, hits: u64) {
        if preempted_before {
            self.preempted_requests += 1;
            self.preempted_queries += queries;
            self.preempted_hits += hits;
        } else {
            self.requests += 1;
            self.queries += queries;
            self.hits += hits;
        }
    }
}

/// Hashes the map's keys, which are folded block hashes already: one multiply to spread the
/// bits (a caller's own `block_hashes` may be small consecutive ints), no SipHash.
#[derive(Debug, Clone, Copy, Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, k: u64) {
        let x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

/// The map's key for a hash: its two halves folded (a smaller table than 128-bit keys). Two
/// hashes with the same key are told apart by the block's own full hash ([`BlockPool::hash`]),
/// so a fold collision (about 1 in 2**64 per pair) can cost a hit, never give a wrong one.
#[inline]
fn key(h: BlockHash) -> u64 {
    (h as u64) ^ ((h >> 64) as u64)
}

/// The hash -> block map of the prefix cache. Several blocks may share a hash when two
/// requests computed the same content before either was cached (vLLM's `BlockHashToBlockMap`
/// does not deduplicate either): the first registered is in `first` and is what a lookup
/// finds; later ones wait in `more`, oldest first, and move up when it leaves. Keys are
/// [`key`]s; every entry's block carries the full hash.
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheMap {
    first: HashMap<u64, BlockId, BuildHasherDefault<KeyHasher>>,
    more: HashMap<u64, Vec<BlockId>, BuildHasherDefault<KeyHasher>>,
}

impl CacheMap {
    fn with_capacity(n: usize) -> Self {
        CacheMap {
            first: HashMap::with_capacity_and_hasher(n, BuildHasherDefault::default()),
            more: HashMap::default(),
        }
    }

    fn insert(&mut self, h: BlockHash, b: BlockId) {
        let k = key(h);
        if let Some(&first) = self.first.get(&k) {
            if first != b {
                self.more.entry(k).or_default().push(b);
            }
        } else {
            self.first.insert(k, b);
        }
    }

    /// The block registered first under `k`, if any (the caller checks its full hash).
    #[inline]
    fn get(&self, h: BlockHash) -> Option<BlockId> {
        self.first.get(&key(h)).copied()
    }

    fn remove(&mut self, h: BlockHash, b: BlockId) {
        let k = key(h);
        if self.first.get(&k) == Some(&b) {
            match self.more.get_mut(&k) {
                Some(v) if !v.is_empty() => {
                    let next = v.remove(0);
                    if v.is_empty() {
                        self.more.remove(&k);
                    }
                    self.first.insert(k, next);
                }
                _ => {
                    self.first.remove(&k);
                }
            }
        } else if let Some(v) = self.more.get_mut(&k) {
            v.retain(|&x| x != b);
            if v.is_empty() {
                self.more.remove(&k);
            }
        }
    }

    fn holds(&self, h: BlockHash, b: BlockId) -> bool {
        let k = key(h);
        self.first.get(&k) == Some(&b) || self.more.get(&k).is_some_and(|v| v.contains(&b))
    }

    fn len(&self) -> usize {
        self.first.len() + self.more.values().map(Vec::len).sum::<usize>()
    }

    fn clear(&mut self) {
        self.first.clear();
        self.more.clear();
    }
}

/// A pool of blocks with reference counts. A block is free (in the free queue) iff its count
/// is 0. With prefix caching on, a block full of known tokens carries its hash from the step
/// that allocates it until it is handed out again (evicted), even while free.
#[derive(Debug, Clone)]
pub(crate) struct BlockPool {
    num_blocks: u32,
    free: LinkedIds,
    order: ReleaseOrder,
    /// vLLM's null block (block 0), never free and never held.
    null_block: Option<BlockId>,
    ref_cnt: Vec<u32>,
    /// `Some` iff prefix caching is on.
    cache: Option<CacheMap>,
    /// Per block: its hash, if registered in `cache`.
    hash: Vec<Option<BlockHash>>,
    stats: PrefixCacheStats,
}

impl BlockPool {
    /// halffull's pool: every block free, FIFO reuse. Allocated fallibly: `OutOfMemory`
    /// (naming `field`, the setting that sized it) if it cannot be had.
    pub(crate) fn new(num_blocks: u32, field: &'static str) -> Result<Self> {
        Ok(BlockPool {
            num_blocks,
            free: free_queue(num_blocks, field)?,
            order: ReleaseOrder::Fifo,
            null_block: None,
            ref_cnt: filled(num_blocks, 0, field)?,
            cache: None,
            hash: Vec::new(),
            stats: PrefixCacheStats::default(),
        })
    }

    /// vLLM V1's pool: block 0 is the null block, the free queue is `1..N`, LIFO reuse;
    /// with `caching`, freed blocks that carry a hash go to the tail instead (LRU).
    pub(crate) fn new_v1(num_blocks: u32, caching: bool, field: &'static str) -> Result<Self> {
        let mut free = free_queue(num_blocks, field)?;
        let null_block = free.pop_front();
        Ok(BlockPool {
            num_blocks,
            free,
            order: ReleaseOrder::Lifo,
            null_block,
            ref_cnt: filled(num_blocks, 0, field)?,
            // A block carries at most one hash, so the map never outgrows the pool; sized up
            // front (to a point) so that filling the cache never rehashes.
            cache: caching.then(|| CacheMap::with_capacity((num_blocks as usize).min(1 << 12))),
            hash: if caching {
                filled(num_blocks, None, field)?
            } else {
                Vec::new()
            },
            stats: PrefixCacheStats::default(),
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

    #[inline]
    pub(crate) fn caching(&self) -> bool {
        self.cache.is_some()
    }

    pub(crate) fn stats(&self) -> &PrefixCacheStats {
        &self.stats
    }

    pub(crate) fn stats_mut(&mut self) -> &mut PrefixCacheStats {
        &mut self.stats
    }

    #[inline]
    pub(crate) fn ref_count(&self, b: BlockId) -> u32 {
        self.ref_cnt.get(b as usize).copied().unwrap_or(0)
    }

    /// Take `n` blocks from the head and append them to `out`, each with count 1; a block
    /// that carried a hash leaves the cache (an eviction). Returns false (taking nothing) if
    /// fewer than `n` are free; callers check capacity first, so false means a bug.
    pub(crate) fn allocate_into(&mut self, n: usize, out: &mut Vec<BlockId>) -> bool {
        if n > self.free.len() {
            return false;
        }
        out.reserve(n);
        for _ in 0..n {
            let Some(b) = self.free.pop_front() else {
                break;
            };
            if let Some(cache) = &mut self.cache {
                if let Some(h) = self.hash[b as usize].take() {
                    cache.remove(h, b);
                    self.stats.evictions += 1;
                }
            }
            self.ref_cnt[b as usize] = 1;
            out.push(b);
        }
        true
    }

    /// Give a table's blocks back: each loses one reference, and those left with none
    /// return to the free queue in this pool's [`ReleaseOrder`]. With caching, the ones
    /// that carry a hash are appended at the tail instead (last block first), so that
    /// cached blocks are evicted least recently freed first, and a chain's tail before its
    /// parents (vLLM's `BlockPool.free_blocks`).
    pub(crate) fn release(&mut self, blocks: &[BlockId]) {
        for &b in blocks {
            let c = &mut self.ref_cnt[b as usize];
            debug_assert!(*c > 0, "block {b} released while free");
            *c = c.saturating_sub(1);
        }
        let freed = |pool: &Self, b: BlockId| pool.ref_cnt[b as usize] == 0;
        match self.order {
            ReleaseOrder::Fifo => {
                for &b in blocks {
                    if freed(self, b) {
                        self.free.push_back(b);
                    }
                }
            }
            ReleaseOrder::Lifo => {
                for &b in blocks.iter().rev() {
                    if freed(self, b) && self.block_hash(b).is_some() {
                        self.free.push_back(b);
                    }
                }
                // Pushed at the head in table order, they end there in reverse order.
                for &b in blocks {
                    if freed(self, b) && self.block_hash(b).is_none() {
                        self.free.push_front(b);
                    }
                }
            }
        }
    }

    /// Take a reference on cached blocks a request hits; a free one leaves the free queue.
    pub(crate) fn touch(&mut self, blocks: &[BlockId]) {
        for &b in blocks {
            if self.ref_cnt[b as usize] == 0 {
                self.free.remove(b);
            }
            self.ref_cnt[b as usize] += 1;
        }
    }

    /// The cached blocks of the longest prefix of `hashes` (stops at the first miss).
    pub(crate) fn lookup_into(&self, hashes: &[BlockHash], out: &mut Vec<BlockId>) {
        let Some(cache) = &self.cache else {
            return;
        };
        for &h in hashes {
            match cache.get(h).filter(|&b| self.hash[b as usize] == Some(h)) {
                Some(b) => out.push(b),
                None => break,
            }
        }
    }

    /// How many leading `hashes` are cached.
    pub(crate) fn count_hits(&self, hashes: &[BlockHash]) -> usize {
        self.cache.as_ref().map_or(0, |c| {
            hashes
                .iter()
                .take_while(|&&h| c.get(h).is_some_and(|b| self.hash[b as usize] == Some(h)))
                .count()
        })
    }

    /// Register `blocks[i]` under `hashes[i]` (blocks that just became full).
    pub(crate) fn cache_blocks(&mut self, blocks: &[BlockId], hashes: &[BlockHash]) {
        let Some(cache) = &mut self.cache else {
            return;
        };
        for (&b, &h) in blocks.iter().zip(hashes) {
            debug_assert!(self.hash[b as usize].is_none(), "block {b} is cached twice");
            self.hash[b as usize] = Some(h);
            cache.insert(h, b);
        }
    }

    /// Forget every hash (vLLM's `reset_prefix_cache`); the caller checks nothing is held.
    pub(crate) fn clear_cache(&mut self) {
        if let Some(cache) = &mut self.cache {
            cache.clear();
            self.hash.iter_mut().for_each(|h| *h = None);
        }
    }

    pub(crate) fn block_hash(&self, b: BlockId) -> Option<BlockHash> {
        self.hash.get(b as usize).copied().flatten()
    }

    /// The cache map is consistent with the blocks' hashes: every hashed block is findable
    /// under its hash, and the map holds nothing else. Returns a description of the first
    /// inconsistency.
    pub(crate) fn check_cache(&self) -> Option<String> {
        let cache = self.cache.as_ref()?;
        let mut hashed = 0;
        for (b, h) in self.hash.iter().enumerate() {
            if let Some(h) = h {
                hashed += 1;
                if !cache.holds(*h, b as BlockId) {
                    return Some(format!(
                        "block {b} carries a hash the cache does not map to it"
                    ));
                }
            }
        }
        let mapped = cache.len();
        (mapped != hashed)
            .then(|| format!("the cache maps {mapped} blocks but {hashed} carry a hash"))
    }

    /// The free queue, head to tail.
    pub(crate) fn free_blocks(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.free.iter()
    }
}

/// `OutOfMemory` unless a GPU pool (with its hash slots when `caching`) and a CPU pool fit
/// together: asked for at once, before either is built.
pub(crate) fn check_pools_fit(
    num_gpu_blocks: u64,
    num_cpu_blocks: u64,
    caching: bool,
) -> Result<()> {
    let per_gpu_block = BYTES_PER_BLOCK + if caching { BYTES_PER_CACHED_BLOCK } else { 0 };
    let bytes = num_gpu_blocks
        .saturating_mul(per_gpu_block)
        .saturating_add(num_cpu_blocks.saturating_mul(BYTES_PER_BLOCK));
    if can_allocate(bytes) {
        return Ok(());
    }
    let field = if num_gpu_blocks >= num_cpu_blocks {
        "num_gpu_blocks"
    } else {
        "num_cpu_blocks"
    };
    Err(Error::OutOfMemory {
        field,
        bytes,
        message: format!(
            "cannot allocate the block pools: {num_gpu_blocks} GPU blocks x {per_gpu_block} bytes + \
             {num_cpu_blocks} CPU blocks x {BYTES_PER_BLOCK} bytes = {bytes} bytes; nothing was changed"
        ),
    })
}

/// A pool's free queue, every block free, allocated fallibly.
fn free_queue(num_blocks: u32, field: &'static str) -> Result<LinkedIds> {
    LinkedIds::with_range(num_blocks).map_err(|_| {
        Error::out_of_memory(field, "a block pool's free queue", u64::from(num_blocks), 9)
    })
}

/// `n` copies of `value`, allocated fallibly.
fn filled<T: Clone>(n: u32, value: T, field: &'static str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n as usize).map_err(|_| {
        Error::out_of_memory(
            field,
            "a block pool",
            u64::from(n),
            std::mem::size_of::<T>() as u64,
        )
    })?;
    v.resize(n as usize, value);
    Ok(v)
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
        let mut pool = BlockPool::new_v1(10, false, "num_gpu_blocks").unwrap();
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
