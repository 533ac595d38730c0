"""Fuzzing the artefacts of a run: every JSON, HDF5, NPZ and safetensors file a smoke run leaves is
damaged in many ways (truncated, wrong JSON type, a key of the wrong type, NaN, huge numbers, path
traversal in a file name, shapes that disagree, a cut-down sample list, an iteration that
disagrees with the file name, a permuted vocabulary) on a copy of the run, and each command that
reads it is run.

The promise: exit 0 with a correct result (a damaged cache is rebuilt to exactly what the clean
run holds), or a non-zero exit with one line ``gptwaves: error: ...``; never a traceback, never a
silently wrong number.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from gptwaves.cli import main
from gptwaves.io import sha256_file

pytestmark = pytest.mark.usefixtures("one_thread_module")

SRC = str(Path(__file__).resolve().parents[1] / "src")
LAST = "iter_0000020"
MID = "iter_0000010"
TAP = "blocks.1.hook_resid_post"
SPELL = ["--samples", "20"]  # the reproduce run's spelling settings (everything else default)
INTERVENE = ["--checkpoint", "last", "--tap", TAP, "--samples", "20", "--n-boot", "50", "--n-perm", "20", "--quiet"]

COMMANDS = {
    "record": lambda run: ["record", "--run", run, "--checkpoint", "all", "--samples", "4", "--steps", "40",
                           "--quiet"],
    "waves": lambda run: ["waves", "--run", run, "--samples", "4", "--steps", "40", "--quiet"],
    "spelling": lambda run: ["spelling", "--run", run, *SPELL, "--quiet"],
    "summary": lambda run: ["summary", "--run", run],
    "report": lambda run: ["report", "--run", run],
    "report-as-is": lambda run: ["report", "--run", run, "--no-summary"],
    "intervene": lambda run: ["intervene", "--run", run, "--channels", "0-3", "--mode", "ablate", *INTERVENE],
    "intervene-mean": lambda run: ["intervene", "--run", run, "--channels", "0-3", "--mode", "mean", *INTERVENE],
    "intervene-cluster": lambda run: ["intervene", "--run", run, "--channels", "cluster:1", "--mode", "ablate",
                                      *INTERVENE],
    "train": lambda run: ["train", "--preset", "smoke", "--out", run, "--max-iters", "20", "--device", "cpu",
                          "--quiet"],
    "publish": lambda run: ["publish", "run", run, str(Path(run).parent / "published")],
}
#: The interventions the smoke fixture computes once on a copy of the clean run (references).
INTERVENTIONS = ("intervene", "intervene-mean", "intervene-cluster")


# ------------------------------------------------------------------ the smoke run, built once

NOT_READ = shutil.ignore_patterns("*.png", "*.svg", "index.html", ".lock")  # copies stay small


def _corpus(tmp_path_factory) -> Path:
    from conftest import SHARED_TINY_SHAKESPEARE, make_text

    if SHARED_TINY_SHAKESPEARE.is_file():
        return SHARED_TINY_SHAKESPEARE
    p = tmp_path_factory.mktemp("c") / "corpus.txt"
    p.write_text(make_text(200_000))
    return p


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """``gptwaves reproduce --preset smoke`` with small sizes, plus one intervention (read-only)."""
    corpus = _corpus(tmp_path_factory)
    run = tmp_path_factory.mktemp("fuzz") / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH=SRC,
               GPTWAVES_CORPUS=str(corpus), GPTWAVES_FIGURES="none")  # figures are never read here (NOT_READ)
    p = subprocess.run([sys.executable, "-m", "gptwaves", "reproduce", "--preset", "smoke", "--out", str(run),
                        "--max-iters", "20", "--record-samples", "4", "--record-steps", "40",
                        "--spelling-samples", "20", "--device", "cpu", "--quiet"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTWAVES_CORPUS", str(corpus))
        assert main(COMMANDS["intervene"](str(run))) == 0
        (run / ".lock").unlink(missing_ok=True)
        yield run


@pytest.fixture(scope="module")
def clean_interventions(smoke, tmp_path_factory):
    """{command: result.json} of each intervention on an undamaged copy of the run (the oracle of
    a fuzzed intervention that exits 0)."""
    run = tmp_path_factory.mktemp("clean") / "run"
    shutil.copytree(smoke, run, ignore=NOT_READ)
    out = {}
    for cmd in INTERVENTIONS:
        before = set(run.glob("interventions/*/result.json"))
        assert main(COMMANDS[cmd](str(run))) == 0, cmd
        new = (set(run.glob("interventions/*/result.json")) - before) or before  # "intervene" is reused
        out[cmd] = {p.parent.name: _load(p) for p in new}
        (run / ".lock").unlink(missing_ok=True)
    return out


FIGURES = {
    "gptwaves.figures.waves": ("wave_heatmap", "selective_waves", "correlation_figure", "acf_figure",
                               "period_histogram", "channel_table_figure", "order_parameters_figure",
                               "coherence_null_figure", "correlation_comparison",
                               "repeatability_plasticity_figure"),
    "gptwaves.figures.spelling": ("plot_count_histograms", "plot_fano", "plot_decomposition", "plot_cascade",
                                  "plot_q_curves", "plot_rates"),
    "gptwaves.figures.intervention": ("plot_error_rates", "plot_word_lengths", "plot_count_histograms"),
    "gptwaves.figures.training": ("training_curves",),
}


@pytest.fixture
def no_figures(monkeypatch):
    """Drawing is not reading back: the figure functions draw nothing (everything the stages read
    to draw them is still read), which keeps each case to about a second."""
    import importlib

    for mod, names in FIGURES.items():
        m = importlib.import_module(mod)
        for n in names:
            assert hasattr(m, n), (mod, n)
            monkeypatch.setattr(m, n, lambda *a, **k: [])


# ------------------------------------------------------------------ mutations


def _load(p: Path):
    return json.loads(p.read_text())


def _dump(p: Path, obj) -> None:
    text = json.dumps(obj, allow_nan=True)
    p.write_text(text.replace('"__HUGE_FLOAT__"', "1e999").replace('"__NAN__"', "NaN"))


def _copy(src, dst):
    """``shutil.copy2``, except that a FIFO (a fuzzed file) is made again, not read."""
    if stat.S_ISFIFO(os.lstat(src).st_mode):
        os.mkfifo(dst)
        return dst
    return shutil.copy2(src, dst)


def _link_out(p: Path, folder: bool = False) -> None:
    """Replace ``p`` by a symbolic link to a copy of it outside the run (another run's file)."""
    outside = Path(str(p.resolve()).replace("/run/", "/elsewhere/", 1))
    assert outside != p.resolve()
    outside.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        shutil.copytree(p, outside)
        shutil.rmtree(p)
    else:
        shutil.copy2(p, outside)
        p.unlink()
    p.symlink_to(outside)


def truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def empty(p: Path) -> None:
    p.write_bytes(b"")


def as_list(p: Path) -> None:
    p.write_text("[1, 2, 3]\n")


def as_string(p: Path) -> None:
    p.write_text('"hello"\n')


def set_key(*path, value):
    """Set ``obj[path[0]][path[1]]...`` (``"*"`` walks into every value of a dict)."""
    def mutate(p: Path) -> None:
        obj = _load(p)

        def go(o, keys):
            k, rest = keys[0], keys[1:]
            if k == "*":
                for v in (o.values() if isinstance(o, dict) else o):
                    go(v, rest)
                return
            if not rest:
                if callable(value):
                    o[k] = value(o.get(k) if isinstance(o, dict) else o[k])
                else:
                    o[k] = value
            else:
                go(o[k], rest)
        go(obj, list(path))
        _dump(p, obj)
    return mutate


def del_key(*path):
    def mutate(p: Path) -> None:
        obj = _load(p)
        o = obj
        for k in path[:-1]:
            o = o[k]
        del o[path[-1]]
        _dump(p, obj)
    return mutate


def h5_fix_sidecar(h5: Path) -> None:
    """A consistent tamper: the sidecar's checksum follows the changed file."""
    side = h5.with_suffix(".json")
    meta = _load(side)
    meta["sha256"] = sha256_file(h5)
    side.write_text(json.dumps(meta))


def h5_edit(fn, fix_sidecar=True):
    def mutate(p: Path) -> None:
        with h5py.File(p, "r+") as f:
            fn(f)
        if fix_sidecar:
            h5_fix_sidecar(p)
    return mutate


def _replace_ds(f, name, data, **kw):
    del f[name]
    f.create_dataset(name, data=data, **kw)


def h5_attr(key, value):
    def fn(f):
        f.attrs[key] = value
    return h5_edit(fn)


def npz_edit(fn):
    def mutate(p: Path) -> None:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        fn(arrays)
        with open(p, "wb") as fh:
            np.savez(fh, **arrays)
    return mutate


def _key(tap, key):
    return f"{tap.replace('.', '_')}/{key}"


def npz_set(key, fn):
    def edit(a):
        a[_key(TAP, key)] = fn(a[_key(TAP, key)])
    return npz_edit(edit)


def npz_drop(key):
    def edit(a):
        del a[_key(TAP, key)]
    return npz_edit(edit)


def st_other_shapes(p: Path) -> None:
    """A valid safetensors file whose tensors have other shapes; the JSON's checksum follows."""
    import torch
    from safetensors.torch import load, save

    state = load(p.read_bytes())
    k = next(k for k in state if k.endswith("wte.weight"))
    state[k] = torch.zeros(state[k].shape[0] + 3, state[k].shape[1])
    data = save(state, metadata={"format": "gptwaves"})
    p.write_bytes(data)
    j = p.with_suffix(".json")
    meta = _load(j)
    import hashlib

    meta["weights_sha256"] = hashlib.sha256(data).hexdigest()
    j.write_text(json.dumps(meta))


def flip_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x5A
    p.write_bytes(bytes(data))


def cut_texts(p: Path) -> None:
    """A cut-down samples cache whose settings still say 20 samples."""
    obj = _load(p)
    obj["texts"] = obj["texts"][:5]
    _dump(p, obj)


def cut_samples_consistently(p: Path) -> None:
    """5 texts and a key that says 5 (a stale cache of other settings)."""
    obj = _load(p)
    obj["texts"] = obj["texts"][:5]
    obj["settings"]["samples"] = 5
    _dump(p, obj)


def short_texts(p: Path) -> None:
    obj = _load(p)
    obj["texts"] = [t[: len(t) // 2] for t in obj["texts"]]
    _dump(p, obj)


def counts_cut(p: Path) -> None:
    """Statistics of 5 samples in a result that says 20."""
    obj = _load(p)
    for k in ("correct", "misspelled"):
        obj["stats"]["counts"][k] = obj["stats"]["counts"][k][:5]
    _dump(p, obj)


def metrics_garbage(p: Path) -> None:
    p.write_text(p.read_text() + '[1, 2]\n{"iter": NaN, "kind": "train", "tokens_per_s": 1e999}\n{"iter": 3\n'
                 '{"iter": 5, "kind": "train", "tokens_per_s": "fast", "loss": "x"}\n\x00\xff\n')


def metrics_nan(p: Path) -> None:
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    for r in rows:
        for k in list(r):
            if k not in ("iter", "kind"):
                r[k] = float("nan")
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))


IR = "interventions/*/result.json"
HUGE_INT = 10**30
ETC = "../../../../../../etc/passwd"


# (id, file relative to the run, mutation, commands, files removed first)
CASES: list[tuple] = []


def case(cid, rel, mut, cmds, remove=(), exact=True):
    """``exact``: a command that succeeds gives the clean run's numbers (False: the damage is a
    consistent change of the data, whose analysis legitimately differs)."""
    CASES.append(pytest.param(rel, mut, cmds, remove, exact, id=cid))


for cid, mut in (("truncate", truncate), ("empty", empty), ("list", as_list), ("string", as_string)):
    case(f"run.json-{cid}", "run.json", mut, ["record", "waves", "spelling", "summary"])
case("run.json-vocab-permuted", "run.json", set_key("vocab", value=lambda v: v[::-1]), ["record", "spelling"])
case("run.json-corpus_path-traversal", "run.json", set_key("corpus_path", value=ETC), ["spelling"])
case("run.json-corpus_path-int", "run.json", set_key("corpus_path", value=5), ["spelling", "summary"])
case("run.json-train-list", "run.json", set_key("train", value=[1]), ["summary"])
case("run.json-checkpoints-nan", "run.json", set_key("train", "checkpoints", value=["__NAN__"]), ["summary"])

for cid, mut in (("truncate", truncate), ("list", as_list),
                 ("iteration-mismatch", set_key("iteration", value=7)),
                 ("iteration-huge", set_key("iteration", value=HUGE_INT)),
                 ("vocab-permuted", set_key("vocab", value=lambda v: v[::-1])),
                 ("weights_file-traversal", set_key("weights_file", value=ETC)),
                 ("val_loss-nan", set_key("val_loss", value="__NAN__")),
                 ("val_loss-huge", set_key("val_loss", value="__HUGE_FLOAT__")),
                 ("config-n_embd-string", set_key("config", "n_embd", value="32")),
                 ("config-vocab_size-huge", set_key("config", "vocab_size", value=HUGE_INT))):
    case(f"checkpoint.json-{cid}", f"checkpoints/{LAST}.json", mut, ["record", "spelling", "intervene"])
for cid, mut in (("truncate", truncate), ("flip", flip_byte), ("other-shapes", st_other_shapes)):
    case(f"safetensors-{cid}", f"checkpoints/{LAST}.safetensors", mut, ["record", "spelling", "intervene"])

for cid, mut in (("truncate", truncate), ("list", as_list),
                 ("file-traversal", set_key("file", value=ETC)),
                 ("iteration-nan", set_key("iteration", value="__NAN__"))):
    case(f"state.json-{cid}", "state/state.json", mut, ["train"])

case("metrics-garbage-rows", "metrics.jsonl", metrics_garbage, ["summary", "report"])
case("metrics-nan", "metrics.jsonl", metrics_nan, ["summary", "report"])
case("metrics-truncate", "metrics.jsonl", truncate, ["summary", "report"])

# recordings: the HDF5 file (with a sidecar that follows, so that the content checks are what catch it)
H5 = f"recordings/{LAST}.h5"
REC = ["waves", "record", "report", "intervene-mean"]
for cid, mut in (
        ("truncate-sha-mismatch", truncate),
        ("truncate-sidecar-follows", lambda p: (truncate(p), h5_fix_sidecar(p))),
        ("samples-nan", h5_attr("samples", np.nan)),
        ("iteration-mismatch", h5_attr("iteration", 7)),
        ("iteration-huge", h5_attr("iteration", float(HUGE_INT))),
        ("taps-not-list", h5_attr("taps", "5")),
        ("tokens-out-of-range", h5_edit(lambda f: f["tokens"].__setitem__((0, 3), 999))),
        ("tokens-shape", h5_edit(lambda f: _replace_ds(f, "tokens", f["tokens"][:-1]))),
        ("waves-shape", h5_edit(lambda f: _replace_ds(f, f"waves/{TAP}", f[f"waves/{TAP}"][:, :, :-2]))),
        ("waves-nan", h5_edit(lambda f: f[f"waves/{TAP}"].__setitem__((0, 5, 1), np.nan))),

        ("entropy-nan", h5_edit(lambda f: f["entropy"].__setitem__((0, 2), np.nan))),
        ("vocab-permuted", h5_edit(lambda f: _replace_ds(f, "vocab", f["vocab"][()][::-1],
                                                         dtype=h5py.string_dtype()))),
        ("model_config-n_embd", h5_attr("model_config", json.dumps({"n_embd": 7}))),
):
    case(f"recording-{cid}", H5, mut, REC)
case("recording-waves-huge", H5, h5_edit(lambda f: f[f"waves/{TAP}"].__setitem__((0, 5, 1), np.float32(3e38))),
     ["waves", "report"], exact=False)
SIDE = f"recordings/{LAST}.json"
for cid, mut in (("truncate", truncate), ("list", as_list),
                 ("file-traversal", set_key("file", value=ETC)),
                 ("sha256-int", set_key("sha256", value=5)),
                 ("taps-string", set_key("taps", value="x")),
                 ("settings_hash-changed", set_key("settings_hash", value="0" * 16))):
    case(f"recording.json-{cid}", SIDE, mut, REC)

WS = f"waves/{LAST}/summary.json"
WAVES_READERS = ["waves", "summary", "report"]
for cid, mut in (
        ("truncate", truncate), ("list", as_list), ("string", as_string),
        ("taps-list", set_key("taps", value=[1, 2])),
        ("tap-entry-list", set_key("taps", TAP, value=[1])),
        ("mean_abs_corr-string", set_key("taps", TAP, "mean_abs_corr", value="high")),
        ("mean_abs_corr-nan", set_key("taps", TAP, "mean_abs_corr", value="__NAN__")),
        ("mean_abs_corr-huge", set_key("taps", TAP, "mean_abs_corr", value="__HUGE_FLOAT__")),
        ("mean_abs_corr-out-of-range", set_key("taps", TAP, "mean_abs_corr", value=7.5)),
        ("induced-missing", del_key("taps", TAP, "induced")),
        ("n_clusters-null", set_key("taps", TAP, "n_clusters", value=None)),
        ("label_counts-list", set_key("taps", TAP, "label_counts", value=[1])),
        ("surrogate-string", set_key("taps", TAP, "surrogate", value="x")),
        ("iteration-mismatch", set_key("iteration", value=7)),
        ("iteration-huge", set_key("iteration", value=HUGE_INT)),
        ("name-mismatch", set_key("name", value=MID)),
        ("focus_tap-unknown", set_key("focus_tap", value="nope")),
        ("n_samples-cut", set_key("taps", "*", "n_samples", value=1)),
        ("fifo", lambda p: (p.unlink(), os.mkfifo(p))),
        ("symlink-out-of-run", lambda p: _link_out(p)),
):
    case(f"waves-summary-{cid}", WS, mut, WAVES_READERS)
# a whole waves folder linked in from another run (merged unchecked before)
case("waves-folder-from-another-run", f"waves/{LAST}", lambda p: _link_out(p, folder=True), ["summary", "report"])
# the generated text the report embeds: a FIFO (the report hung), a link out of the run
for cid, mut in (("fifo", lambda p: (p.unlink(), os.mkfifo(p))), ("symlink-out-of-run", lambda p: _link_out(p))):
    case(f"text-html-{cid}", f"spelling/{LAST}.text.html", mut, ["report-as-is", "report"])

NPZ = f"waves/{LAST}/arrays.npz"
for cid, mut in (
        ("truncate", truncate), ("garbage", lambda p: p.write_bytes(b"not a zip")),
        ("R-missing", npz_drop("R")),
        ("R-shape", npz_set("R", lambda a: a[:-2, :-2])),
        ("cluster_labels-short", npz_set("cluster_labels", lambda a: a[:-3])),
        ("cluster_labels-huge", npz_set("cluster_labels", lambda a: np.full_like(a, 2**40))),
        ("labels-missing", npz_drop("labels")),
        ("d_current-nan", npz_set("d_current", lambda a: np.full_like(a, np.nan))),
        ("object-array", npz_set("labels", lambda a: np.array([{"x": 1}] * len(a), dtype=object))),
):
    case(f"waves-arrays-{cid}", NPZ, mut, ["waves", "intervene-cluster", "report"])

REP = "waves/repeatability.json"
for cid, mut in (("truncate", truncate), ("list", as_list),
                 ("seeds-string", set_key("seeds", value="x")),
                 ("similarity-nan", set_key("seeds", "mean_corr_similarity", value="__NAN__")),
                 ("matrix-shape", set_key("seeds", "corr_similarity", value=[[1.0]])),
                 ("tap-int", set_key("tap", value=3))):
    case(f"repeatability-{cid}", REP, mut, ["summary", "report"])

SJ = f"spelling/{LAST}.json"
SPELL_READERS = ["spelling", "summary", "report"]
for cid, mut in (
        ("truncate", truncate), ("list", as_list),
        ("stats-list", set_key("stats", value=[1])),
        ("correct-string", set_key("stats", "correct", value="x")),
        ("fano-string", set_key("stats", "correct", "fano", value="x")),
        ("fano-nan", set_key("stats", "correct", "fano", value="__NAN__")),
        ("fano-huge", set_key("stats", "correct", "fano", value="__HUGE_FLOAT__")),
        ("fano-negative", set_key("stats", "correct", "fano", value=-3.0)),
        ("p_value-out-of-range", set_key("stats", "correct", "p_value", value=4.0)),
        ("fano_ci-scalar", set_key("stats", "correct", "fano_ci", value=3)),
        ("error_rate-huge", set_key("stats", "error_rate", value=HUGE_INT)),
        ("counts-cut", counts_cut),
        ("counts-strings", set_key("stats", "counts", "correct", value=lambda v: [str(x) for x in v])),
        ("counts-negative", set_key("stats", "counts", "correct", value=lambda v: [-x for x in v])),
        ("n_samples-wrong", set_key("stats", "n_samples", value=300)),
        ("decomposition-list", set_key("stats", "decomposition", value=[1])),
        ("cascade-string", set_key("stats", "cascade", value="x")),
        ("verdict-int", set_key("stats", "correct", "verdict", value=3)),
        ("iteration-mismatch", set_key("iteration", value=7)),
        ("iteration-string", set_key("iteration", value="20")),
        ("iteration-huge", set_key("iteration", value=HUGE_INT)),
        ("name-mismatch", set_key("name", value=MID)),
        ("settings-list", set_key("settings", value=[1])),
        ("val_loss-string", set_key("val_loss", value="low")),
        ("fano-edited", set_key("stats", "correct", "fano", value=0.5)),  # not var / mean any more
        ("q-edited", set_key("stats", "correct", "q", value=-0.5)),
        ("p_value-edited", set_key("stats", "correct", "p_value", value=0.12)),
        ("verdict-flipped", set_key("stats", "correct", "verdict",
                                    value=lambda v: "sub-Poissonian" if v != "sub-Poissonian" else "Poissonian")),
        ("huge-int-5000-digits", lambda p: p.write_text(p.read_text().replace('"n_samples": ', '"n_samples": '
                                                                               + "9" * 5000 + ", \"x\": ", 1))),
        ("deep-nesting", lambda p: p.write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}")),
        ("fifo", lambda p: (p.unlink(), os.mkfifo(p))),
        ("symlink-out-of-run", lambda p: _link_out(p)),
):
    case(f"spelling-result-{cid}", SJ, mut, SPELL_READERS)

SS = f"spelling/{LAST}.samples.json"
for cid, mut in (("truncate", truncate), ("list", as_list),
                 ("cut-down", cut_texts), ("cut-down-consistent", cut_samples_consistently),
                 ("short-texts", short_texts),
                 ("texts-ints", set_key("texts", value=lambda v: [1] * len(v))),
                 ("texts-foreign-chars", set_key("texts", value=lambda v: ["\u2603" * len(t) for t in v])),
                 ("settings-string", set_key("settings", value="x"))):
    case(f"samples-{cid}", SS, mut, ["spelling", "intervene"], remove=(SJ, IR))

CR = "spelling/crossing.json"
for cid, mut in (("truncate", truncate), ("list", as_list),
                 ("crossing-string", set_key("crossing", value="x")),
                 ("iteration-string", set_key("crossing", "iteration", value="soon")),
                 ("iteration-nan", set_key("crossing", "iteration", value="__NAN__")),
                 ("ci-scalar", set_key("crossing", "ci", value=5)),
                 ("reason-int", set_key("crossing", "reason", value=5)),
                 ("checkpoints-string", set_key("checkpoints", value="x"))):
    case(f"crossing-{cid}", CR, mut, ["summary", "report"])

RJ = "reproduce.json"
for cid, mut in (("truncate", truncate), ("list", as_list),
                 ("train-list", set_key("train", value=[1])),
                 ("timings-string", set_key("timings", value="fast")),
                 ("timing-nan", set_key("timings", "train", value="__NAN__")),
                 ("timing-huge", set_key("timings", "train", value="__HUGE_FLOAT__")),
                 ("history-dict", set_key("timings_history", value={"a": 1})),
                 ("analysis-string", set_key("analysis", value="x")),
                 ("timing-1e299", set_key("timings", "train", value=1e299))):
    case(f"reproduce.json-{cid}", RJ, mut, ["summary", "report", "publish"])

SM = "summary.json"
for cid, mut in (("truncate", truncate), ("list", as_list),
                 ("checkpoints-string", set_key("checkpoints", value="x")),
                 ("findings-list", set_key("findings", value=[1])),
                 ("claims-strings", set_key("findings", "claims", value=["x", 3])),
                 ("nan", set_key("checkpoints", 0, "val_loss", value="__NAN__")),
                 ("huge", set_key("checkpoints", 0, "iteration", value="__HUGE_FLOAT__")),
                 ("iteration-10e300", set_key("checkpoints", -1, "iteration", value=10**300)),
                 ("huge-int-5000-digits", lambda p: p.write_text(p.read_text().replace(
                     '"format_version": ', '"x": ' + "7" * 5000 + ', "format_version": ', 1))),
                 ("deep-nesting", lambda p: p.write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}")),
                 ("claim-without-title", set_key("findings", "claims", 0, "claim", value=None)),
                 ("claim-title-markup", set_key("findings", "claims", 0, "claim",
                                                value="<script>x</script> | ![i](http://e/x.png) <!-- results:end -->")),
                 ("crossing-ci-three", set_key("findings", "crossing", "ci", value=[1.0, 2.0, 3.0])),
                 ("preset-markup", set_key("preset", value="`<b>`")),
                 ("fifo", lambda p: (p.unlink(), os.mkfifo(p))),
                 ("symlink-out-of-run", lambda p: _link_out(p))):
    case(f"summary.json-{cid}", SM, mut, ["report-as-is", "report", "publish"])

for cid, mut in (("truncate", truncate), ("list", as_list),
                 ("conditions-string", set_key("conditions", value="x")),
                 ("error_rate-nan", set_key("conditions", "edited", "error_rate", value="__NAN__")),
                 ("comparisons-list", set_key("comparisons", value=[1]))):
    case(f"intervention-result-{cid}", IR, mut, ["intervene"])


# ------------------------------------------------------------------ the oracle


def _run(argv: list[str], capsys) -> tuple[int, str]:
    os.environ["GPTWAVES_DEBUG"] = "1"  # an unexpected exception propagates (and fails the case)
    try:
        code = main(argv)
    except BaseException as e:  # noqa: BLE001 - the point of the test
        import traceback

        pytest.fail(f"{argv[0]} raised {type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}")
    finally:
        del os.environ["GPTWAVES_DEBUG"]
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and "Traceback" not in cap.out
    if code != 0:
        err = cap.err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("gptwaves: error:"), (argv[0], err)
        assert "internal error" not in err, (argv[0], err)  # cli.main's safety net: a bug, not a handled fault
    return code, cap.err


def _jsons(folder: Path, pattern: str) -> dict:
    return {str(p.relative_to(folder)): json.loads(p.read_text()) for p in sorted(folder.glob(pattern))}


def _no_nan(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_no_nan(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_no_nan(v) for v in obj)
    return True


def _strip_summary(s: dict) -> dict:
    return {k: s[k] for k in ("checkpoints", "findings", "repeatability")}


def _h5_data(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in ("tokens", "entropy", "is_prompt")}
        out.update({f"waves/{t}": f["waves"][t][()] for t in f["waves"]})
    return out


def _regular(p: Path) -> bool:
    return p.is_file() and not p.is_symlink() and not any(q.is_symlink() for q in p.parents)


def _check_result(cmd: str, run: Path, clean: Path, pristine: Path, exact: bool = True,
                  refs: dict | None = None) -> None:
    """After exit 0: what the command produced equals the clean run's (a rebuilt cache), and no
    file it wrote holds NaN. Every command is checked (none passes on its exit code alone)."""
    for p in run.rglob("*.json"):
        before = pristine / p.relative_to(run)
        if not _regular(p):
            continue
        if not _regular(before) or before.read_bytes() != p.read_bytes():
            assert _no_nan(json.loads(p.read_text())), p
    if cmd == "report-as-is":  # the summary is used as it is, never rewritten; the page is written
        sm, sm0 = run / "summary.json", pristine / "summary.json"
        assert (sm.is_symlink() or not sm.exists() or not _regular(sm0)
                or sm.read_bytes() == sm0.read_bytes()), "report --no-summary changed summary.json"
        assert (run / "report" / "index.html").stat().st_size > 0
    elif cmd == "publish":  # what was published is the run's summary, and no number became nan/inf
        out = run.parent / "published"
        assert (out / "summary.json").read_bytes() == (run / "summary.json").read_bytes()
        md = (out / "claims.md").read_text()
        assert not re.search(r"\b(nan|inf)\b", md), md[:2000]
        assert "<script" not in md and "<!-- results:end -->" not in md  # escaped, never live markup
    elif cmd == "train":  # nothing to train: the checkpoints are the clean run's
        got = {p.name: _load(p)["weights_sha256"] for p in run.glob("checkpoints/iter_*.json") if _regular(p)}
        want = {p.name: _load(p)["weights_sha256"] for p in clean.glob("checkpoints/iter_*.json")}
        assert got == want
    if not exact:
        return
    if cmd == "waves":
        got = _jsons(run, "waves/iter_*/summary.json")
        assert got == _jsons(clean, "waves/iter_*/summary.json")
    elif cmd == "spelling":
        for pat in ("spelling/iter_*[0-9].json", "spelling/crossing.json"):
            assert _jsons(run, pat) == _jsons(clean, pat), pat
    elif cmd == "record":
        for p in sorted(clean.glob("recordings/iter_*[0-9].h5")):
            a, b = _h5_data(run / p.relative_to(clean)), _h5_data(p)
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), p
    elif cmd in ("summary", "report"):
        got = _load(run / "summary.json")
        assert _strip_summary(got) == _strip_summary(_load(clean / "summary.json"))
    elif cmd.startswith("intervene"):
        keys = ("settings", "conditions", "comparisons", "channels")
        for name, ref in (refs or {}).get(cmd, {}).items():
            got = _load(run / "interventions" / name / "result.json")
            if cmd == "intervene-mean" and got["settings"].get("mean_source") != ref["settings"].get("mean_source"):
                continue  # the recording was unusable: the means came from generated samples (stated in settings)
            assert {x: got[x] for x in keys} == {x: ref[x] for x in keys}, (cmd, name)


@pytest.mark.parametrize("rel,mut,cmds,remove,exact", CASES)
def test_fuzzed_artefact(smoke, clean_interventions, tmp_path, capsys, no_figures, rel, mut, cmds, remove, exact):
    refs = clean_interventions
    run = tmp_path / "run"
    shutil.copytree(smoke, run, ignore=NOT_READ)
    for r in remove:
        for q in run.glob(r):
            q.unlink()
    targets = sorted(run.glob(rel))
    assert targets, rel
    mutated = {}
    for t in targets:
        mut(t)
    pristine = tmp_path / "pristine"  # the mutated state, restored before each command
    shutil.copytree(run, pristine, symlinks=True, copy_function=_copy)
    outcomes = {}
    for cmd in cmds:
        shutil.rmtree(run)
        shutil.copytree(pristine, run, symlinks=True, copy_function=_copy)
        shutil.rmtree(run.parent / "published", ignore_errors=True)
        code, err = _run(COMMANDS[cmd](str(run)), capsys)
        outcomes[cmd] = code if code == 0 else err.strip()
        if code == 0:
            _check_result(cmd, run, smoke, pristine, exact, refs)
        assert not [p for p in run.rglob("*.tmp")], cmd
    print(outcomes)


def test_clean_copy_reuses_everything(smoke, clean_interventions, tmp_path, capsys, no_figures):
    """The oracle itself: on an undamaged copy every command succeeds with the clean results."""
    run = tmp_path / "run"
    shutil.copytree(smoke, run, ignore=NOT_READ)
    for cmd in COMMANDS:
        pristine = tmp_path / f"before-{cmd}"  # what the command found (never the run compared with itself)
        shutil.copytree(run, pristine)
        code, err = _run(COMMANDS[cmd](str(run)), capsys)
        assert code == 0, (cmd, err)
        _check_result(cmd, run, smoke, pristine, refs=clean_interventions)


# ------------------------------------------------------------------ every option of every command
#
# Generated from the click command tree, so an option added later is fuzzed without editing this
# test. Each value is given to one option of one command whose other arguments are valid for the
# smoke run. The command must refuse it in one line (exit != 0, never "internal error", never a
# traceback) or accept it; work that starts (a model forward, generation, training, a statistic,
# a matmul timing) raises a sentinel, so acceptance costs milliseconds and the test stays quick.
# Not-a-number values, infinities, 5000-digit numbers and empty strings must be refused up front.

NUMERIC_VALUES = ("0", "-1", "nan", "inf", "1e308", str(10**30), "9" * 5000, "")
TEXT_VALUES = ("", " ", "-1", "9" * 5000)
MUST_REFUSE = {"nan", "inf", "9" * 5000, ""}


class _WorkStarted(BaseException):
    """A sentinel: the command accepted its options and began the real work."""


def _started(*a, **k):
    raise _WorkStarted()


def _base_args(run: str, out: str) -> dict:
    """Valid arguments of each command (the fuzzed option is substituted or added)."""
    return {
        ("data",): [],
        ("train",): ["--preset", "smoke", "--out", run, "--max-iters", "20", "--device", "cpu", "--quiet"],
        ("record",): ["--run", run, "--checkpoint", "last", "--samples", "2", "--steps", "8", "--quiet"],
        ("spelling",): ["--run", run, "--checkpoint", "last", *SPELL, "--quiet"],
        ("waves",): ["--run", run, "--samples", "4", "--steps", "40", "--quiet"],
        ("summary",): ["--run", run],
        ("report",): ["--run", run, "--no-summary"],
        ("reproduce",): ["--preset", "smoke", "--out", run, "--max-iters", "20", "--device", "cpu", "--quiet"],
        ("intervene",): ["--run", run, "--tap", TAP, "--channels", "0-3", "--mode", "ablate", "--quiet"],
        ("bench",): ["budget", "--run", run],
        ("sweep",): ["--preset", "smoke", "--vary", "n_embd=16,32", "--out", f"{out}/sweep", "--max-iters", "20",
                     "--device", "cpu", "--quiet"],
        ("calibrate",): ["--run", run, "--replicates", "2", "--quiet"],
        ("publish", "run"): [run, f"{out}/published"],
        ("publish", "seeds"): [f"{out}/seeds.md", run],
        ("publish", "sweep"): [run, f"{out}/published-sweep"],  # a run is not a sweep: refused in one line
    }


def _leaves(group, path=()):
    import click

    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _leaves(cmd, path + (name,))
        else:
            yield path + (name,), cmd


def _option_cases():
    import click

    from gptwaves.cli import _Finite, _Integer, cli

    cases = []
    for path, cmd in _leaves(cli):
        args = [p for p in cmd.params if isinstance(p, click.Argument)]
        for prm in cmd.params:
            if prm.name == "help" or getattr(prm, "is_flag", False):
                continue
            numeric = isinstance(prm.type, (_Integer, _Finite))
            for v in NUMERIC_VALUES if numeric else TEXT_VALUES:
                where = prm.opts[0] if isinstance(prm, click.Option) else f"argument {args.index(prm)}"
                cases.append(pytest.param(path, prm.name, where, v, numeric, id=f"{' '.join(path)} {where} {v[:8]!r}"))
    return cases


def test_every_command_has_base_arguments():
    from gptwaves.cli import cli

    assert {p for p, _ in _leaves(cli)} == set(_base_args("RUN", "OUT")), "give the new command valid base arguments"


@pytest.fixture(scope="module")
def option_run(smoke, tmp_path_factory):
    """A writable copy of the smoke run for the option fuzz (accepted values stop before writing results)."""
    root = tmp_path_factory.mktemp("options")
    run = root / "run"
    shutil.copytree(smoke, run, ignore=NOT_READ)
    return run


@pytest.fixture
def work_stops(monkeypatch):
    import gptwaves.analysis.spelling as asp
    import gptwaves.bench.budget as budget
    import gptwaves.stages.calibration as calibration
    import gptwaves.sweep as sweep
    import gptwaves.model as model
    import gptwaves.record as record
    import gptwaves.sample as sample
    import gptwaves.stages.waves as waves
    import gptwaves.train as train

    for obj, name in ((model.GPT, "forward"), (sample, "generate"), (record, "generate"), (asp, "analyze"),
                      (asp, "crossing"), (waves, "analyze_recording"), (train, "train"), (budget, "matmul_peak"),
                      (calibration, "spelling_chunk"), (calibration, "coherence_chunk"), (sweep, "_run_parallel")):
        monkeypatch.setattr(obj, name, _started)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a model name is never looked up on the network here
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.mark.parametrize("path,name,where,value,numeric", _option_cases())
def test_every_option_value(option_run, tmp_path, monkeypatch, capsys, work_stops, no_figures, path, name, where, value,
                            numeric):
    from gptwaves.cli import cli

    monkeypatch.chdir(tmp_path)  # relative names ("0", "-1") land here
    argv = list(_base_args(str(option_run), str(tmp_path))[path])
    if where.startswith("argument "):
        i = int(where.split()[1])
        if path == ("bench",):
            argv[0] = value
        else:
            argv[i] = value
    else:
        cmd = cli
        for p in path:
            cmd = cmd.commands[p]
        opts = next(p.opts for p in cmd.params if p.name == name)
        j = next((k for k, a in enumerate(argv) if a in opts), None)
        if j is None:
            argv += [where, value]
        else:
            argv[j + 1] = value
    os.environ["GPTWAVES_DEBUG"] = "1"
    try:
        code = main([*path, *argv])
    except _WorkStarted:
        code = "accepted"
    except BaseException as e:  # noqa: BLE001 - the point of the test
        import traceback

        pytest.fail(f"{path} {where}={value[:20]!r} raised {type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}")
    finally:
        del os.environ["GPTWAVES_DEBUG"]
        (option_run / ".lock").unlink(missing_ok=True)
    err = capsys.readouterr().err.strip()
    if code not in (0, "accepted"):
        assert len(err.splitlines()) == 1 and err.startswith("gptwaves: error:"), err
        assert "internal error" not in err and code != 3, err
    if value in MUST_REFUSE and (numeric or value == ""):
        assert code not in (0, "accepted"), f"{' '.join(path)} {where} {value[:20]!r} was accepted"


# ------------------------------------------------------------------ Hugging Face suite folders
#
# A folder of folders (one per revision) of tiny GPT-2 models, damaged in one revision (config,
# weights, tokenizer, an odd architecture, a FIFO, a link loop); `record` over the suite must give
# exit 0 or one line, and a degenerate or mismatched revision must be refused by name.

HF_STEPS = ("step0", "step5", "step20")
ODD = "step5"


@pytest.fixture(scope="module")
def hf_suites(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from conftest import make_text
    from test_hf_suite import build_suite

    text = make_text(20_000)
    with _torch_threads(1):
        return (build_suite(tmp_path_factory.mktemp("gpt2"), text, "gpt2"),
                build_suite(tmp_path_factory.mktemp("neox"), text, "neox"))


class _torch_threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import torch

        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.old)


def _config_edit(**kv):
    def mutate(folder: Path) -> None:
        p = folder / "config.json"
        obj = _load(p)
        obj.update(kv)
        _dump(p, obj)
    return mutate


def _weights_nan(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    p = folder / "model.safetensors"
    state = load_file(p)
    save_file({k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in state.items()}, p,
              metadata={"format": "pt"})


def _other_architecture(neox: Path):
    def mutate(folder: Path) -> None:
        shutil.rmtree(folder)
        shutil.copytree(neox / ODD, folder)
    return mutate


HF_CASES = {  # id: (mutation of the odd revision's folder, must the error name the revision?)
    "config-truncated": (lambda d: truncate(d / "config.json"), False),
    "config-list": (lambda d: as_list(d / "config.json"), False),
    "config-5000-digit-int": (lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"n_layer": 2', '"n_layer": ' + "9" * 5000)), False),
    "config-deep-nesting": (lambda d: (d / "config.json").write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}"),
                            False),
    "config-zero-layers": (_config_edit(n_layer=0), True),
    "config-huge-layers": (_config_edit(n_layer=HUGE_INT), True),
    "config-width-differs": (_config_edit(n_embd=32), True),
    "config-fifo": (lambda d: ((d / "config.json").unlink(), os.mkfifo(d / "config.json")), False),
    "config-link-loop": (lambda d: ((d / "config.json").unlink(), (d / "config.json").symlink_to(d / "config.json")),
                         False),
    "weights-truncated": (lambda d: truncate(d / "model.safetensors"), False),
    "weights-nan": (_weights_nan, True),
    "tokenizer-missing": (lambda d: (d / "tokenizer.json").unlink(), False),
    "tokenizer-garbage": (lambda d: (d / "tokenizer.json").write_text("{garbage"), False),
    "revision-empty": (lambda d: [p.unlink() for p in d.iterdir()], False),
}


@pytest.mark.parametrize("cid", sorted(HF_CASES) + ["other-architecture"])
def test_fuzzed_hf_suite(hf_suites, tmp_path, capsys, no_figures, monkeypatch, cid):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    gpt2, neox = hf_suites
    suite = tmp_path / "suite"
    shutil.copytree(gpt2, suite)
    mut, names = HF_CASES[cid] if cid in HF_CASES else (_other_architecture(neox), True)
    mut(suite / ODD)
    with _torch_threads(1):
        code, err = _run(["record", "--run", str(tmp_path / "out"), "--hf-model", str(suite), "--samples", "2",
                          "--steps", "6", "--quiet"], capsys)
    if names:
        assert code != 0 and ODD in err, err


@pytest.mark.parametrize("spec", [",,,", " ", "log:0", "log:-1", "log:" + "9" * 5000, "step5,step5", "nope"])
def test_hf_revision_specs(hf_suites, tmp_path, capsys, monkeypatch, spec):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = _run(["reproduce", "--hf-model", str(hf_suites[0]), "--revisions", spec, "--out",
                      str(tmp_path / "out"), "--quiet"], capsys)
    assert code != 0


@pytest.mark.parametrize("value", ["", " ", ","])
def test_empty_hf_model_is_an_error_never_a_fallback(tmp_path, capsys, value):
    code, err = _run(["reproduce", "--hf-model", value, "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code != 0 and not (tmp_path / "out" / "checkpoints").exists()
