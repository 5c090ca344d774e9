"""A request as the reference scheduler and its policies see it: identity, the numbers that
order it, and its state (status, tokens computed and generated, blocks held)."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass, field

RequestId = str | int
BlockHash = Hashable

WAITING, RUNNING, SWAPPED, FINISHED, ABORTED = "waiting", "running", "swapped", "finished", "aborted"


@dataclass(eq=False)
class Request:
    request_id: RequestId
    seq: int                      # order of add_request: the last tie-breaker
    arrival_time: float
    prompt_tokens: int
    max_output_tokens: int        # effective: capped so prompt + output fits the cache
    priority: int = 0
    predicted_output_tokens: int | None = None
    true_output_tokens: int | None = None
    status: str = WAITING
    num_output_tokens: int = 0
    num_computed_tokens: int = 0
    num_preemptions: int = 0
    block_table: list[int] = field(default_factory=list)
    cpu_blocks: list[int] = field(default_factory=list)
    # prefix caching: one hash per full block of known tokens (the caller's, then the
    # request's own), and how many leading blocks of block_table are registered in the cache
    block_hashes: list[BlockHash] = field(default_factory=list)
    num_cached_blocks: int = 0

    @property
    def num_tokens(self) -> int:
        """Tokens whose KV the request needs: prompt plus generated."""
        return self.prompt_tokens + self.num_output_tokens

    def hashes_upto(self, n: int) -> list[BlockHash]:
        """The hashes of the first ``n`` blocks. Blocks past the caller's hashes hold content
        only this request knows (its generated tokens), so their hashes are its own: they
        match nothing but its own blocks, after a preemption."""
        while len(self.block_hashes) < n:
            self.block_hashes.append(("own", self.seq, len(self.block_hashes)))
        return self.block_hashes[:n]

    @property
    def predicted_remaining(self) -> int:
        pred = self.max_output_tokens if self.predicted_output_tokens is None else self.predicted_output_tokens
        return max(pred - self.num_output_tokens, 0)

    @property
    def true_remaining(self) -> int:
        true = self.max_output_tokens if self.true_output_tokens is None else self.true_output_tokens
        return max(true - self.num_output_tokens, 0)


def _digest(*parts: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(b"|".join(parts), digest_size=16).digest(), "little")


def token_block_hashes(token_ids: list[int], block_size: int) -> list[BlockHash]:
    """Chained hashes of the full blocks of ``token_ids``: block j's covers its tokens and
    block j-1's hash, so equal hashes mean equal prefixes. 128-bit ints, like the caller's
    own ``block_hashes``. (The Rust core uses xxh3-128: the values differ, the equalities
    are the same.)"""
    hashes: list[BlockHash] = []
    parent = 0
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = _digest(b"tokens", str(parent).encode(), repr(token_ids[start:start + block_size]).encode())
        hashes.append(parent)
    return hashes


def given_block_hash(h: int | bytes) -> BlockHash:
    """A caller's block hash: an int as it is, bytes digested to a 128-bit int."""
    return _digest(b"bytes", h) if isinstance(h, bytes) else h
