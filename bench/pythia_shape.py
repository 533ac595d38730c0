"""What `gptwaves reproduce --hf-model` costs at Pythia-70m's shape, measured on a local suite.

No network: a GPT-NeoX of Pythia-70m's width and depth (hidden 512, 6 layers, 8 heads,
intermediate 2048, rotary 0.25, context 2048) with a byte-level BPE vocabulary of 8000 trained
here on the corpus is saved as two revisions (step0 and step100, two random initialisations:
speed and disk do not depend on training). ``reproduce`` runs over them in a child process at
reduced sample counts; the script prints the time of each stage per revision, the child's peak
RSS and the bytes written per revision, and the linear extrapolation to the default sizes.

    python bench/pythia_shape.py --corpus tinyshakespeare.txt --out /tmp/pythia-shape

Results and the extrapolation to ``pythia-70m --revisions log``: BENCHMARKS.md, README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HIDDEN, LAYERS, HEADS, VOCAB = 512, 6, 8, 8000


def build_suite(root: Path, corpus: Path, steps=(0, 100)) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator([corpus.read_text()], trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")
    for i, s in enumerate(steps):
        torch.manual_seed(i)
        cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=4 * HIDDEN, max_position_embeddings=2048,
                            rotary_pct=0.25, bos_token_id=0, eos_token_id=0)
        m = GPTNeoXForCausalLM(cfg)
        d = root / f"step{s}"
        m.save_pretrained(d)
        tok.save_pretrained(d)
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=os.environ.get("GPTWAVES_CORPUS"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--record-samples", type=int, default=16)
    ap.add_argument("--spelling-samples", type=int, default=200)
    a = ap.parse_args()
    suite = a.out / "suite"
    if not suite.exists():
        t = time.perf_counter()
        build_suite(suite, a.corpus)
        print(f"suite built in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    run = a.out / "run"
    cmd = [sys.executable, "-m", "gptwaves", "reproduce", "--hf-model", str(suite), "--out", str(run),
           "--record-samples", str(a.record_samples), "--spelling-samples", str(a.spelling_samples), "--quiet"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    repro = json.loads((run / "reproduce.json").read_text())
    n_rev = len(repro["hf"]["revisions"])
    rec = sorted((run / "recordings").glob("*.h5"))
    main = [p for p in rec if p.stem.startswith("iter_") and "." not in p.stem]
    res = {
        "date": time.strftime("%Y-%m-%d"), "threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": os.getloadavg(), "revisions": n_rev, "record_samples": a.record_samples,
        "spelling_samples": a.spelling_samples, "wall_s": round(wall, 1), "timings": repro["timings"],
        "peak_rss_mib": round(peak_mib), "recordings": len(rec),
        "bytes_main_recording": [p.stat().st_size for p in main],
        "bytes_all_recordings": sum(p.stat().st_size for p in rec),
        "bytes_run": sum(p.stat().st_size for p in run.rglob("*") if p.is_file()),
        "bytes_revision_weights": sum(p.stat().st_size for p in (suite / "step0").iterdir()),
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
