"""Turn a ``StepPlan`` into one flat batch of tokens for ``LlamaModel.forward_paged``.

Request ``r`` scheduled with ``c = num_computed_tokens`` and ``n = num_new_tokens`` feeds
tokens ``[c, c+n)`` of its full token list (prompt + generated) at positions ``[c, c+n)``.
One-token rows (decodes, and one-token prefill chunks) come first so their attention runs as
one padded batch; longer chunks follow, one attention call each::

    rows:  [ d0 d1 ... d(D-1) | chunk 0 (n0 rows) | chunk 1 (n1 rows) | ... ]
    slot of row (r, p) = block_table[r][p // block_size] * block_size + p % block_size
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InvariantError


@dataclass
class Chunk:
    start: int                      # first row in the flat batch
    n: int                          # rows (new tokens)
    context: int                    # c + n: keys attended
    block_table: torch.Tensor       # [ceil(context / block_size)] block ids
    mask: torch.Tensor | None    # [n, context] bool, None when c == 0 (plain causal)


@dataclass
class Batch:
    token_ids: torch.Tensor         # [T] long
    positions: torch.Tensor         # [T] long
    slot_mapping: torch.Tensor      # [T] long
    num_single: int
    single_block_tables: torch.Tensor | None   # [D, max_blocks] long (padded with block 0)
    single_mask: torch.Tensor | None           # [D, 1, 1, max_blocks * block_size] bool
    chunks: list[Chunk]
    logit_rows: torch.Tensor | None            # rows to compute logits for; None: all rows
    # (request id, first row, n, c, samples) per scheduled request, in row order
    rows: list[tuple[Any, int, int, int, bool]]
    # per sampling request (row order): (request id, index into the logits returned)
    sample_index: list[tuple[Any, int]]
    prefill_tokens: int
    decode_seqs: int
    kv_tokens: int

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])


def _blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


def build_batch(plan: Any, tokens: dict, tables: dict, block_size: int, device: torch.device,
                all_logits: bool = False) -> Batch | None:
    """``tokens[rid]``: the request's full token list; ``tables[rid]``: its block table (list).

    Returns None for an empty plan. Raises ``InvariantError`` if the plan and the engine's
    view of a request disagree (a bug in the scheduler or the engine, never bad user input).
    """
    req_ids: Sequence[Any] = list(plan.req_ids)
    if not req_ids:
        return None
    num_new = np.asarray(plan.num_new_tokens, dtype=np.int64).tolist()
    computed = np.asarray(plan.num_computed_tokens, dtype=np.int64).tolist()
    samples = np.asarray(plan.samples, dtype=bool).tolist()
    is_prefill = np.asarray(plan.is_prefill, dtype=bool).tolist()

    singles: list[int] = []
    multis: list[int] = []
    for i, rid in enumerate(req_ids):
        toks, table = tokens.get(rid), tables.get(rid)
        if toks is None or table is None:
            raise InvariantError(f"plan step {plan.step} schedules request {rid!r} the engine does not hold",
                                 request_id=rid)
        c, n = computed[i], num_new[i]
        end = c + n
        if n < 1 or c < 0 or end > len(toks) or samples[i] != (end == len(toks)):
            raise InvariantError(
                f"plan step {plan.step}: request {rid!r} has {len(toks)} tokens but the plan computes "
                f"[{c}, {end}) with samples={samples[i]}", request_id=rid)
        if len(table) < _blocks_for(end, block_size):
            raise InvariantError(
                f"plan step {plan.step}: request {rid!r} holds {len(table)} blocks for {end} tokens "
                f"of block_size {block_size}", request_id=rid)
        (singles if n == 1 else multis).append(i)

    d = len(singles)
    tok: list[int] = []
    pos: list[int] = []
    slots: list[int] = []
    rows: list[tuple[Any, int, int, int, bool]] = []
    single_bt = single_mask = None
    if d:
        ctx = [computed[i] + 1 for i in singles]
        max_blocks = _blocks_for(max(ctx), block_size)
        bt = np.zeros((d, max_blocks), dtype=np.int64)
        for j, i in enumerate(singles):
            rid, c = req_ids[i], computed[i]
            table = tables[rid]
            tok.append(tokens[rid][c])
            pos.append(c)
            slots.append(table[c // block_size] * block_size + c % block_size)
            nb = _blocks_for(c + 1, block_size)
            bt[j, :nb] = table[:nb]
            rows.append((rid, j, 1, c, samples[i]))
        single_bt = torch.as_tensor(bt, device=device)
        ctx_t = torch.as_tensor(ctx, dtype=torch.long, device=device)
        single_mask = (torch.arange(max_blocks * block_size, device=device)[None, :] < ctx_t[:, None])[:, None, None, :]

    chunks: list[Chunk] = []
    start = d
    for i in multis:
        rid, c, n = req_ids[i], computed[i], num_new[i]
        table = tables[rid]
        p = np.arange(c, c + n, dtype=np.int64)
        nb = _blocks_for(c + n, block_size)
        tab = np.asarray(table[:nb], dtype=np.int64)
        tok.extend(tokens[rid][c: c + n])
        pos.extend(p.tolist())
        slots.extend((tab[p // block_size] * block_size + p % block_size).tolist())
        mask = None
        if c > 0:
            qpos = torch.arange(c, c + n, device=device)
            mask = torch.arange(c + n, device=device)[None, :] <= qpos[:, None]
        chunks.append(Chunk(start, n, c + n, torch.as_tensor(tab, device=device), mask))
        rows.append((rid, start, n, c, samples[i]))
        start += n

    sample_index: list[tuple[Any, int]] = []
    logit_rows = None
    if all_logits:
        sample_index = [(rid, r0 + n - 1) for rid, r0, n, _, s in rows if s]
    else:
        last = [r0 + n - 1 for _, r0, n, _, s in rows if s]
        sample_index = [(rid, j) for j, (rid, *_rest) in enumerate(r for r in rows if r[4])]
        logit_rows = torch.as_tensor(last, dtype=torch.long, device=device)

    prefill_tokens = sum(num_new[i] for i in range(len(req_ids)) if is_prefill[i])
    decode_seqs = sum(1 for i in range(len(req_ids)) if not is_prefill[i])
    kv_tokens = sum(computed[i] + num_new[i] for i in range(len(req_ids)))
    return Batch(
        token_ids=torch.as_tensor(tok, dtype=torch.long, device=device),
        positions=torch.as_tensor(pos, dtype=torch.long, device=device),
        slot_mapping=torch.as_tensor(slots, dtype=torch.long, device=device),
        num_single=d, single_block_tables=single_bt, single_mask=single_mask, chunks=chunks,
        logit_rows=logit_rows, rows=rows, sample_index=sample_index,
        prefill_tokens=prefill_tokens, decode_seqs=decode_seqs, kv_tokens=kv_tokens,
    )
