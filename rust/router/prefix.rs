//! What a router remembers about prompt prefixes, per replica: the state of the cache-aware
//! policies (`cache_aware`, `dynamo_kv`, `sal_uncached`).
//!
//! - [`PrefixRecord`]: the block hashes the router itself sent to a replica, least recently
//!   used first, capped in size. SGLang's `cache_aware` router keeps an approximate radix
//!   tree of request text per worker; a chained block hash ([`crate::hash`]) names its whole
//!   prefix, so a set of hashes *is* such a tree, and a request's longest prefix match on a
//!   replica is the leading run of its hashes found in the replica's set.
//! - [`ActiveBlocks`]: the KV blocks held by the requests live on a replica, a prefix block
//!   shared by several of them counted once (Dynamo's "active blocks").
//!
//! A request's hashes are touched deepest first, so a block is always more recently used
//! than its descendants and LRU eviction takes leaves first; the record stays a tree (with
//! chained hashes: every recorded block's parent is recorded):
//!
//! ```text
//!   insert [h0 h1 h2]      touch h2, h1, h0          LRU ... h2 h1 h0 MRU
//!   cap exceeded           evict from the LRU end    h2 goes before h1, h1 before h0
//! ```
//!
//! Both structures answer "how long a prefix of these hashes is here" by scanning until the
//! first miss; for chained hashes that is also the number of the request's blocks present.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::hash::BlockHash;

/// Hashes block hashes for the maps below: folds the 128 bits and mixes them (SplitMix64's
/// finalizer). Block hashes from [`crate::hash`] are already uniform, but a caller's own
/// hashes may be small integers, which the mix spreads over the table.
#[derive(Debug, Default, Clone, Copy)]
pub struct BlockHasher(u64);

#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Hasher for BlockHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }

    #[inline]
    fn write_u128(&mut self, x: u128) {
        self.0 = mix(self.0 ^ (x as u64) ^ ((x >> 64) as u64).rotate_left(32));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type BlockMap<V> = HashMap<BlockHash, V, BuildHasherDefault<BlockHasher>>;

/// The leading run of `hashes` that `contains` accepts.
#[inline]
fn leading_run(hashes: &[BlockHash], contains: impl Fn(&BlockHash) -> bool) -> u64 {
    hashes.iter().take_while(|h| contains(h)).count() as u64
}

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    hash: BlockHash,
    /// Toward the most recently used end.
    newer: u32,
    /// Toward the least recently used end.
    older: u32,
}

/// The block hashes the router sent to one replica, in least-recently-used order, holding at
/// most `capacity` of them after each insert. O(1) per touched block.
#[derive(Debug, Clone)]
pub struct PrefixRecord {
    index: BlockMap<u32>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    newest: u32,
    oldest: u32,
    capacity: usize,
}

impl PrefixRecord {
    /// Node ids are `u32`: a record holds fewer than 2^32 - 1 blocks whatever the capacity.
    pub fn new(capacity: u64) -> Self {
        PrefixRecord {
            index: BlockMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            capacity: usize::try_from(capacity)
                .unwrap_or(usize::MAX)
                .min(NIL as usize - 1),
        }
    }

    /// Blocks recorded (SGLang's tree size).
    pub fn len(&self) -> u64 {
        self.index.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn capacity(&self) -> u64 {
        self.capacity as u64
    }

    pub fn contains(&self, hash: &BlockHash) -> bool {
        self.index.contains_key(hash)
    }

    /// How many leading hashes of the request are recorded.
    pub fn match_len(&self, hashes: &[BlockHash]) -> u64 {
        leading_run(hashes, |h| self.index.contains_key(h))
    }

    /// Record `hashes` as just sent (deepest first, see the module notes), then evict least
    /// recently used blocks down to the capacity.
    pub fn insert(&mut self, hashes: &[BlockHash]) {
        for &hash in hashes.iter().rev() {
            self.touch(hash);
        }
        while self.index.len() > self.capacity {
            self.evict_oldest();
        }
    }

    /// The recorded hashes, least recently used first (tests and invariants).
    pub fn lru_order(&self) -> Vec<BlockHash> {
        let mut out = Vec::with_capacity(self.index.len());
        let mut at = self.oldest;
        while let Some(node) = self.nodes.get(at as usize) {
            out.push(node.hash);
            at = node.newer;
        }
        out
    }

    fn touch(&mut self, hash: BlockHash) {
        if let Some(&id) = self.index.get(&hash) {
            if id != self.newest {
                self.unlink(id);
                self.push_newest(id);
            }
            return;
        }
        if self.nodes.len() >= NIL as usize - 1 && self.free.is_empty() {
            self.evict_oldest();
        }
        let node = Node {
            hash,
            newer: NIL,
            older: NIL,
        };
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.nodes.get_mut(id as usize) {
                    *slot = node;
                }
                id
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.index.insert(hash, id);
        self.push_newest(id);
    }

    fn evict_oldest(&mut self) {
        let id = self.oldest;
        let Some(&node) = self.nodes.get(id as usize) else {
            return;
        };
        self.unlink(id);
        self.index.remove(&node.hash);
        self.free.push(id);
    }

    fn unlink(&mut self, id: u32) {
        let Some(&Node { newer, older, .. }) = self.nodes.get(id as usize) else {
            return;
        };
        match self.nodes.get_mut(newer as usize) {
            Some(n) => n.older = older,
            None => self.newest = older,
        }
        match self.nodes.get_mut(older as usize) {
            Some(n) => n.newer = newer,
            None => self.oldest = newer,
        }
    }

    fn push_newest(&mut self, id: u32) {
        let old_newest = self.newest;
        if let Some(n) = self.nodes.get_mut(id as usize) {
            n.newer = NIL;
            n.older = old_newest;
        }
        match self.nodes.get_mut(old_newest as usize) {
            Some(n) => n.newer = id,
            None => self.oldest = id,
        }
        self.newest = id;
    }
}

/// The KV blocks held by the requests live on one replica: their hashed prompt blocks, each
/// distinct hash once (reference-counted), plus blocks no other request can share
/// (`own_blocks`: a partial last prompt block, generated tokens, prompts given without hashes).
#[derive(Debug, Clone, Default)]
pub struct ActiveBlocks {
    refs: BlockMap<u32>,
    own_blocks: u64,
}

impl ActiveBlocks {
    /// Distinct hashed blocks plus own blocks.
    pub fn blocks(&self) -> u64 {
        (self.refs.len() as u64).saturating_add(self.own_blocks)
    }

    pub fn distinct_hashes(&self) -> u64 {
        self.refs.len() as u64
    }

    pub fn own_blocks(&self) -> u64 {
        self.own_blocks
    }

    /// How many leading hashes of the request are held by a live request here.
    pub fn match_len(&self, hashes: &[BlockHash]) -> u64 {
        leading_run(hashes, |h| self.refs.contains_key(h))
    }

    pub fn add(&mut self, hashes: &[BlockHash], own_blocks: u64) {
        for &hash in hashes {
            let count = self.refs.entry(hash).or_insert(0);
            *count = count.saturating_add(1);
        }
        self.own_blocks = self.own_blocks.saturating_add(own_blocks);
    }

    pub fn remove(&mut self, hashes: &[BlockHash], own_blocks: u64) {
        for hash in hashes {
            if let Some(count) = self.refs.get_mut(hash) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.refs.remove(hash);
                }
            }
        }
        self.own_blocks = self.own_blocks.saturating_sub(own_blocks);
    }

    /// A live request's own blocks went from `old` to `new`.
    pub fn regrow(&mut self, old: u64, new: u64) {
        self.own_blocks = self.own_blocks.saturating_sub(old).saturating_add(new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_matches_leading_runs_and_evicts_leaves_first() {
        let mut r = PrefixRecord::new(4);
        r.insert(&[1, 2, 3]);
        assert_eq!(r.lru_order(), vec![3, 2, 1]);
        assert_eq!(r.match_len(&[1, 2, 9, 3]), 2);
        assert_eq!(r.match_len(&[9, 1]), 0);
        // A sibling branch: 1 and 4 become newest; over the cap, the old leaf 3 goes first.
        r.insert(&[1, 4, 5]);
        assert_eq!(r.len(), 4);
        assert_eq!(r.lru_order(), vec![2, 5, 4, 1]);
        assert!(!r.contains(&3));
        // A request longer than the cap keeps its first blocks.
        let mut small = PrefixRecord::new(2);
        small.insert(&[7, 8, 9]);
        assert_eq!(small.lru_order(), vec![8, 7]);
        assert_eq!(small.match_len(&[7, 8, 9]), 2);
        // Freed slots are reused.
        small.insert(&[10]);
        assert_eq!(small.lru_order(), vec![7, 10]);
        assert_eq!(small.nodes.len(), 3);
    }

    #[test]
    fn record_handles_repeats_within_a_request() {
        let mut r = PrefixRecord::new(10);
        r.insert(&[5, 5, 6, 5]);
        assert_eq!(r.lru_order(), vec![6, 5]);
        assert_eq!(r.match_len(&[5, 5, 6, 7]), 3);
    }

    #[test]
    fn active_blocks_count_shared_prefixes_once() {
        let mut a = ActiveBlocks::default();
        a.add(&[1, 2, 3], 1);
        a.add(&[1, 2, 4], 2);
        assert_eq!(a.blocks(), 4 + 3);
        assert_eq!(a.match_len(&[1, 2, 3, 4]), 4);
        a.regrow(2, 5);
        assert_eq!(a.own_blocks(), 6);
        a.remove(&[1, 2, 3], 1);
        assert_eq!((a.distinct_hashes(), a.own_blocks()), (3, 5));
        assert_eq!(a.match_len(&[1, 2, 3]), 2);
        a.remove(&[1, 2, 4], 5);
        assert_eq!(a.blocks(), 0);
    }

    #[test]
    fn hasher_spreads_small_integers() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let b = BuildHasherDefault::<BlockHasher>::default();
        let tops: std::collections::HashSet<u64> =
            (0u128..64).map(|x| b.hash_one(x) >> 57).collect();
        assert!(tops.len() > 40, "{}", tops.len());
    }
}
