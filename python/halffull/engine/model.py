"""A small Llama-style decoder with seeded random weights (nothing is downloaded).

RMSNorm, rotary position embeddings, grouped-query attention and a SwiGLU MLP, as in Llama.
The model runs two ways that share every weight and every op except attention:

- ``forward_dense(token_ids)``: one sequence, no cache, full causal attention. The oracle.
- ``forward_paged(batch, cache)``: a flat batch of prefill chunks and decodes whose K/V are
  written into the paged cache through slot mappings and read back through block tables
  (see ``kv_cache.py`` and ``batch.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .._util import unknown_name
from ..errors import ConfigError
from .attention import sdpa

if TYPE_CHECKING:
    from .batch import Batch
    from .kv_cache import PagedKVCache

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

PRESETS: dict[str, dict[str, Any]] = {
    # ~0.1M parameters: fast on one CPU core, for tests.
    "tiny": dict(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 intermediate_size=176),
    # ~6M parameters.
    "mini": dict(vocab_size=4096, hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=4,
                 intermediate_size=704),
    # ~100M parameters (GPT-2-small-sized, Llama-shaped, tied embeddings).
    "small": dict(vocab_size=32000, hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=4,
                  intermediate_size=2048, tie_word_embeddings=True),
}


@dataclass(frozen=True)
class ModelConfig:
    """Shape, dtype and seed of the decoder. ``ModelConfig.preset("tiny")`` for the presets."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    head_dim: int | None = None          # default: hidden_size // num_heads
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}", field=name, value=value)
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ConfigError(
                    f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                    "set head_dim", field="head_dim", value=None)
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int) \
                or self.head_dim < 2 or self.head_dim % 2:
            raise ConfigError(f"head_dim must be an even int >= 2 (rotary pairs), got {self.head_dim!r}",
                              field="head_dim", value=self.head_dim)
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads {self.num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}",
                field="num_kv_heads", value=self.num_kv_heads)
        if isinstance(self.dtype, torch.dtype):
            names = {v: k for k, v in DTYPES.items()}
            if self.dtype not in names:
                raise ConfigError(f"unsupported dtype {self.dtype}; valid: {', '.join(DTYPES)}",
                                  field="dtype", value=self.dtype, valid=tuple(DTYPES))
            object.__setattr__(self, "dtype", names[self.dtype])
        if self.dtype not in DTYPES:
            raise unknown_name(ConfigError, "dtype", self.dtype, DTYPES, field="dtype")
        for name in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive finite number, got {value!r}",
                                  field=name, value=value)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {self.seed!r}", field="seed", value=self.seed)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named preset (``tiny``, ``mini``, ``small``), optionally with fields overridden."""
        if name not in PRESETS:
            raise unknown_name(ConfigError, "model preset", name, PRESETS, field="preset")
        known = {f.name for f in fields(cls)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise ConfigError(f"unknown ModelConfig field(s) {', '.join(bad)}", field=bad[0], value=None)
        return cls(**{**PRESETS[name], **overrides})

    def replace(self, **changes: Any) -> ModelConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V one token holds across all layers."""
        assert self.head_dim is not None
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.torch_dtype.itemsize

    def num_parameters(self) -> int:
        """Parameter count, computed from the shape (no weights built)."""
        h, hd = self.hidden_size, self.head_dim
        assert hd is not None
        attn = h * self.num_heads * hd * 2 + h * self.num_kv_heads * hd * 2
        mlp = 3 * h * self.intermediate_size
        per_layer = attn + mlp + 2 * h
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embed + h


# ---------------------------------------------------------------------------- layers


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[T, 1, head_dim]`` for token positions ``[T]`` (Llama's half-split layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device,
                                             dtype=torch.float32) / head_dim))
    freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


# attend(layer, q [T, H, hd], k [T, KVH, hd], v [T, KVH, hd]) -> [T, H, hd]
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        hd = cfg.head_dim
        assert hd is not None
        self.layer, self.num_heads, self.num_kv_heads, self.head_dim = layer, cfg.num_heads, cfg.num_kv_heads, hd
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * hd, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend) -> torch.Tensor:
        t = x.shape[0]
        q = self.q_proj(x).view(t, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(t, self.num_kv_heads, self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = attend(self.layer, q, k, v)
        return self.o_proj(out.reshape(t, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attend)
        return x + self.mlp(self.post_attention_layernorm(x))


# ---------------------------------------------------------------------------- model


class LlamaModel(nn.Module):
    """The decoder. Build with ``LlamaModel(cfg, device)``: weights are drawn from ``cfg.seed``
    on the CPU (so every device gets the same weights), then moved and cast."""

    def __init__(self, cfg: ModelConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = cfg
        with torch.device("meta"):
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
            self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
            self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
            self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.to_empty(device="cpu")
        self._init_weights()
        self.to(device=device, dtype=cfg.torch_dtype)
        self.eval()
        self.requires_grad_(False)

    def _init_weights(self) -> None:
        gen = torch.Generator(device="cpu").manual_seed(self.config.seed)
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.data.fill_(1.0)
            elif name == "embed_tokens.weight":
                p.data.normal_(0.0, 1.0, generator=gen)
            else:  # Linear [out, in]: unit-variance outputs for unit-variance inputs
                p.data.normal_(0.0, 1.0 / math.sqrt(p.shape[1]), generator=gen)
        if self.lm_head is None:  # tied: scale the shared matrix's logits like an untied head
            self._tied_scale = 1.0 / math.sqrt(self.config.hidden_size)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head on hidden states ``[T, hidden]`` -> float32 logits ``[T, vocab]``."""
        h = self.norm(hidden)
        if self.lm_head is None:
            return (F.linear(h, self.embed_tokens.weight) * self._tied_scale).float()
        return self.lm_head(h).float()

    def hidden_states(self, token_ids: torch.Tensor, positions: torch.Tensor, attend: Attend) -> torch.Tensor:
        cfg = self.config
        assert cfg.head_dim is not None
        x = self.embed_tokens(token_ids)
        cos, sin = rotary_cos_sin(positions, cfg.head_dim, cfg.rope_theta, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, attend)
        return x

    @torch.inference_mode()
    def forward_dense(self, token_ids: torch.Tensor | list[int]) -> torch.Tensor:
        """Logits ``[L, vocab]`` (float32) of one sequence: no cache, full causal attention."""
        dev = self.embed_tokens.weight.device
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=dev)
        positions = torch.arange(ids.shape[0], device=dev)

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            o = sdpa(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], is_causal=True)
            return o[0].transpose(0, 1)

        return self.logits(self.hidden_states(ids, positions, attend))

    @torch.inference_mode()
    def forward_paged(self, batch: Batch, cache: PagedKVCache) -> torch.Tensor:
        """Logits (float32) of ``batch.logit_rows`` for a flat batch, through the paged cache."""
        hidden = self.hidden_states(batch.token_ids, batch.positions,
                                    lambda layer, q, k, v: cache.attend(layer, q, k, v, batch))
        if batch.logit_rows is not None:
            hidden = hidden.index_select(0, batch.logit_rows)
        return self.logits(hidden)
