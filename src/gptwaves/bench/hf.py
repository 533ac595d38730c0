"""Recording a Hugging Face model against ``transformers``' own generate, and memory at width.

What is measured (random-init GPT-NeoX, Pythia's architecture, with a character tokenizer built
here: no download; speed and memory do not depend on training; prompt "\\n")
---------------------------------------------------------------------------------------------
(a) gptwaves recording: :func:`gptwaves.record.record` of :class:`gptwaves.hf.HFModel`, every
    hidden state (``hidden.0`` ... ``hidden.L``), HDF5 file included, ``S`` samples x ``steps``;
(b) the reference: ``model.generate(do_sample=True, output_hidden_states=True,
    return_dict_in_generate=True)`` with the same samples (one call for all of them) and the
    same number of new tokens (``min_new_tokens = max_new_tokens = steps``), hidden states
    kept in memory as generate returns them.

Rows: tokens/s of (a) over (b) (target >= 1x); peak resident memory above the loaded model
(``VmHWM`` of a fresh process per measurement) of (a) and of (b) at two sample counts (target
for (a): flat, <= 1.25x from ``S1`` to ``S2``; (b) grows about linearly and is reported); and the
peak RSS of a float16 recording of a tiny-depth model of width d_model 2048 at two sample
counts (the recorder streams one batch at a time: flat in samples, bounded by one batch).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import check, log, make_row

CHARS = "\n !',.:;?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def build_model(folder: Path, hidden: int, layers: int, heads: int, context: int = 2048) -> Path:
    """Save a random GPT-NeoX with a character tokenizer into ``folder`` (no network)."""
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(CHARS)}, merges=[]))
    tk.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=tk).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=len(CHARS), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=context,
                        rotary_pct=0.25, bos_token_id=0, eos_token_id=0)
    GPTNeoXForCausalLM(cfg).save_pretrained(folder)
    return folder


def _peak_mib() -> float:
    from .record import peak_rss_mib

    return peak_rss_mib()


def _record_child(folder: str, samples: int, steps: int, batch_size: int, dtype: str) -> dict:
    """In a fresh process: load, record all hidden states, return seconds and peak RSS."""
    from ..hf import HFModel
    from ..record import RecordSpec, record
    from ..sample import SamplingConfig

    m = HFModel(folder)
    base = _peak_mib()
    spec = RecordSpec(samples=samples, steps=steps, prompt="\n", taps=tuple(m.tap_names),
                      sampling=SamplingConfig(seed=0), batch_size=batch_size, dtype=dtype)
    with tempfile.TemporaryDirectory(prefix="gptwaves-bench-hf-") as d:
        t0 = time.perf_counter()
        record(m, m.meta(), m.vocab, spec, Path(d) / "rec.h5", progress=False)
        dt = time.perf_counter() - t0
    return {"seconds": dt, "peak_mib": _peak_mib(), "model_mib": base}


def _generate_child(folder: str, samples: int, steps: int) -> dict:
    """In a fresh process: ``transformers`` generate with hidden states, same sizes."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    base = _peak_mib()
    ids = torch.zeros(samples, 1, dtype=torch.long)  # "\n" is id 0 of CHARS
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                         max_new_tokens=steps, min_new_tokens=steps, output_hidden_states=True,
                         return_dict_in_generate=True, pad_token_id=0)
    dt = time.perf_counter() - t0
    assert out.sequences.shape == (samples, 1 + steps)
    return {"seconds": dt, "peak_mib": _peak_mib(), "model_mib": base}


def _probe(fn: str, *args) -> dict:
    code = (f"import json, sys; from gptwaves.bench.hf import {fn}; "
            f"print(json.dumps({fn}(*json.loads(sys.argv[1]))))")
    p = subprocess.run([sys.executable, "-c", code, json.dumps(list(args))], capture_output=True, text=True,
                       check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{fn} failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run(quick: bool = False, corpus=None, *, hidden: int | None = None, layers: int = 2,
        samples: int | None = None, steps: int | None = None, mem_samples: tuple[int, int] | None = None,
        batch_size: int | None = None, wide: int = 2048, wide_samples: tuple[int, int] | None = None,
        wide_steps: int | None = None) -> list[dict]:
    """The rows of this bench (``corpus`` unused: random-init models)."""
    hidden = hidden or (64 if quick else 128)
    samples = samples or (16 if quick else 64)
    steps = steps or (32 if quick else 128)
    mem_samples = mem_samples or ((16, 64) if quick else (64, 512))
    batch_size = batch_size or (16 if quick else 64)
    wide_samples = wide_samples or ((8, 32) if quick else (64, 256))
    wide_steps = wide_steps or (16 if quick else 64)
    wide_batch = min(wide_samples[0], batch_size)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gptwaves-bench-hf-model-") as d:
        tiny = build_model(Path(d) / "tiny", hidden, layers, heads=max(1, hidden // 32))
        log(f"hf: record vs generate, GPT-NeoX d={hidden} L={layers}, {samples} x {steps}")
        rec = _probe("_record_child", str(tiny), samples, steps, batch_size, "float32")
        gen = _probe("_generate_child", str(tiny), samples, steps)
        tok = samples * steps
        r_tps, g_tps = tok / rec["seconds"], tok / gen["seconds"]
        rows.append(make_row(f"hf record vs transformers generate (GPT-NeoX d{hidden} L{layers}), tokens/s",
                             r_tps, "tok/s", baseline=g_tps, target=">= 1x", ok=check(r_tps / g_tps, ">=", 1.0),
                             notes=f"{samples} samples x {steps} steps, all {layers + 1} hidden states; recording "
                                   "includes the HDF5 file; one run each in fresh processes"))
        mem = {}
        for s in mem_samples:
            log(f"hf: memory at {s} samples")
            mem[s] = (_probe("_record_child", str(tiny), s, steps, batch_size, "float32"),
                      _probe("_generate_child", str(tiny), s, steps))
        s1, s2 = mem_samples
        over = lambda r: max(0.01, r["peak_mib"] - r["model_mib"])  # noqa: E731
        ra, rb = over(mem[s1][0]), over(mem[s2][0])
        ga, gb = over(mem[s1][1]), over(mem[s2][1])
        rows.append(make_row(f"hf record peak RSS above the model, {s2} vs {s1} samples", rb, "MiB", baseline=ra,
                             target="<= 1.25x (flat)", ok=check(rb / ra, "<=", 1.25),
                             notes=f"batch {batch_size}; {steps} steps; absolute peaks {mem[s1][0]['peak_mib']:.0f} "
                                   f"and {mem[s2][0]['peak_mib']:.0f} MiB"))
        rows.append(make_row(f"generate(output_hidden_states) peak RSS above the model, {s2} vs {s1} samples", gb,
                             "MiB", baseline=ga, target=None,
                             notes=f"sample ratio {s2 / s1:.0f}x; absolute peaks {mem[s1][1]['peak_mib']:.0f} and "
                                   f"{mem[s2][1]['peak_mib']:.0f} MiB; recording / generate at {s2}: "
                                   f"{rb / gb:.2f}x"))
        wide_dir = build_model(Path(d) / "wide", wide, 2, heads=max(1, wide // 128))
        wide_rows = {}
        for s in wide_samples:
            log(f"hf: float16 recording at d_model {wide}, {s} samples x {wide_steps} steps")
            wide_rows[s] = _probe("_record_child", str(wide_dir), s, wide_steps, wide_batch, "float16")
        w1, w2 = wide_samples
        pa, pb = wide_rows[w1]["peak_mib"], wide_rows[w2]["peak_mib"]
        rows.append(make_row(f"hf record peak RSS at d_model {wide} (float16, 2 layers), {w2} vs {w1} samples", pb,
                             "MiB", baseline=pa, target="<= 1.25x (flat)", ok=check(pb / pa, "<=", 1.25),
                             notes=f"model loaded: {wide_rows[w2]['model_mib']:.0f} MiB; batch {wide_batch}; "
                                   f"{wide_steps} steps; 3 hidden states of {wide} channels; "
                                   f"{w2 * wide_steps / wide_rows[w2]['seconds']:.0f} tok/s"))
    return rows
