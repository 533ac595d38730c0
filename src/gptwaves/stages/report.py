"""The run report: one self-contained, offline HTML page per run directory.

``build_report(DIR)`` gathers what the pipeline stages left in ``DIR`` and writes
``DIR/report/index.html``:

- findings (each claim with its verdict and its sentence of numbers) and the crossing iteration;
- the checkpoint table (:func:`gptwaves.tables.checkpoint_table`: losses, Fano factors with CI and
  verdict, error rate, coherence against its floors) and the spelling decomposition table;
- training curves (``figures/training_curves.png``, drawn from ``metrics.jsonl`` when missing or stale);
- every PNG figure of the training, waves, spelling and intervention stages (base64 data URIs);
- the generated text of each checkpoint with misspellings highlighted (sanitised fragments);
- an interactive wave explorer (vanilla JS + SVG) over a few recordings;
- settings, package versions and stage timings.

This module prepares plain data; the page is the Jinja2 template ``templates/report.html``,
rendered with autoescaping on, so every piece of generated, corpus or summary text is escaped by
the template engine (``textContent`` in JS). The only markup passed through as safe: the page's
own CSS and JS, the explorer's JSON (:func:`json_for_html`) and the spelling fragments rebuilt by
:func:`gptwaves.html_fragment.sanitize_fragment`.

Any input may be missing (a report can be built after a partial run); its section then says
"not computed". Nothing in the page refers to the network: scripts, styles, data and images are
embedded, and a Content-Security-Policy forbids any fetch and any script but the page's own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from .. import __version__
from ..errors import GptwavesError
from ..html_fragment import sanitize_fragment
from ..io import atomic_write_text, check_regular_file, confine_reads, read_bytes_bounded, read_json
from ..names import NAME_PATTERN, figure_stem, is_main_name, iteration_in
from ..tables import checkpoint_table, fmt_number
from .common import focus_tap, guarded, input_floor

__all__ = ["build_report", "sanitize_fragment", "caption_from_stem", "json_for_html", "report_context",
           "render_report"]

FIGURE_GROUPS = (  # (heading, folder relative to the run dir)
    ("Training", "figures"),
    ("Waves", "waves"),
    ("Spelling", "spelling/figures"),
    ("Interventions", "interventions"),
)
TRAINING_FIGURE = Path("figures") / "training_curves.png"  # shown in its own section, not among the figures
MAX_FIGURE_BYTES = 15 * 1024 * 1024  # a larger PNG is listed but not embedded
NOT_COMPUTED = "not computed"
NAV = (("findings", "Findings"), ("checkpoints", "Checkpoints"), ("training", "Training"),
       ("figures", "Figures"), ("explorer", "Wave explorer"), ("text", "Generated text"),
       ("provenance", "Settings"))


# ------------------------------------------------------------------------------ small helpers

def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


fmt = fmt_number  # one number format for every table (gptwaves.tables)


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def json_for_html(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>``, ``&``, U+2028/9."""
    s = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(value, None) or (None, reason): :func:`gptwaves.io.read_json` (a regular file inside the
    run, no FIFO, no absurd numbers or nesting), whose failures the report shows as text instead of
    stopping."""
    if not path.is_file():
        return None, "missing"
    try:
        return read_json(path, path.name), None
    except GptwavesError as e:
        return None, f"unreadable ({type(e).__name__})"


def _read_bytes(path: Path, what: str, max_bytes: int = MAX_FIGURE_BYTES) -> bytes | None:
    """The bytes of a regular file inside the run (None when it is not one, or is too large)."""
    try:
        return read_bytes_bounded(path, what, max_bytes)
    except GptwavesError:
        return None


def _asset(name: str) -> str:
    return resources.files("gptwaves").joinpath("report_assets", name).read_text(encoding="utf-8")


_iter_from_name = iteration_in


def _on_axis(text: str, axis: str) -> str:
    """"iteration N" in a label reads "step N" for a Hugging Face suite (its training steps)."""
    return re.sub(r"\biteration (?=\d)", "step ", text) if axis == "step" else text


# ------------------------------------------------------------------------------ captions

#: Captions of the figures the stages draw, by file name (without the checkpoint prefix).
_PHRASES = {
    "training_curves": "Training and validation loss",
    "wave_heatmap": "Waves of all channels (heatmap)",
    "space_channels": "Most space-selective channels",
    "correlation": "Cross-channel correlation with clusters",
    "acf": "Auto-correlation functions",
    "periods": "Dominant periods of the channels",
    "channel_table": "Channel function table",
    "event_triggered": "Event-triggered average waveforms around each character class",
    "order_parameters": "Coherence order parameters across training",
    "coherence_nulls": "Coherence against its floors (sample-shuffle surrogate and input tap)",
    "correlation_compare": "Correlation matrices compared",
    "repeatability": "Repeatability and context plasticity",
    "count_histograms": "Word-count histograms with Poisson reference",
    "fano": "Fano factor across training",
    "decomposition": "Fano factor against its independent-error reference and permutation null",
    "cascade": "Cascade relative risk against its permutation null",
    "q_curves": "Mandel Q against counting window",
    "rates": "Word rates across training",
    "error_rates": "Error rate per condition with 95% CIs",
    "word_lengths": "Word-length distributions per condition",
    "counts": "Per-sample word counts per condition",
}
_WORDS = {
    "corr": "correlation", "acf": "auto-correlation", "psd": "power spectrum", "hist": "histogram",
    "fano": "Fano factor", "q": "Q", "ci": "CI", "pr": "participation ratio", "eta": "event-triggered average",
    "resid": "residual", "post": "", "hook": "", "embed": "embedding", "ln": "LayerNorm",
    "compare": "compared", "vs": "vs", "repeat": "repeatability", "sim": "similarity",
    "dendro": "dendrogram", "lr": "learning rate", "val": "validation", "iter": "iteration",
}


def caption_from_stem(stem: str) -> str:
    """A readable caption from a figure's file name (``corr_compare`` -> ``Correlation matrices compared``)."""
    if stem in _PHRASES:
        return _PHRASES[stem]
    s = stem
    for k, v in sorted(_PHRASES.items(), key=lambda kv: -len(kv[0])):
        if s.startswith(k + "_") or s.startswith(k + "-"):
            rest = caption_from_stem(s[len(k) + 1:]).lower()
            return f"{v}, {rest}" if rest else v
    s = NAME_PATTERN.sub(lambda m: f"iteration {int(m.group(1))}", s)
    s = re.sub(r"blocks\.(\d+)\.hook_resid_post", r"block \1 residual", s)
    out = []
    for w in re.split(r"[_\-\s]+", s):
        if not w:
            continue
        out.append(_WORDS.get(w.lower(), w))
    text = " ".join(w for w in out if w).strip()
    return (text[:1].upper() + text[1:]) if text else stem


# ------------------------------------------------------------------------------ findings and tables

def _verdict_class(v: str | None) -> str:
    v = (v or "").lower()
    if v == "supported":
        return "ok"
    if v == "not supported":
        return "bad"
    if v.startswith("sub"):
        return "sub"
    if v.startswith("super"):
        return "super"
    if v == "poissonian":
        return "poi"
    return "unk"


def _claim_parts(c: dict, cal: dict | None) -> list[dict]:
    """Both verdicts of a claim (summary format 2), or the single verdict of format 1; with the
    claim's calibration entry of summary.json (``cal``), each verdict's size and power under it."""
    if isinstance(c.get("as_stated"), dict):
        out = []
        for key, label in (("as_stated", "as stated"), ("beyond_null", "beyond the null")):
            part = _d(c.get(key))
            ctext = _d(_d(cal).get(key)).get("text")
            out.append({"label": label, "verdict": part.get("verdict"), "text": part.get("text"),
                        "calibration": ctext or None})
        return out
    return [{"label": None, "verdict": c.get("verdict"), "text": c.get("text"), "calibration": None}]


def _findings(summary: dict | None, why: str | None, axis: str = "iteration") -> dict:
    if summary is None:
        return {"missing": ("Findings (summary.json)", why or "")}
    f = summary.get("findings") if isinstance(summary.get("findings"), dict) else None
    if not f:
        return {"missing": ("Findings", "summary.json has no findings")}
    cal_claims = _d(_d(summary.get("calibration")).get("claims"))
    claims = [{"title": c.get("claim"), "parts": _claim_parts(c, cal_claims.get(str(c.get("id"))))}
              for c in (f.get("claims") if isinstance(f.get("claims"), list) else []) if isinstance(c, dict)]
    for c in claims:  # a suite's checkpoints are training steps
        for part in c["parts"]:
            for k in ("text", "calibration"):
                if isinstance(part[k], str):
                    part[k] = _on_axis(part[k], axis)
    cr = _d(f.get("crossing"))
    ci = f.get("crossing_iteration")
    crossing = None
    if _num(ci) is not None:
        lo, hi = cr.get("ci") if isinstance(cr.get("ci"), list) and len(cr["ci"]) == 2 else (None, None)
        crossing = {"at": fmt(ci, 4), "lo": fmt(lo, 4) if lo is not None else "open",
                    "hi": fmt(hi, 4) if hi is not None else "open"}
    reason = cr.get("reason")
    return {"missing": None, "claims": claims, "crossing": crossing,
            "no_crossing_reason": _on_axis(reason, axis) if isinstance(reason, str) else reason}


def _axis(summary) -> str:
    """The training axis in words: "step" for a Hugging Face suite (its revisions' training
    steps), "iteration" for a gptwaves run."""
    return "step" if isinstance(summary, dict) and isinstance(summary.get("hf"), dict) else "iteration"


def _subject(summary) -> str:
    """What the report is about, for its subtitle."""
    hf = summary.get("hf") if isinstance(summary, dict) else None
    if isinstance(hf, dict) and hf.get("model"):
        m = str(hf["model"])
        return ("a Hugging Face model suite (local revisions)" if "," in m
                else f"the Hugging Face model {m} across its training revisions")
    return "a small character-level GPT"


def report_table(summary: dict | None):
    """The report's checkpoint table (:func:`gptwaves.tables.checkpoint_table`), or None."""
    cks = summary.get("checkpoints") if isinstance(summary, dict) else None
    if not isinstance(cks, list) or not cks:
        return None
    tap = floor = None
    for c in cks:
        if isinstance(c, dict) and isinstance(c.get("waves"), dict) and c["waves"]:
            tap, floor = focus_tap(list(c["waves"])), input_floor(list(c["waves"]))
    return checkpoint_table(cks, "report", tap=tap, floor=floor)


def _decomposition(summary: dict | None) -> list[dict]:
    """Per checkpoint: what a sub-Poissonian count is made of (docs/method.md, Spelling):
    the word total against its renewal reference, each count against its length-conditioned
    reference and permutation null, the cascade relative risk against its within-sample null."""
    cks = summary.get("checkpoints") if isinstance(summary, dict) else None
    rows = [c for c in cks if isinstance(c, dict) and isinstance(c.get("spelling"), dict)
            and isinstance(c["spelling"].get("words"), dict)] if isinstance(cks, list) else []
    out = []
    for c in rows:
        sp = c["spelling"]
        w, cas = _d(sp.get("words")), _d(sp.get("cascade"))

        def count(x):
            ci = x.get("excess_null_ci") if isinstance(x.get("excess_null_ci"), list) \
                and len(x["excess_null_ci"]) == 2 else [None, None]
            return {"fano": fmt(x.get("fano")), "fano_ref": fmt(x.get("fano_ref")), "excess": fmt(x.get("excess")),
                    "excess_verdict": x.get("excess_verdict") or None, "excess_null": fmt(x.get("excess_null")),
                    "ci": (fmt(ci[0]), fmt(ci[1])), "z": fmt(x.get("excess_z")), "p": fmt(x.get("excess_p"))}

        out.append({"iteration": fmt(c.get("iteration")), "words_fano": fmt(w.get("fano")),
                    "words_ref": fmt(w.get("renewal_reference")), "correct": count(_d(sp.get("correct"))),
                    "misspelled": count(_d(sp.get("misspelled"))), "rr": fmt(cas.get("rr")),
                    "rr_verdict": cas.get("verdict") or None, "rr_null": fmt(cas.get("null_median")),
                    "rr_z": fmt(cas.get("z")), "rr_p": fmt(cas.get("p_value"))})
    return out


# ------------------------------------------------------------------------------ provenance

def _kv_rows(d: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                yield from _kv_rows(v, key)
            else:
                yield key, v
    else:
        yield prefix or "value", d


def _value_cell(v: Any) -> dict:
    """A setting's value as text: strings as they are (quoted when blank or with whitespace at
    their ends, tabs or newlines), floats with 6 significant digits, anything else as JSON."""
    if isinstance(v, str):
        return {"code": True, "text": repr(v) if v.strip() != v or not v or any(c in v for c in "\n\t") else v}
    if isinstance(v, float):
        return {"code": False, "text": f"{v:.6g}"}
    return {"code": True, "text": json.dumps(v, ensure_ascii=False, default=str)}


def _duration(v: Any) -> str:
    f = _num(v)
    if f is None:
        return "—"
    if f < 60:
        return f"{f:.1f} s"
    if f < 3600:
        return f"{int(f // 60)} min {f % 60:.0f} s"
    return f"{int(f // 3600)} h {int(f % 3600 // 60)} min"


def _provenance(summary: dict | None, run_dir: Path) -> dict | None:
    if not isinstance(summary, dict):
        return None
    st = summary.get("settings")
    vs = summary.get("versions")
    repro, _ = _read_json(run_dir / "reproduce.json")  # reproduce's own record has the summary/report times
    tm = repro.get("timings") if isinstance(repro, dict) and isinstance(repro.get("timings"), dict) \
        else summary.get("timings")
    timings, total = None, None
    if isinstance(tm, dict) and tm:
        stages = {k: v for k, v in tm.items() if k != "total"}  # summary.json may carry its own total
        total = _num(tm.get("total"))
        if total is None:
            total = sum(_num(v) or 0.0 for v in stages.values())
        timings = [(k, _duration(v)) for k, v in stages.items()]
    return {"settings": [(k, _value_cell(v)) for k, v in _kv_rows(st)] if isinstance(st, dict) and st else [],
            "versions": list(vs.items()) if isinstance(vs, dict) and vs else [],
            "timings": timings, "total": _duration(total)}


# ------------------------------------------------------------------------------ training curves

def training_figure(run_dir: Path) -> Path | None:
    """``figures/training_curves.png`` from ``metrics.jsonl``, redrawn when missing or older than
    the metrics; None when there are no metrics (e.g. a Hugging Face run)."""
    from ..figures.training import training_curves  # matplotlib: only when the figure is redrawn
    from ..train import read_metrics

    metrics, png = run_dir / "metrics.jsonl", run_dir / TRAINING_FIGURE
    if not metrics.is_file():
        return png if png.is_file() else None
    if not png.is_file() or png.stat().st_mtime < metrics.stat().st_mtime:
        out: list = []
        guarded(out, training_curves, read_metrics(run_dir), run_dir / "figures" / "training_curves",
                title="Training")
    return png if png.is_file() else None


def _training(run_dir: Path, summary: dict | None) -> dict:
    png = training_figure(run_dir)
    data = _read_bytes(png, "training figure") if png is not None else None
    hf = _d(summary).get("hf")
    out: dict = {"revisions": None, "missing": None}
    if png is None and isinstance(hf, dict) and isinstance(hf.get("revisions"), list):
        # a Hugging Face suite's revisions in place of the training curve (trained elsewhere)
        out["model"] = hf.get("model")
        out["revisions"] = [{"step": r.get("step"), "revision": r.get("revision") or "", "model": r.get("model")}
                            for r in hf["revisions"] if isinstance(r, dict)]
    elif png is None:
        out["missing"] = "no metrics.jsonl (not trained here)"
    elif data is None:
        out["missing"] = "the figure is not a regular file inside the run"
    else:
        out["b64"] = base64.b64encode(data).decode("ascii")
        out["caption"] = "Loss per character against iteration (from metrics.jsonl)."
        tps = _num(_d(_d(summary).get("training")).get("median_tokens_per_s"))
        out["tokens_per_s"] = fmt(tps, 3) if tps else None
    return out


# ------------------------------------------------------------------------------ figures

def _folder_label(rel: Path) -> str:
    parts = [p for p in rel.parts if p not in ("figures", ".")]
    if not parts:
        return ""
    out = []
    for p in parts:
        it = _iter_from_name(p)
        out.append(f"iteration {it}" if it is not None and is_main_name(p) else p)
    return " / ".join(out)


def _figures(run_dir: Path, axis: str) -> tuple[list[dict], int]:
    """The figure groups (heading, folders with their figures) and the number embedded."""
    groups_out, n_total = [], 0
    for heading, sub in FIGURE_GROUPS:
        root = run_dir / sub
        pngs = sorted(p for p in root.rglob("*.png") if p.is_file() and "report" not in p.parts[len(run_dir.parts):]
                      and p != run_dir / TRAINING_FIGURE) if root.is_dir() else []
        folders: list[dict] = []
        groups_out.append({"heading": heading, "folders": folders})
        if not pngs:
            continue
        # one group per folder, and within a folder one per checkpoint prefix (iter_0000200_acf.png)
        groups: dict[tuple[Path, int | None], list[Path]] = {}
        for p in pngs:
            groups.setdefault((p.parent, figure_stem(p.stem)[0]), []).append(p)
        keys = sorted(groups, key=lambda k: (len(k[0].parts), _iter_from_name(str(k[0].relative_to(root))) or -1,
                                             str(k[0]), k[1] is not None, k[1] or 0))
        iters = [k[1] if k[1] is not None else _iter_from_name(str(k[0].relative_to(root))) for k in keys]
        last_it = max((i for i in iters if i is not None), default=None)
        for (folder, it), it_any in zip(keys, iters):
            label = _folder_label(folder.relative_to(root))
            if it is not None:
                label = f"{label} / iteration {it}" if label else f"iteration {it}"
            figs = []
            for p in groups[(folder, it)]:
                short = figure_stem(p.stem)[1]
                data = _read_bytes(p, "figure")
                ok = bool(data) and data[:8] == b"\x89PNG\r\n\x1a\n"
                figs.append({"path": p.relative_to(run_dir).as_posix(),
                             "caption": _on_axis(caption_from_stem(short or p.stem), axis),
                             "b64": base64.b64encode(data).decode("ascii") if ok else None})
                n_total += ok
            # overview figures and the last checkpoint are open
            folders.append({"label": _on_axis(label, axis), "open": it_any is None or it_any == last_it,
                            "figures": figs})
    return groups_out, n_total


# ------------------------------------------------------------------------------ generated text

def _texts(run_dir: Path, axis: str) -> list[dict]:
    d = run_dir / "spelling"
    files = sorted(d.glob("*.text.html"), key=lambda p: (_iter_from_name(p.name) is None,
                                                         _iter_from_name(p.name) or 0, p.name)) \
        if d.is_dir() else []
    out = []
    for p in files:
        name = p.name[: -len(".text.html")]
        it = _iter_from_name(name)
        raw = _read_bytes(p, "generated text", 64 << 20)  # a FIFO or a link out of the run is not read
        out.append({"name": name, "label": f"{axis} {it}" if it is not None else name,
                    # rebuilt from a whitelist, every piece of text escaped: the one fragment of markup
                    "fragment": None if raw is None else Markup(_on_axis(sanitize_fragment(raw.decode("utf-8", "replace")),
                                                                        axis))})
    return out


# ------------------------------------------------------------------------------ wave explorer

def _pick_evenly(items: list, k: int) -> list:
    if k <= 0 or not items:
        return []
    if len(items) <= k:
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, k).round().astype(int))
    return [items[i] for i in idx]


def _quantise(x: np.ndarray) -> dict:
    """(T, C) float -> int8 codes with per-channel offset and scale: x ~ lo + (q + 127) * scale."""
    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():  # an all-NaN channel gets offset 0
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = np.nanmin(x, axis=0) if x.shape[0] else np.zeros(x.shape[1])
        hi = np.nanmax(x, axis=0) if x.shape[0] else np.zeros(x.shape[1])
    lo = np.where(np.isfinite(lo), lo, 0.0)
    hi = np.where(np.isfinite(hi), hi, 0.0)
    scale = (hi - lo) / 254.0
    scale = np.where(scale > 0, scale, 1.0)
    q = np.round((np.nan_to_num(x, nan=0.0) - lo) / scale) - 127
    q = np.clip(q, -127, 127).astype(np.int8)
    return {"lo": [float(f"{v:.6g}") for v in lo], "scale": [float(f"{v:.6g}") for v in scale],
            "q": base64.b64encode(np.ascontiguousarray(q).tobytes()).decode("ascii")}


def _space_selective(run_dir: Path, name: str, tap: str) -> tuple[int | None, float | None]:
    """The channel with the largest |Cohen's d| for "current character is a space", as stored by
    the waves stage (``waves/<name>/arrays.npz``); (None, None) when not analysed."""
    from ..analysis.waves import CHAR_CLASSES  # scipy and the waves stage: only when recordings exist
    from .waves import load_array

    path = run_dir / "waves" / name / "arrays.npz"
    if not path.is_file():
        return None, None
    try:
        check_regular_file(path, "waves arrays")
        d = np.asarray(load_array(path, tap, "d_current"), dtype=float)[list(CHAR_CLASSES).index("space")]
    except (GptwavesError, IndexError, ValueError):
        return None, None
    if not np.isfinite(d).any():
        return None, None
    k = int(np.nanargmax(np.abs(np.where(np.isfinite(d), d, np.nan))))
    return k, float(d[k])


def _explorer_data(run_dir: Path, max_ckpts: int, steps: int) -> tuple[dict | None, list[str]]:
    from ..recording import Recording, list_recordings  # h5py: only for the explorer

    notes: list[str] = []
    paths = list_recordings(run_dir)
    # the main recordings only (iter_XXXXXXX.h5); suffixed variants (seeds, prompts) are skipped
    main = [p for p in paths if is_main_name(p.stem)] or paths
    main.sort(key=lambda p: (_iter_from_name(p.stem) is None, _iter_from_name(p.stem) or 0, p.name))
    chosen = _pick_evenly(main, max_ckpts)
    out = []
    for p in chosen:
        try:
            rec = Recording.open(p)
        except Exception as e:  # noqa: BLE001 - a damaged recording must not stop the report
            notes.append(f"{p.name}: {e}")
            continue
        try:
            T = max(1, min(int(steps), int(rec.is_prompt.shape[0])))
            chars = rec.input_chars(0)[:T].tolist()
            n_prompt = int(np.asarray(rec.is_prompt[:T], dtype=bool).sum())
            taps = {}
            for tap in rec.taps:
                x = rec.waves(tap, samples=0, steps=slice(0, T))
                ent = _quantise(x)
                ent["C"] = int(x.shape[1])
                k, d = _space_selective(run_dir, p.stem, tap)
                ent["space_channel"], ent["space_d"] = k, (None if d is None else float(f"{d:.4g}"))
                taps[tap] = ent
            it = rec.iteration
            out.append({"name": p.stem, "iteration": it if isinstance(it, (int, float)) else None,
                        "steps": T, "n_prompt": n_prompt, "chars": chars, "taps": taps,
                        "samples": rec.n_samples})
        except Exception as e:  # noqa: BLE001
            notes.append(f"{p.name}: {type(e).__name__}: {e}")
        finally:
            rec.close()
    if not out:
        return None, notes
    return {"checkpoints": out}, notes


# ------------------------------------------------------------------------------ page

def build_report(run_dir: Path, *, max_explorer_checkpoints: int = 6, explorer_steps: int = 256) -> Path:
    """Write ``DIR/report/index.html``: one self-contained offline page; returns its path.

    Every file it reads is a regular file inside the run (io.confine_reads): a FIFO, a device or a
    symbolic link out of the run is shown as not embedded, never read."""
    with confine_reads(run_dir):
        run_dir = Path(run_dir)
        page = render_report(report_context(run_dir, max_explorer_checkpoints, explorer_steps))
    out = run_dir / "report" / "index.html"
    atomic_write_text(out, page)
    return out


def report_context(run_dir: Path, max_explorer_checkpoints: int = 6, explorer_steps: int = 256) -> dict:
    """Everything the report template shows, as plain data (strings, numbers, lists, dicts)."""
    run_dir = Path(run_dir)
    t0 = time.time()
    summary, why = _read_json(run_dir / "summary.json")
    if summary is not None and not isinstance(summary, dict):
        summary, why = None, "not a JSON object"
    axis = _axis(summary)
    data, notes = _explorer_data(run_dir, max_explorer_checkpoints, explorer_steps)
    figure_groups, n_figs = _figures(run_dir, axis)
    js, css = _asset("report.js"), _asset("report.css")
    js_hash = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    s = _d(summary)
    return {
        "title": f"gptwaves report — {run_dir.resolve().name}",
        "subject": _subject(summary), "axis": axis, "nav": NAV, "version": __version__,
        "preset": s.get("preset") or None, "corpus_sha256": str(s["corpus_sha256"]) if s.get("corpus_sha256") else None,
        "n_figures": n_figs, "built": time.strftime("%Y-%m-%d %H:%M"),
        # a constant and a base64 hash (no quote, < or &): its single quotes stay literal
        "csp": Markup("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                      f"script-src 'sha256-{js_hash}'; base-uri 'none'; form-action 'none'"),
        "findings": _findings(summary, why, axis),
        "table": report_table(summary),
        "decomposition": _decomposition(summary),
        "training": _training(run_dir, summary),
        "figure_groups": figure_groups, "max_figure_mib": MAX_FIGURE_BYTES >> 20,
        "explorer_json": None if data is None else Markup(json_for_html(data)),  # no <, >, & inside
        "explorer_notes": _on_axis("; ".join(notes), axis),
        "texts": _texts(run_dir, axis),
        "provenance": _provenance(summary, run_dir),
        # the page's own assets, verbatim (the script's hash is in the CSP)
        "css": Markup(css), "js": Markup(js), "t0": t0,
    }


_ENV = None


def _environment() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = Environment(loader=PackageLoader("gptwaves", "templates"), autoescape=select_autoescape(["html"]),
                           keep_trailing_newline=True)
        _ENV.filters["verdict_class"] = _verdict_class
    return _ENV


def render_report(context: dict) -> str:
    """The page: ``templates/report.html`` rendered with autoescaping on."""
    return _environment().get_template("report.html").render(
        **context, seconds=time.time() - context.get("t0", time.time()))
