"""The paged KV cache: device blocks the scheduler hands out, host blocks for swap.

Layout, per layer, as in vLLM::

    key_cache[layer], value_cache[layer]:  [num_blocks, block_size, kv_heads, head_dim]

    token at position p of a request with block table bt lives in
        slot = bt[p // block_size] * block_size + p % block_size
    of key_cache[layer].view(num_blocks * block_size, kv_heads, head_dim).

All layers share one tensor ``kv[num_layers, 2, num_blocks, ...]`` so a swap moves a block of
every layer in one indexing op; ``key_cache``/``value_cache`` are views into it. The host cache
``cpu_kv`` has the same shape with ``num_cpu_blocks`` blocks (pinned when the device is CUDA).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .attention import sdpa

if TYPE_CHECKING:
    from .batch import Batch


class PagedKVCache:
    def __init__(self, *, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device, num_cpu_blocks: int = 0) -> None:
        self.num_blocks, self.block_size, self.num_cpu_blocks = num_blocks, block_size, num_cpu_blocks
        self.num_kv_heads, self.head_dim, self.device = num_kv_heads, head_dim, device
        shape = (num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim)
        self.kv = torch.zeros(shape, dtype=dtype, device=device)
        pin = device.type == "cuda"
        self.cpu_kv = torch.zeros((num_layers, 2, num_cpu_blocks) + shape[3:], dtype=dtype,
                                  device="cpu", pin_memory=pin)
        self.key_cache = [self.kv[i, 0] for i in range(num_layers)]
        self.value_cache = [self.kv[i, 1] for i in range(num_layers)]

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    # -- swap: whole blocks, every layer at once

    @torch.inference_mode()
    def swap_out(self, mapping: np.ndarray) -> None:
        """Copy device blocks to host blocks; ``mapping`` rows are (device block, host block)."""
        if len(mapping) == 0:
            return
        src = torch.as_tensor(mapping[:, 0], dtype=torch.long, device=self.device)
        dst = torch.as_tensor(mapping[:, 1], dtype=torch.long)
        self.cpu_kv[:, :, dst] = self.kv[:, :, src].to("cpu")

    @torch.inference_mode()
    def swap_in(self, mapping: np.ndarray) -> None:
        """Copy host blocks to device blocks; ``mapping`` rows are (host block, device block)."""
        if len(mapping) == 0:
            return
        src = torch.as_tensor(mapping[:, 0], dtype=torch.long)
        dst = torch.as_tensor(mapping[:, 1], dtype=torch.long, device=self.device)
        self.kv[:, :, dst] = self.cpu_kv[:, :, src].to(self.device, non_blocking=True)

    # -- attention through block tables

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Write this step's ``k``/``v`` ``[T, kv_heads, head_dim]`` through the slot mapping,
        then attend every query ``[T, heads, head_dim]`` to its request's cached keys.

        Rows ``[0, num_single)`` are one-token queries (decodes), batched with keys padded to
        the longest context and masked by length. Each multi-token chunk (query positions
        ``[c, c+n)``) attends to key positions ``[0, c+n)`` causally: query ``c+i`` sees keys
        ``0 .. c+i``.
        """
        kc, vc = self.key_cache[layer], self.value_cache[layer]
        kc.view(-1, self.num_kv_heads, self.head_dim).index_copy_(0, batch.slot_mapping, k)
        vc.view(-1, self.num_kv_heads, self.head_dim).index_copy_(0, batch.slot_mapping, v)
        d = batch.num_single
        single = None
        if d:
            bt = batch.single_block_tables                                  # [D, max_blocks]
            ks = kc[bt].flatten(1, 2).transpose(1, 2)                       # [D, kvh, L, hd]
            vs = vc[bt].flatten(1, 2).transpose(1, 2)
            single = sdpa(q[:d].unsqueeze(2), ks, vs, mask=batch.single_mask).squeeze(2)
            if not batch.chunks:
                return single
        out = torch.empty_like(q)
        if single is not None:
            out[:d] = single
        for ch in batch.chunks:
            ks = kc[ch.block_table].flatten(0, 1)[: ch.context]            # [c+n, kvh, hd]
            vs = vc[ch.block_table].flatten(0, 1)[: ch.context]
            qs = q[ch.start: ch.start + ch.n].transpose(0, 1)[None]         # [1, H, n, hd]
            o = sdpa(qs, ks.transpose(0, 1)[None], vs.transpose(0, 1)[None],
                     mask=ch.mask, is_causal=ch.mask is None)
            out[ch.start: ch.start + ch.n] = o[0].transpose(0, 1)
        return out
