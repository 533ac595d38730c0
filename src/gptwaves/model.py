"""A readable decoder-only GPT with nanoGPT/minGPT parameter names (docs/method.md, Model).

Parameter names are exactly those of nanoGPT and minGPT (``transformer.wte``, ``transformer.wpe``,
``transformer.h.{i}.ln_1``, ``.attn.c_attn``, ``.attn.c_proj``, ``.ln_2``, ``.mlp.c_fc``,
``.mlp.c_proj``, ``transformer.ln_f``, ``lm_head``), so their checkpoints load directly.

The forward pass can return the hidden states of the recording taps without global hooks. Their
names follow TransformerLens's style; two meanings differ from TransformerLens's and are kept as
docs/method.md, Recording waves, defines them (the decision and its reasons are stated there):

- ``hook_embed``: token **+ position** embedding (TransformerLens: token only; its
  ``blocks.0.hook_resid_pre`` is this sum),
- ``blocks.{i}.hook_resid_post``: residual stream after block ``i`` (as in TransformerLens),
- ``ln_final.hook_normalized``: output of the final LayerNorm **after** its weight and bias
  (TransformerLens: normalised, before them).

It also supports an explicit key/value cache for batched incremental generation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

from .errors import SettingsError


@dataclass
class GPTConfig:
    block_size: int = 128
    vocab_size: int = 65
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 192
    dropout: float = 0.1
    bias: bool = True  # biases in Linear and LayerNorm (minGPT: True; nanoGPT char: False)
    tie_weights: bool = False  # minGPT unties, nanoGPT ties wte and lm_head
    gelu: str = "tanh"  # "tanh" (minGPT NewGELU) or "exact" (nanoGPT nn.GELU)

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SettingsError(f"model setting {name} must be a positive integer, not {v!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0.0 <= float(self.dropout) < 1.0:
            raise SettingsError(f"model setting dropout must be in [0, 1), not {self.dropout!r}")
        if not isinstance(self.bias, bool) or not isinstance(self.tie_weights, bool):
            raise SettingsError("model settings bias and tie_weights must be true or false")
        if self.n_embd % self.n_head != 0:
            raise SettingsError(f"model setting n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.gelu not in ("tanh", "exact"):
            raise SettingsError(f"model setting gelu must be 'tanh' or 'exact', not {self.gelu!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def tap_names(n_layer: int) -> list[str]:
    """All tap names of a model with ``n_layer`` blocks, in depth order."""
    return ["hook_embed", *[f"blocks.{i}.hook_resid_post" for i in range(n_layer)],
            "ln_final.hook_normalized"]


class KVCache:
    """Preallocated keys/values for every layer: (B, n_head, max_len, head_dim) each."""

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int, device, dtype):
        hs = cfg.n_embd // cfg.n_head
        shape = (cfg.n_layer, batch, cfg.n_head, max_len, hs)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # number of valid positions
        self.max_len = max_len


#: Dropout mask kinds (docs/method.md, Model, "Dropout masks"): ``bernoulli`` is torch's own ``nn.Dropout`` (one
#: random number per element); ``packed16`` draws 64-bit random integers and uses each 16-bit quarter
#: for one mask element, which is about four times cheaper on a CPU (``bernoulli_`` was the largest
#: single cost of a training iteration). The two give different masks, so a run keeps the kind it
#: started with (train.py records it in run.json).
DROPOUT_MASKS = ("bernoulli", "packed16")


def packed16_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout with masks drawn 16 bits per element from torch's global generator.

    Each element is kept when its 16-bit draw is below ``t = round((1 - p) * 65536)``, so it is
    kept with probability ``t / 65536`` (within 1/65536 of ``1 - p``), and kept elements are
    multiplied by ``65536 / t`` rounded to ``x``'s dtype: the expectation of the output is ``x`` up to
    that rounding (in bf16 the scale is 0.16 % low for p = 0.1, as torch's own dropout's is).
    The mask is one tensor of ``x``'s dtype, so the backward pass is one multiplication.
    """
    t = round((1.0 - p) * 65536)
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    keep = bits.view(torch.int16)[:n].view(x.shape) < t - 32768  # int16 draw + 32768 is uniform on 0..65535
    return x * torch.where(keep, torch.full((), 65536.0 / t, dtype=x.dtype, device=x.device), 0.0)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose masks can be drawn the ``packed16`` way (see :data:`DROPOUT_MASKS`)."""

    masks: str = "bernoulli"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.masks == "packed16" and self.training and self.p > 0:
            return packed16_dropout(x, self.p)
        return super().forward(x)


class CausalSelfAttention(nn.Module):
    #: On a CPU, training with attention dropout is faster written out (q k^T, mask, softmax,
    #: dropout, att v) than through scaled_dot_product_attention's math kernel, clearly so under
    #: bf16 autocast (measured by ``gptwaves bench train``). GPUs keep SDPA's fused kernels.
    explicit_train_attention: bool = True

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        mask = torch.ones(cfg.block_size, cfg.block_size, dtype=torch.bool).tril()
        self.register_buffer("causal_mask", mask, persistent=False)  # not in the state dict
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = Dropout(cfg.dropout)
        self.attn_dropout = Dropout(cfg.dropout)  # the written-out training attention's
        self.n_head = cfg.n_head
        self.n_embd = cfg.n_embd
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                last_only: bool = False) -> torch.Tensor:
        B, T, C = x.shape
        hs = C // self.n_head
        if last_only:  # the newest position's output only: keys/values of all, one query
            return self._forward_last(x, hs)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        if cache is None:
            if (self.training and self.dropout > 0 and x.device.type == "cpu"
                    and self.explicit_train_attention):
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
                att = att.masked_fill(~self.causal_mask[:T, :T], float("-inf")).softmax(dim=-1).to(v.dtype)
                y = self.attn_dropout(att) @ v
            else:
                y = F.scaled_dot_product_attention(
                    q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
                )
        else:
            start = cache.length
            cache.k[layer, :, :, start : start + T] = k
            cache.v[layer, :, :, start : start + T] = v
            keys = cache.k[layer, :, :, : start + T]
            vals = cache.v[layer, :, :, : start + T]
            if T == 1:
                y = F.scaled_dot_product_attention(q, keys, vals)
            else:  # new positions attend to the whole cache and causally among themselves
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
                y = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def _forward_last(self, x: torch.Tensor, hs: int) -> torch.Tensor:
        # Uncached, causal: the last position attends to every position, so no mask is needed.
        B, T, C = x.shape
        w, b = self.c_attn.weight, self.c_attn.bias
        q = F.linear(x[:, -1:], w[:C], None if b is None else b[:C])
        k, v = F.linear(x, w[C:], None if b is None else b[C:]).split(C, dim=2)
        q = q.view(B, 1, self.n_head, hs).transpose(1, 2)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, 1, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    #: Without autograd, apply GELU in place (same values, one (B, T, 4C) buffer less: measurably
    #: faster window forwards past the context); ``gptwaves bench record`` switches it off for its
    #: baseline.
    inplace_gelu: bool = True

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU(approximate="tanh" if cfg.gelu == "tanh" else "none")
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if h.requires_grad or not self.inplace_gelu:  # autograd needs the input of GELU: out of place
            h = self.gelu(h)
        else:  # inference: in place, the same values without a second (B, T, 4C) buffer
            torch.ops.aten.gelu_(h, approximate=self.gelu.approximate)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                last_only: bool = False) -> torch.Tensor:
        """Residual block; ``last_only`` returns the newest position only (B, 1, C)."""
        x = (x[:, -1:] if last_only else x) + self.attn(self.ln_1(x), cache, layer, last_only)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    #: Run the last block for the newest position only when nothing else leaves the model (see
    #: ``forward``); ``gptwaves bench record`` switches it off for its baseline.
    newest_only_last_block: bool = True

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=Dropout(cfg.dropout),
                h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def set_dropout_masks(self, kind: str) -> "GPT":
        """Draw every dropout mask of this model the ``kind`` way (one of :data:`DROPOUT_MASKS`)."""
        if kind not in DROPOUT_MASKS:
            raise SettingsError(f"dropout masks must be one of {', '.join(DROPOUT_MASKS)}, not {kind!r}")
        for m in self.modules():
            if isinstance(m, Dropout):
                m.masks = kind
        return self

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def tap_names(self) -> list[str]:
        return tap_names(self.config.n_layer)

    # long: the docstring states every tap, cache and edit option; the body is one pass through the blocks
    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        taps: list[str] | tuple[str, ...] | None = None,
        tap_positions: slice | None = None,
        cache: KVCache | None = None,
        logits_last_only: bool = False,
        edits: dict | None = None,
    ):
        """Run the model.

        Parameters
        ----------
        idx : LongTensor (B, T)
            Token ids. With ``cache``, these are the new tokens following ``cache.length``
            cached positions.
        targets : LongTensor (B, T), optional
            If given, the mean cross-entropy loss is returned as well.
        taps : sequence of str, optional
            Tap names whose hidden states to return (see :func:`tap_names`).
        tap_positions : slice, optional
            Which positions of the taps to keep (default all; ``slice(-1, None)`` keeps the newest).
        cache : KVCache, optional
            Key/value cache, extended in place by ``T`` positions.
        logits_last_only : bool
            Compute the head only for the last position (generation). Without a cache and with
            ``tap_positions=slice(-1, None)`` the last block also runs its queries and MLP for the
            last position only (values unchanged up to float rounding; tested to 1e-5).
        edits : dict, optional
            Tap name -> function ``f(h) -> h`` applied to the hidden state at that tap (all
            positions) before the computation continues: channel interventions (docs/method.md, Interventions).
            Recorded tap values are the edited ones.

        Returns
        -------
        logits, loss, tap_values
            ``loss`` is None without targets; ``tap_values`` is a dict (empty without ``taps``).
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise SettingsError(
                f"sequence of length {start + T} exceeds block_size {self.config.block_size}"
            )
        want = set(taps or ())
        sl = tap_positions if tap_positions is not None else slice(None)
        out: dict[str, torch.Tensor] = {}
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        edits = edits or {}
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        if "hook_embed" in edits:
            x = edits["hook_embed"](x)
        if "hook_embed" in want:
            out["hook_embed"] = x[:, sl]
        x = self.transformer.drop(x)
        # Only the newest position leaves the model (uncached window forward of generation beyond
        # the context): the last block then needs keys/values of every position but queries, MLP,
        # final LayerNorm and head for the newest one only. Same values, about 1/7 less work for
        # 6 blocks; not when an edit would see the other positions of the last block.
        L = self.config.n_layer
        newest_only = (self.newest_only_last_block and cache is None and targets is None and logits_last_only
                       and sl == slice(-1, None)
                       and not edits.keys() & {f"blocks.{L - 1}.hook_resid_post", "ln_final.hook_normalized"})
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i, last_only=newest_only and i == L - 1)
            name = f"blocks.{i}.hook_resid_post"
            if name in edits:
                x = edits[name](x)
            if name in want:
                out[name] = x[:, sl]
        x = self.transformer.ln_f(x)
        if "ln_final.hook_normalized" in edits:
            x = edits["ln_final.hook_normalized"](x)
        if "ln_final.hook_normalized" in want:
            out["ln_final.hook_normalized"] = x[:, sl]
        if cache is not None:
            cache.length += T
        if logits_last_only and targets is None:
            logits = self.lm_head(x[:, -1:, :])
        else:
            logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        unknown = (want - set(out)) | (set(edits) - set(self.tap_names))
        if unknown:
            raise SettingsError(f"unknown tap names: {sorted(unknown)}")
        return logits, loss, out
