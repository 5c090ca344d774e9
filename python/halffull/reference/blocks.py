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
caching, blocks that carry a hash go to the tail instead (LRU); that is not modelled yet: every
freed block is unhashed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


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
    free a table in reverse order onto the head (see the module docstring)."""

    NULL_BLOCK = 0

    def __init__(self, num_blocks: int) -> None:
        super().__init__(num_blocks)
        self.free.popleft()                      # the null block leaves the queue for good

    @property
    def num_usable(self) -> int:
        return self.num_blocks - 1

    def release(self, blocks: Iterable[int]) -> None:
        # extendleft puts each block in front of the previous one: the table's last block
        # ends up at the head, its first block just before the old head.
        self.free.extendleft(blocks)

    def all_ids(self) -> list[int]:
        return list(range(1, self.num_blocks))
