//! What a router remembers about prompt prefixes, per replica: the state of the cache-aware
//! policies (`cache_aware`, `dynamo_kv`, `sal_uncached`).
//!
//! - [`PrefixRecords`]: per replica, the block hashes the router itself sent there, least
//!   recently used first, capped in size. SGLang's `cache_aware` router keeps one approximate
//!   radix tree of request text whose nodes name the workers ("tenants") holding them; a
//!   chained block hash ([`crate::hash`]) names its whole prefix, so a map from hash to the
//!   replicas holding it *is* such a tree, and a request's longest prefix match on a replica
//!   is the leading run of its hashes that replica holds.
//! - [`ActiveBlocks`]: per replica, the KV blocks held by the requests live there, a prefix
//!   block shared by several of them counted once (Dynamo's "active blocks").
//!
//! Both index every replica in one map, so matching a request against all replicas walks its
//! hashes once (stopping when no replica still matches), not once per replica:
//!
//! ```text
//!   hashes  h0   h1   h2   h3          holders(h0) = {0, 2}, holders(h1) = {2}, h2 unknown
//!   run     r0: 1     r2: 2            -> stop at h2: replica 0 matches 1 block, 2 matches 2
//! ```
//!
//! A request's hashes are touched deepest first, so a block is always more recently used
//! than its descendants and LRU eviction takes leaves first; each replica's record (a linked
//! list in LRU order) stays a tree (with chained hashes: every recorded block's parent is
//! recorded):
//!
//! ```text
//!   insert [h0 h1 h2]      touch h2, h1, h0          LRU ... h2 h1 h0 MRU
//!   cap exceeded           evict from the LRU end    h2 goes before h1, h1 before h0
//! ```

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

/// One or more holders of a block, the first kept inline (most blocks have one holder, so
/// most entries allocate nothing).
#[derive(Debug, Clone)]
struct Holders<T> {
    first: T,
    rest: Vec<T>,
}

impl<T: Copy> Holders<T> {
    fn one(first: T) -> Self {
        Holders {
            first,
            rest: Vec::new(),
        }
    }

    #[inline]
    fn iter(&self) -> impl Iterator<Item = &T> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    #[inline]
    fn find_mut(&mut self, is: impl Fn(&T) -> bool) -> Option<&mut T> {
        if is(&self.first) {
            return Some(&mut self.first);
        }
        self.rest.iter_mut().find(|h| is(h))
    }

    /// Drop the holder `is` names; `false` when none is left.
    fn remove(&mut self, is: impl Fn(&T) -> bool) -> bool {
        if is(&self.first) {
            match self.rest.pop() {
                Some(last) => self.first = last,
                None => return false,
            }
        } else if let Some(pos) = self.rest.iter().position(is) {
            self.rest.swap_remove(pos);
        }
        true
    }
}

/// Fill `runs[r]` with the leading run of `hashes` that replica `r` holds: one map lookup
/// per position, stopping when no replica still matches.
fn leading_runs<V>(
    index: &BlockMap<Holders<V>>,
    hashes: &[BlockHash],
    runs: &mut Vec<u64>,
    num_replicas: usize,
    replica_of: impl Fn(&V) -> u32,
) where
    V: Copy,
{
    runs.clear();
    runs.resize(num_replicas, 0);
    for (j, hash) in hashes.iter().enumerate() {
        let Some(holders) = index.get(hash) else {
            break;
        };
        let j = j as u64;
        let mut advanced = false;
        for h in holders.iter() {
            if let Some(run) = runs.get_mut(replica_of(h) as usize) {
                if *run == j {
                    *run = j + 1;
                    advanced = true;
                }
            }
        }
        if !advanced {
            break;
        }
    }
}

const NIL: u32 = u32::MAX;

/// A replica's claim on a recorded block: its node in that replica's LRU list.
#[derive(Debug, Clone, Copy)]
struct Holder {
    replica: u32,
    node: u32,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    hash: BlockHash,
    /// Toward the most recently used end.
    newer: u32,
    /// Toward the least recently used end.
    older: u32,
}

/// One replica's recorded blocks, a doubly linked list in least-recently-used order over a
/// slab of nodes (freed slots reused).
#[derive(Debug, Clone)]
struct Lru {
    nodes: Vec<Node>,
    free: Vec<u32>,
    newest: u32,
    oldest: u32,
    len: u64,
    capacity: u64,
}

impl Lru {
    fn new(capacity: u64) -> Self {
        Lru {
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            len: 0,
            // Node ids are u32: a record holds fewer than 2^32 - 1 blocks.
            capacity: capacity.min(u64::from(NIL) - 1),
        }
    }

    /// A new node at the newest end; `None` only when 2^32 - 1 nodes are live.
    fn push_new(&mut self, hash: BlockHash) -> Option<u32> {
        let node = Node {
            hash,
            newer: NIL,
            older: NIL,
        };
        let id = match self.free.pop() {
            Some(id) => {
                *self.nodes.get_mut(id as usize)? = node;
                id
            }
            None if self.nodes.len() < NIL as usize => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
            None => return None,
        };
        self.push_newest(id);
        self.len += 1;
        Some(id)
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

    fn touch(&mut self, id: u32) {
        if id != self.newest {
            self.unlink(id);
            self.push_newest(id);
        }
    }

    /// Unlink the oldest node and free its slot; its hash.
    fn pop_oldest(&mut self) -> Option<BlockHash> {
        let id = self.oldest;
        let hash = self.nodes.get(id as usize)?.hash;
        self.unlink(id);
        self.free.push(id);
        self.len = self.len.saturating_sub(1);
        Some(hash)
    }
}

/// Per replica, the block hashes the router sent there, in least-recently-used order,
/// holding at most that replica's capacity after each insert. A touch is one map lookup and
/// a few list links, whatever the record's size; matching a request against every replica
/// costs one lookup per matched block.
#[derive(Debug, Clone)]
pub struct PrefixRecords {
    index: BlockMap<Holders<Holder>>,
    lists: Vec<Lru>,
}

impl PrefixRecords {
    /// One record per capacity (in blocks).
    pub fn new(capacities: impl IntoIterator<Item = u64>) -> Self {
        PrefixRecords {
            index: BlockMap::default(),
            lists: capacities.into_iter().map(Lru::new).collect(),
        }
    }

    pub fn num_replicas(&self) -> usize {
        self.lists.len()
    }

    /// Blocks recorded for `replica` (SGLang's tree size).
    pub fn len(&self, replica: usize) -> u64 {
        self.lists.get(replica).map_or(0, |l| l.len)
    }

    pub fn capacity(&self, replica: usize) -> u64 {
        self.lists.get(replica).map_or(0, |l| l.capacity)
    }

    /// `runs[r]`: how many leading hashes of the request replica `r`'s record holds.
    pub fn match_runs(&self, hashes: &[BlockHash], runs: &mut Vec<u64>) {
        leading_runs(&self.index, hashes, runs, self.lists.len(), |h| h.replica);
    }

    /// Record `hashes` as just sent to `replica` (deepest first, see the module notes), then
    /// evict its least recently used blocks down to its capacity.
    pub fn insert(&mut self, replica: usize, hashes: &[BlockHash]) {
        if replica >= self.lists.len() {
            return;
        }
        if self.index.capacity() == 0 {
            // Most records fill up: size the index once for a good part of them.
            let total: u64 = self.lists.iter().map(|l| l.capacity).sum();
            self.index.reserve(total.min(1 << 18) as usize);
        }
        for &hash in hashes.iter().rev() {
            self.touch(replica, hash);
        }
        while self.lists.get(replica).is_some_and(|l| l.len > l.capacity) {
            if !self.evict_oldest(replica) {
                break;
            }
        }
    }

    /// Replica `replica`'s recorded hashes, least recently used first.
    pub fn lru_order(&self, replica: usize) -> Vec<BlockHash> {
        let Some(list) = self.lists.get(replica) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(list.len as usize);
        let mut at = list.oldest;
        while let Some(node) = list.nodes.get(at as usize) {
            out.push(node.hash);
            at = node.newer;
        }
        out
    }

    /// Every claim in the index names a node of that replica holding the same hash, and each
    /// list's length is its node count and its index claims (for `check_invariants`).
    pub fn check(&self) -> Result<(), String> {
        let mut claims = vec![0u64; self.lists.len()];
        for (hash, holders) in &self.index {
            for h in holders.iter() {
                let list = self
                    .lists
                    .get(h.replica as usize)
                    .ok_or_else(|| format!("a block claimed by replica {}", h.replica))?;
                if list.nodes.get(h.node as usize).map(|n| n.hash) != Some(*hash) {
                    return Err(format!(
                        "replica {}'s node for {hash:#x} holds another block",
                        h.replica
                    ));
                }
                if let Some(c) = claims.get_mut(h.replica as usize) {
                    *c += 1;
                }
            }
        }
        for (r, list) in self.lists.iter().enumerate() {
            let walked = self.lru_order(r).len() as u64;
            if walked != list.len || claims.get(r) != Some(&list.len) || list.len > list.capacity {
                return Err(format!(
                    "replica {r}'s record: {} blocks, {walked} in its LRU list, {:?} in the index, cap {}",
                    list.len,
                    claims.get(r),
                    list.capacity
                ));
            }
        }
        Ok(())
    }

    fn touch(&mut self, replica: usize, hash: BlockHash) {
        let r = replica as u32;
        let Some(list) = self.lists.get_mut(replica) else {
            return;
        };
        match self.index.get_mut(&hash) {
            Some(holders) => match holders.find_mut(|h| h.replica == r) {
                Some(h) => list.touch(h.node),
                None => {
                    if let Some(node) = list.push_new(hash) {
                        holders.rest.push(Holder { replica: r, node });
                    }
                }
            },
            None => {
                if let Some(node) = list.push_new(hash) {
                    self.index
                        .insert(hash, Holders::one(Holder { replica: r, node }));
                }
            }
        }
    }

    /// Evict `replica`'s least recently used block; `false` if it has none.
    fn evict_oldest(&mut self, replica: usize) -> bool {
        let r = replica as u32;
        let Some(hash) = self.lists.get_mut(replica).and_then(Lru::pop_oldest) else {
            return false;
        };
        if let Some(holders) = self.index.get_mut(&hash) {
            if !holders.remove(|h| h.replica == r) {
                self.index.remove(&hash);
            }
        }
        true
    }
}

#[derive(Debug, Clone, Copy)]
struct Count {
    replica: u32,
    count: u32,
}

/// Per replica, the KV blocks held by the requests live there: their hashed prompt blocks,
/// each distinct hash once (reference-counted), plus blocks no other request can share
/// (`own_blocks`: a partial last prompt block, generated tokens, prompts given without hashes).
#[derive(Debug, Clone)]
pub struct ActiveBlocks {
    index: BlockMap<Holders<Count>>,
    distinct: Vec<u64>,
    own: Vec<u64>,
}

impl ActiveBlocks {
    pub fn new(num_replicas: usize) -> Self {
        ActiveBlocks {
            index: BlockMap::default(),
            distinct: vec![0; num_replicas],
            own: vec![0; num_replicas],
        }
    }

    /// Distinct hashed blocks plus own blocks on `replica`.
    pub fn blocks(&self, replica: usize) -> u64 {
        self.distinct_hashes(replica)
            .saturating_add(self.own_blocks(replica))
    }

    pub fn distinct_hashes(&self, replica: usize) -> u64 {
        self.distinct.get(replica).copied().unwrap_or(0)
    }

    pub fn own_blocks(&self, replica: usize) -> u64 {
        self.own.get(replica).copied().unwrap_or(0)
    }

    /// `runs[r]`: how many leading hashes of the request a live request on `r` holds.
    pub fn match_runs(&self, hashes: &[BlockHash], runs: &mut Vec<u64>) {
        leading_runs(&self.index, hashes, runs, self.distinct.len(), |c| {
            c.replica
        });
    }

    pub fn add(&mut self, replica: usize, hashes: &[BlockHash], own_blocks: u64) {
        let r = replica as u32;
        let new = Count {
            replica: r,
            count: 1,
        };
        for &hash in hashes {
            let added = match self.index.get_mut(&hash) {
                Some(holders) => match holders.find_mut(|c| c.replica == r) {
                    Some(c) => {
                        c.count = c.count.saturating_add(1);
                        false
                    }
                    None => {
                        holders.rest.push(new);
                        true
                    }
                },
                None => {
                    self.index.insert(hash, Holders::one(new));
                    true
                }
            };
            if added {
                if let Some(d) = self.distinct.get_mut(replica) {
                    *d += 1;
                }
            }
        }
        if let Some(o) = self.own.get_mut(replica) {
            *o = o.saturating_add(own_blocks);
        }
    }

    pub fn remove(&mut self, replica: usize, hashes: &[BlockHash], own_blocks: u64) {
        let r = replica as u32;
        for hash in hashes {
            let Some(holders) = self.index.get_mut(hash) else {
                continue;
            };
            let Some(c) = holders.find_mut(|c| c.replica == r) else {
                continue;
            };
            if c.count > 1 {
                c.count -= 1;
                continue;
            }
            if !holders.remove(|c| c.replica == r) {
                self.index.remove(hash);
            }
            if let Some(d) = self.distinct.get_mut(replica) {
                *d = d.saturating_sub(1);
            }
        }
        if let Some(o) = self.own.get_mut(replica) {
            *o = o.saturating_sub(own_blocks);
        }
    }

    /// A live request's own blocks on `replica` went from `old` to `new`.
    pub fn regrow(&mut self, replica: usize, old: u64, new: u64) {
        if let Some(o) = self.own.get_mut(replica) {
            *o = o.saturating_sub(old).saturating_add(new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(records: &PrefixRecords, hashes: &[BlockHash]) -> Vec<u64> {
        let mut out = Vec::new();
        records.match_runs(hashes, &mut out);
        out
    }

    #[test]
    fn record_matches_leading_runs_and_evicts_leaves_first() {
        let mut r = PrefixRecords::new([4, 2]);
        r.insert(0, &[1, 2, 3]);
        assert_eq!(r.lru_order(0), vec![3, 2, 1]);
        assert_eq!(runs(&r, &[1, 2, 9, 3]), vec![2, 0]);
        assert_eq!(runs(&r, &[9, 1]), vec![0, 0]);
        // A sibling branch: 1 and 4 become newest; over the cap, the old leaf 3 goes first.
        r.insert(0, &[1, 4, 5]);
        assert_eq!(r.len(0), 4);
        assert_eq!(r.lru_order(0), vec![2, 5, 4, 1]);
        // A request longer than the cap keeps its first blocks; replicas share the index.
        r.insert(1, &[1, 8, 9]);
        assert_eq!(r.lru_order(1), vec![8, 1]);
        assert_eq!(runs(&r, &[1, 8, 9]), vec![1, 2]);
        assert_eq!(runs(&r, &[1, 4, 5, 6]), vec![3, 1]);
        r.insert(1, &[10]);
        assert_eq!(r.lru_order(1), vec![1, 10]);
        assert!(!r.index.contains_key(&8));
        r.check().unwrap();
        // Many touches of the same blocks: nothing grows.
        for _ in 0..1000 {
            r.insert(0, &[1, 4, 5]);
        }
        assert_eq!(r.lists[0].nodes.len(), 5);
        assert_eq!(r.lru_order(0), vec![2, 5, 4, 1]);
        r.check().unwrap();
    }

    #[test]
    fn record_handles_repeats_within_a_request() {
        let mut r = PrefixRecords::new([10]);
        r.insert(0, &[5, 5, 6, 5]);
        assert_eq!(r.lru_order(0), vec![6, 5]);
        assert_eq!(runs(&r, &[5, 5, 6, 7]), vec![3]);
        r.check().unwrap();
    }

    #[test]
    fn active_blocks_count_shared_prefixes_once() {
        let mut a = ActiveBlocks::new(2);
        a.add(0, &[1, 2, 3], 1);
        a.add(0, &[1, 2, 4], 2);
        a.add(1, &[1, 7], 0);
        assert_eq!(a.blocks(0), 4 + 3);
        let mut out = Vec::new();
        a.match_runs(&[1, 2, 3, 4], &mut out);
        assert_eq!(out, vec![4, 1]);
        a.regrow(0, 2, 5);
        assert_eq!(a.own_blocks(0), 6);
        a.remove(0, &[1, 2, 3], 1);
        assert_eq!((a.distinct_hashes(0), a.own_blocks(0)), (3, 5));
        a.match_runs(&[1, 2, 3], &mut out);
        assert_eq!(out, vec![2, 1]);
        a.remove(0, &[1, 2, 4], 5);
        assert_eq!(a.blocks(0), 0);
        assert_eq!(a.blocks(1), 2);
        a.remove(1, &[1, 7], 0);
        assert!(a.index.is_empty());
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
