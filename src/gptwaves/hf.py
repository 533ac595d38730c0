"""Hugging Face causal language models as instruments (optional extra ``gptwaves[hf]``).

The recorder, wave analysis and spelling statistics work for any ``transformers`` causal LM:
taps are the model's hidden states per layer (``hidden.0`` = embeddings output, ``hidden.{i}``
= output of layer i; for GPT-2 the last one is after the final LayerNorm), a step is a token,
and spelling is measured on the decoded text. For the character classes of the wave analysis a
token stands for its first character (" the" is a space-initial token).

With network access::

    gptwaves record --hf-model gpt2 --run runs/gpt2 --samples 64 --steps 256
    gptwaves waves  --hf-model gpt2 --run runs/gpt2
    gptwaves spelling --hf-model gpt2 --run runs/gpt2 --lexicon words.txt

Pythia's training checkpoints (``EleutherAI/pythia-70m`` with ``--hf-revision step1000`` etc.)
give the across-training analysis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .errors import GptwavesError
from .sample import Batch, SamplingConfig, entropy_of, filter_logits


@dataclass
class HFConfig:
    n_embd: int
    n_layer: int
    block_size: int
    vocab_size: int
    name: str
    revision: str | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def safe_name(name: str, revision: str | None = None) -> str:
    """A file-name-safe label for a model: no path separators, no '..'."""

    def clean(t: str) -> str:
        return re.sub(r"\.{2,}", "_", re.sub(r"[^A-Za-z0-9._-]+", "_", t))

    s = clean(name.strip("/").split("/")[-1] if "/" in name else name)
    if revision:
        s += "@" + clean(revision)
    return "hf-" + s


class HFModel:
    """A ``transformers`` causal LM with the interface the recorder needs."""

    def __init__(self, name_or_path: str, device: str | torch.device = "cpu", revision: str | None = None):
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise GptwavesError("Hugging Face models need the optional extra: pip install 'gptwaves[hf]'") from None
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
            self.model = AutoModelForCausalLM.from_pretrained(name_or_path, revision=revision,
                                                              dtype=torch.float32)
        except (OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or ["unknown error"])[0]
            raise GptwavesError(f"cannot load Hugging Face model {name_or_path!r}: {first[:200]}") from None
        self.model.eval().to(device)
        import inspect

        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        cfg = self.model.config
        n_layer = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer")
        block = (getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 1024)
        V = self.model.get_output_embeddings().weight.shape[0]
        self.config = HFConfig(n_embd=cfg.hidden_size, n_layer=n_layer, block_size=int(block), vocab_size=V,
                               name=name_or_path, revision=revision)
        self.tap_names = [f"hidden.{i}" for i in range(n_layer + 1)]
        n_tok = len(self.tokenizer)
        self.vocab = [self.tokenizer.decode([i]) if i < n_tok else "" for i in range(V)]
        self.name = safe_name(name_or_path, revision)

    def parameters(self):
        return self.model.parameters()

    def encode(self, text: str, what: str = "prompt") -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise GptwavesError(f"{what} encodes to no tokens")
        return list(ids)

    def meta(self) -> dict:
        return {"iteration": None, "weights_sha256": f"hf:{self.config.name}@{self.config.revision or 'main'}",
                "config": self.config.to_dict(), "vocab": self.vocab, "source": self.config.name}

    @torch.no_grad()
    def _forward(self, ids: torch.Tensor, past=None):
        # newer transformers call the cache argument `cache`, older ones `past_key_values`
        kw = {self._cache_arg: past}
        out = self.model(input_ids=ids, use_cache=True, output_hidden_states=True, **kw)
        new = getattr(out, "cache", None)
        if new is None:
            new = getattr(out, "past_key_values", None)
        return out.logits, out.hidden_states, new

    @torch.no_grad()
    def generate_batch(self, prompt_ids: Sequence[int], steps: int, batch_size: int, cfg: SamplingConfig, *,
                       taps: Sequence[str] = (), generator: torch.Generator | None = None,
                       tap_dtype=np.float32, edits=None) -> Batch:
        """Batched sampling with the model's own KV cache, recording hidden states at each step.

        Beyond the model's context the window is cropped and recomputed (crop semantics).
        """
        if edits:
            raise GptwavesError("channel interventions are not supported for Hugging Face models")
        if steps <= 0:
            raise GptwavesError(f"steps must be positive, not {steps}")
        bad = [t for t in taps if t not in self.tap_names]
        if bad:
            raise GptwavesError(f"unknown tap names: {', '.join(bad)} (known: hidden.0 .. hidden.{self.config.n_layer})")
        device = next(self.model.parameters()).device
        P = len(prompt_ids)
        B, n, bs = batch_size, P - 1 + steps, self.config.block_size
        idx = [int(t) for t in taps_index(taps)]
        seq = torch.empty(B, P + steps, dtype=torch.long, device=device)
        seq[:, :P] = torch.tensor(list(prompt_ids), device=device)
        rec = {t: np.empty((B, n, self.config.n_embd), dtype=tap_dtype) for t in taps}
        ent = np.empty((B, n), dtype=np.float32)

        def store(j0, logits, hs):
            t = logits.shape[1]
            ent[:, j0 : j0 + t] = entropy_of(logits).cpu().numpy()
            for name, i in zip(taps, idx):
                rec[name][:, j0 : j0 + t] = hs[i][:, -t:].float().cpu().numpy()

        first = min(P, bs)
        logits, hs, past = self._forward(seq[:, :first])
        store(0, logits, hs)
        j = first - 1
        while j < P - 1:  # long prompts: cropped full windows
            j += 1
            logits, hs, past = self._forward(seq[:, max(0, j - bs + 1) : j + 1])
            store(j, logits[:, -1:], [h[:, -1:] for h in hs])
            past = None
        last = logits[:, -1]
        for step in range(steps):
            lg = filter_logits(last.float() / cfg.temperature, cfg.top_k, cfg.top_p)
            seq[:, j + 1] = torch.multinomial(lg.softmax(-1).cpu(), 1, generator=generator).squeeze(-1).to(device)
            if step == steps - 1:
                break
            j += 1
            if past is not None and j < bs:
                logits, hs, past = self._forward(seq[:, j : j + 1], past)
            else:
                logits, hs, past = self._forward(seq[:, max(0, j - bs + 1) : j + 1])
                past = None
            store(j, logits[:, -1:], [h[:, -1:] for h in hs])
            last = logits[:, -1]
        return Batch(tokens=seq.cpu().numpy(), entropy=ent, taps=rec, prompt_len=P)


def taps_index(taps: Sequence[str]) -> list[int]:
    return [int(t.split(".")[1]) for t in taps]
