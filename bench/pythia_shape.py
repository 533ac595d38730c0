"""What `gptwaves reproduce --hf-model` costs at Pythia-70m's shape, measured on a local suite.

No network: a GPT-NeoX of Pythia-70m's width and depth (hidden 512, 6 layers, 8 heads,
intermediate 2048, rotary 0.25, context 2048) with a byte-level BPE vocabulary of 8000 trained
here on the corpus is saved as two revisions (step0 and step100, two random initialisations:
speed and disk do not depend on training). ``reproduce`` runs over them in a child process at
reduced sample counts (and without the extra seeds; the three prompt variants stay); the script
prints the time of each stage, the child's CPU time and peak RSS, and the bytes written.

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


CHILD = """
import json, sys
from gptwaves.reproduce import HF_ANALYSIS, reproduce_hf
import dataclasses
a = json.loads(sys.argv[1])
an = dataclasses.replace(HF_ANALYSIS, record_samples=a["record_samples"], spelling_samples=a["spelling_samples"],
                         repeat_seeds=a["repeat_seeds"])
reproduce_hf(a["suite"], None, a["run"], analysis=an, device="cpu", progress=False)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=os.environ.get("GPTWAVES_CORPUS"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--record-samples", type=int, default=8)
    ap.add_argument("--spelling-samples", type=int, default=100)
    ap.add_argument("--repeat-seeds", type=int, default=1, help="1: no extra seeds (the prompt variants stay)")
    a = ap.parse_args()
    suite = a.out / "suite"
    if not suite.exists():
        t = time.perf_counter()
        build_suite(suite, a.corpus)
        print(f"suite built in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    run = a.out / "run"
    arg = json.dumps({"suite": str(suite), "run": str(run), "record_samples": a.record_samples,
                      "spelling_samples": a.spelling_samples, "repeat_seeds": a.repeat_seeds})
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, arg], check=True)
    wall = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    repro = json.loads((run / "reproduce.json").read_text())
    n_rev = len(repro["hf"]["revisions"])
    rec = sorted((run / "recordings").glob("*.h5"))
    main_rec = [p for p in rec if "." not in p.stem]
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": os.getloadavg(), "revisions": n_rev, "record_samples": a.record_samples,
        "spelling_samples": a.spelling_samples, "wall_s": round(wall, 1),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "timings": repro["timings"],
        "peak_rss_mib": round(ru.ru_maxrss / 1024), "recordings": len(rec),
        "bytes_main_recording": [p.stat().st_size for p in main_rec],
        "bytes_all_recordings": sum(p.stat().st_size for p in rec),
        "bytes_run": sum(p.stat().st_size for p in run.rglob("*") if p.is_file()),
        "bytes_revision_weights": sum(p.stat().st_size for p in (suite / "step0").iterdir()),
    }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
