"""KV block pools of the reference scheduler, one per semantics.

``BlockPool`` is halffull's: a FIFO free queue, blocks ``0 .. N-1`` all usable.

``VllmBlockPool`` is vLLM 0.33 V1's (``vllm/v1/core/block_pool.py``), prefix caching off::

    ids:         0 | 1  2  3 ... N-1
                 ^ the null block: taken at construction, never handed out, never freed

    free queue:  head -> [ a  b  c ... ] <- tail
    allocate k:  the k blocks at the head, in queue order
    free table:  the table reversed, put at the HEAD as a group (last block first):
                 table [3, 2, 1, 6, 7] freed onto [9, 10]  ->  [7, 6, 1, 2, 3, 9, 10]

so the blocks a request gave back last are the first handed out again (LIFO). With prefix
caching, blocks that carry a hash go to the tail instead (LRU); see ``VllmBlockPool``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable


class BlockPool:
    """halffull's pool: a FIFO free queue (allocate from the front, free to the back)."""

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.free: deque[int] = deque(range(num_blocks))

    @property
    def num_usable(self) -> int:
        """Blocks a request can ever hold."""
        return self.num_blocks

    @property
    def num_free(self) -> int:
        return len(self.free)

    def allocate(self, n: int) -> list[int]:
        assert n <= len(self.free), "caller checks capacity first"
        return [self.free.popleft() for _ in range(n)]

    def release(self, blocks: Iterable[int]) -> None:
        self.free.extend(blocks)

    def all_ids(self) -> list[int]:
        """Every block id a request may hold or the free queue may contain."""
        return list(range(self.num_blocks))


class VllmBlockPool(BlockPool):
    """vLLM V1's pool: block 0 is the null block; allocate from the head of the free queue,
    free a table in reverse order onto the head (see the module docstring).

    With ``caching`` (vLLM's ``enable_prefix_caching``) blocks are shared: each has a reference
    count (the requests holding it) and is free iff that count is 0. A block full of known
    tokens is registered under its hash when it is allocated, and keeps its hash while free,
    so a later request can find it (``lookup``) and take it back (``touch``)::

        cache:       hash -> [blocks], oldest first (two requests may have computed the same
                     content before either was cached; a lookup takes the oldest)
        free table:  blocks left with count 0, table reversed; unhashed ones to the HEAD (as
                     above), hashed ones to the TAIL: a cached block is reused (evicted) last,
                     least recently freed first
        allocate k:  the k blocks at the head; one that carries a hash leaves the cache
    """

    NULL_BLOCK = 0

    def __init__(self, num_blocks: int, caching: bool = False) -> None:
        super().__init__(num_blocks)
        self.free.popleft()                      # the null block leaves the queue for good
        self.caching = caching
        self.ref_cnt = [0] * num_blocks
        self.block_hash: dict[int, Hashable] = {}          # block -> its hash, while cached
        self.cache: dict[Hashable, list[int]] = {}          # hash -> blocks, oldest first
        self.stats = dict(requests=0, queries=0, hits=0, preempted_requests=0, preempted_queries=0,
                          preempted_hits=0, evictions=0)

    @property
    def num_usable(self) -> int:
        return self.num_blocks - 1

    def allocate(self, n: int) -> list[int]:
        blocks = super().allocate(n)
        for b in blocks:
            if b in self.block_hash:                    # reused: it leaves the cache
                self._uncache(b)
                self.stats["evictions"] += 1
            self.ref_cnt[b] = 1
        return blocks

    def release(self, blocks: Iterable[int]) -> None:
        freed = []
        for b in reversed(list(blocks)):
            self.ref_cnt[b] -= 1
            if self.ref_cnt[b] == 0:
                freed.append(b)
        cached = [b for b in freed if b in self.block_hash]
        self.free.extendleft(reversed([b for b in freed if b not in self.block_hash]))
        self.free.extend(cached)

    def touch(self, blocks: list[int]) -> None:
        """A request takes a reference on the cached blocks it hit; free ones leave the queue."""
        for b in blocks:
            if self.ref_cnt[b] == 0:
                self.free.remove(b)
            self.ref_cnt[b] += 1

    def lookup(self, hashes: list[Hashable]) -> list[int]:
        """The cached blocks of the longest prefix of ``hashes``."""
        hit: list[int] = []
        for h in hashes:
            if h not in self.cache:
                break
            hit.append(self.cache[h][0])
        return hit

    def register(self, block: int, h: Hashable) -> None:
        self.block_hash[block] = h
        self.cache.setdefault(h, []).append(block)

    def _uncache(self, block: int) -> None:
        h = self.block_hash.pop(block)
        self.cache[h].remove(block)
        if not self.cache[h]:
            del self.cache[h]

    def clear_cache(self) -> None:
        self.block_hash.clear()
        self.cache.clear()

    def all_ids(self) -> list[int]:
        return list(range(1, self.num_blocks))
