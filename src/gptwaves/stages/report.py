"""The run report: one self-contained, offline HTML page per run directory.

``build_report(DIR)`` gathers what the pipeline stages left in ``DIR`` and writes
``DIR/report/index.html``:

- findings (each claim with its verdict and its sentence of numbers) and the crossing iteration;
- a table of checkpoints (losses, Fano factors with CI and verdict, error rate, coherence);
- training curves (``figures/training_curves.png``, drawn from ``metrics.jsonl`` when missing or stale);
- every PNG figure of the training, waves, spelling and intervention stages (base64 data URIs);
- the generated text of each checkpoint with misspellings highlighted (sanitised fragments);
- an interactive wave explorer (vanilla JS + SVG) over a few recordings;
- settings, package versions and stage timings.

Any input may be missing (a report can be built after a partial run); its section then says
"not computed". Nothing in the page refers to the network: scripts, styles, data and images are
embedded, and a Content-Security-Policy forbids any fetch and any script but the page's own.
Every piece of generated or corpus text is escaped (``html.escape`` here, ``textContent`` in JS).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
import time
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .. import __version__
from ..errors import GptwavesError
from ..io import atomic_write_text, read_json
from ..names import NAME_PATTERN, figure_stem, is_main_name, iteration_in
from .common import focus_tap, guarded, input_floor

__all__ = ["build_report", "sanitize_fragment", "caption_from_stem", "json_for_html"]

FIGURE_GROUPS = (  # (heading, folder relative to the run dir)
    ("Training", "figures"),
    ("Waves", "waves"),
    ("Spelling", "spelling/figures"),
    ("Interventions", "interventions"),
)
TRAINING_FIGURE = Path("figures") / "training_curves.png"  # shown in its own section, not among the figures
MAX_FIGURE_BYTES = 15 * 1024 * 1024  # a larger PNG is listed but not embedded
NOT_COMPUTED = "not computed"


# ------------------------------------------------------------------------------ small helpers

def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table cell, '—' when missing or not finite."""
    if isinstance(v, str) and _num(v) is None:
        return esc(v) if v else "—"
    f = _num(v)
    if f is None:
        return "—"
    if isinstance(v, int) or (f == int(f) and abs(f) >= 10 ** digits and abs(f) < 1e15):
        return f"{int(f)}"
    if f != 0 and (abs(f) < 1e-3 or abs(f) >= 1e6):
        return f"{f:.{max(digits - 1, 1)}e}"
    if abs(f) >= 10 ** digits:
        return f"{f:.0f}"
    return f"{f:.{digits}g}"


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
    from ..io import read_bytes_bounded

    try:
        return read_bytes_bounded(path, what, max_bytes)
    except GptwavesError:
        return None


def _not_computed(what: str, why: str = "") -> str:
    extra = f" ({esc(why)})" if why else ""
    return f'<p class="nc">{esc(what)}: {NOT_COMPUTED}{extra}.</p>'


def _asset(name: str) -> str:
    return resources.files("gptwaves").joinpath("report_assets", name).read_text(encoding="utf-8")


_iter_from_name = iteration_in


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


# ------------------------------------------------------------------------------ fragment sanitiser

_ALLOWED_TAGS = {"section", "div", "h3", "h4", "p", "pre", "span", "mark", "b", "i", "em", "strong", "br"}
_VOID = {"br"}
_ALLOWED_CLASSES = {"miss", "prompt", "unscored", "sample", "sample-wrap", "sample-head",
                    "spelling-samples"}


class _Sanitiser(HTMLParser):
    """Rebuild an HTML fragment from a whitelist: allowed tags and classes, all text escaped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        tag = tag.lower()
        if tag not in _ALLOWED_TAGS:  # shown as text, so tampering is visible and inert
            self.out.append(html.escape(self.get_starttag_text() or f"<{tag}>", quote=True))
            return
        parts = [tag]
        for k, v in attrs:
            k = (k or "").lower()
            if k == "class" and v:
                cls = [c for c in v.split() if c in _ALLOWED_CLASSES]
                if cls:
                    parts.append(f'class="{" ".join(cls)}"')
            elif k == "data-iteration" and v is not None and re.fullmatch(r"[\w.\-]{0,40}", v):
                parts.append(f'data-iteration="{esc(v)}"')
        self.out.append("<" + " ".join(parts) + ">")
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag.lower() in _VOID:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        tag = tag.lower()
        if tag not in _ALLOWED_TAGS:
            self.out.append(html.escape(f"</{tag}>", quote=False))
            return
        if tag in _VOID or tag not in self.stack:
            return
        while self.stack:  # close anything left open inside it, keeping the tree balanced
            t = self.stack.pop()
            self.out.append(f"</{t}>")
            if t == tag:
                break

    def handle_data(self, data):
        self.out.append(html.escape(data, quote=True))

    def result(self) -> str:
        self.close()
        while self.stack:
            self.out.append(f"</{self.stack.pop()}>")
        return "".join(self.out)


def sanitize_fragment(fragment: str) -> str:
    """Keep only the tags/classes of a spelling text page; escape everything else as text."""
    p = _Sanitiser()
    p.feed(fragment)
    return p.result()


# ------------------------------------------------------------------------------ sections

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


def _badge(v: str | None) -> str:
    return f'<span class="badge {_verdict_class(v)}">{esc(v or "?")}</span>'


def _verdict_pair(c: dict, cal: dict | None = None) -> str:
    """Both verdicts of a claim (summary format 2), or the single verdict of format 1; with the
    claim's calibration entry of summary.json (``cal``), each verdict's size and power under it."""
    if isinstance(c.get("as_stated"), dict):
        out = []
        for key, label in (("as_stated", "as stated"), ("beyond_null", "beyond the null")):
            part = c.get(key) if isinstance(c.get(key), dict) else {}
            ctext = ((cal or {}).get(key) or {}).get("text") if isinstance(cal, dict) else None
            calib = f'<span class="calibration">{esc(ctext)}</span>' if ctext else ""
            out.append(f'<div class="verdict-row"><span class="vlabel">{label}</span>{_badge(part.get("verdict"))}'
                       f'<span class="evidence">{esc(part.get("text"))}{calib}</span></div>')
        return "".join(out)
    return f'<div class="verdict-row">{_badge(c.get("verdict"))}<span class="evidence">{esc(c.get("text"))}</span></div>'


def _findings_section(summary: dict | None, why: str | None) -> str:
    h = ['<section id="findings" class="card findings"><h2>Findings</h2>']
    if summary is None:
        h.append(_not_computed("Findings (summary.json)", why or ""))
        h.append("</section>")
        return "".join(h)
    f = summary.get("findings") if isinstance(summary.get("findings"), dict) else None
    if not f:
        h.append(_not_computed("Findings", "summary.json has no findings"))
    else:
        h.append('<p class="note">Each claim of the abstract gets two verdicts: <b>as stated</b> (what the '
                 "abstract says, measured) and <b>beyond the null</b> (still true once the floors, surrogates "
                 "and reference processes are taken out).</p>")
        claims = f.get("claims") if isinstance(f.get("claims"), list) else []
        if claims:
            h.append('<ul class="claims">')
            for c in claims:
                if not isinstance(c, dict):
                    continue
                cal = ((summary.get("calibration") or {}).get("claims") or {}).get(str(c.get("id"))) \
                    if isinstance(summary.get("calibration"), dict) else None
                h.append(f'<li><div class="claim">{esc(c.get("claim"))}</div>{_verdict_pair(c, cal)}</li>')
            h.append("</ul>")
        else:
            h.append(_not_computed("Claims", "no claims listed"))
        cr = f.get("crossing") if isinstance(f.get("crossing"), dict) else {}
        ci = f.get("crossing_iteration")
        if _num(ci) is not None:
            lo, hi = (cr.get("ci") or [None, None]) if isinstance(cr.get("ci"), list) else (None, None)
            h.append(f'<p class="crossing">F<sub>correct</sub> crosses 1 (Poissonian &rarr; sub-Poissonian) '
                     f"near {_axis(summary)} <b>{fmt(ci, 4)}</b> (95% bootstrap CI {fmt(lo, 4) if lo is not None else 'open'}"
                     f" to {fmt(hi, 4) if hi is not None else 'open'}).</p>")
        else:
            reason = cr.get("reason") if isinstance(cr, dict) else None
            h.append('<p class="crossing">No crossing of F<sub>correct</sub> through 1 is reported'
                     + (f": {esc(reason)}" if reason else ".") + "</p>")
    h.append("</section>")
    return "".join(h)


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


def _ci(d: dict) -> str:
    ci = d.get("fano_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and _num(ci[0]) is not None and _num(ci[1]) is not None:
        return f' <span class="ci">[{fmt(ci[0])}, {fmt(ci[1])}]</span>'
    return ""


def _checkpoint_table(summary: dict | None) -> str:
    h = ['<section id="checkpoints" class="card"><h2>Checkpoints</h2>']
    cks = summary.get("checkpoints") if isinstance(summary, dict) else None
    if not isinstance(cks, list) or not cks:
        h.append(_not_computed("Checkpoint table"))
        h.append("</section>")
        return "".join(h)
    tap = floor = None
    for c in cks:
        if isinstance(c, dict) and isinstance(c.get("waves"), dict) and c["waves"]:
            tap, floor = focus_tap(list(c["waves"])), input_floor(list(c["waves"]))
    h.append(f'<div class="tablewrap"><table class="num"><thead><tr><th>{_axis(summary)}</th><th>train loss</th>'
             "<th>val loss</th><th>F<sub>correct</sub> [95% CI]</th><th>verdict</th>"
             "<th>F<sub>misspelled</sub> [95% CI]</th><th>verdict</th><th>error rate</th>"
             f'<th>mean |R| raw{"<br><small>" + esc(tap) + "</small>" if tap else ""}</th>'
             "<th>induced</th><th>surrogate</th><th>excess [95% CI]</th><th>z</th><th>excess, gain-normalised "
             "[95% CI]</th><th>input floor<br><small>"
             f"{esc(floor) + ', induced' if floor else 'not recorded'}</small></th><th>evoked share</th>"
             "<th>space probe R<sup>2</sup> [95% CI]</th></tr></thead><tbody>")
    for c in cks:
        if not isinstance(c, dict):
            continue
        sp = c.get("spelling") if isinstance(c.get("spelling"), dict) else {}
        cor = sp.get("correct") if isinstance(sp.get("correct"), dict) else {}
        mis = sp.get("misspelled") if isinstance(sp.get("misspelled"), dict) else {}
        wv = c.get("waves") if isinstance(c.get("waves"), dict) else {}
        r = wv.get(tap, {}) if tap else {}
        r = r if isinstance(r, dict) else {}
        ind = r.get("induced") if isinstance(r.get("induced"), dict) else {}
        sur = (r.get("surrogate") or {}).get("mean_abs_corr") if isinstance(r.get("surrogate"), dict) else None
        sur = sur if isinstance(sur, dict) else {}
        emb = wv.get(floor) if floor and isinstance(wv.get(floor), dict) else {}
        emb_ind = emb.get("induced") if isinstance(emb.get("induced"), dict) else {}
        sci = sur.get("ci") if isinstance(sur.get("ci"), list) and len(sur["ci"]) == 2 else [None, None]
        excess = (f"{fmt(sur.get('excess'))} <span class=\"ci\">[{fmt(sci[0])}, {fmt(sci[1])}]</span>"
                  + (" *" if sur.get("significant") else "")) if sur else "—"
        gsur = (((r.get("gain_normalised") or {}).get("surrogate") or {}).get("mean_abs_corr")
                if isinstance(r.get("gain_normalised"), dict) else None)
        gsur = gsur if isinstance(gsur, dict) else {}
        gci = gsur.get("ci") if isinstance(gsur.get("ci"), list) and len(gsur["ci"]) == 2 else [None, None]
        gexcess = (f"{fmt(gsur.get('excess'))} <span class=\"ci\">[{fmt(gci[0])}, {fmt(gci[1])}]</span>"
                   + (" *" if gsur.get("significant") else "")) if gsur else "—"
        prb = r.get("probe") if isinstance(r.get("probe"), dict) else {}
        pci = prb.get("ci") if isinstance(prb.get("ci"), list) and len(prb["ci"]) == 2 else [None, None]
        probe = f"{fmt(prb.get('r2'))} <span class=\"ci\">[{fmt(pci[0])}, {fmt(pci[1])}]</span>" if prb else "—"
        h.append(
            f"<tr><td>{fmt(c.get('iteration'))}</td><td>{fmt(c.get('train_loss'), 4)}</td>"
            f"<td>{fmt(c.get('val_loss'), 4)}</td>"
            f"<td>{fmt(cor.get('fano'))}{_ci(cor)}</td><td>{_badge(cor.get('verdict')) if cor else '—'}</td>"
            f"<td>{fmt(mis.get('fano'))}{_ci(mis)}</td><td>{_badge(mis.get('verdict')) if mis else '—'}</td>"
            f"<td>{fmt(sp.get('error_rate'))}</td><td>{fmt(r.get('mean_abs_corr'))}</td>"
            f"<td>{fmt(ind.get('mean_abs_corr'))}</td><td>{fmt(sur.get('surrogate_mean'))}</td><td>{excess}</td>"
            f"<td>{fmt(sur.get('z'))}</td><td>{gexcess}</td>"
            f"<td>{fmt(emb_ind.get('mean_abs_corr'))}</td><td>{fmt(r.get('evoked_share'))}</td><td>{probe}</td></tr>")
    h.append("</tbody></table></div>")
    h.append('<p class="note">F = variance / mean of per-sample word counts (Fano factor); F &lt; 1 is '
             "sub-Poissonian, F &gt; 1 super-Poissonian (index-of-dispersion test, two-sided). "
             "Mean |R| is the mean absolute cross-channel correlation of the last block's residual stream: raw, "
             "and <i>induced</i> (the evoked component, the across-sample mean at each step, removed), next to "
             "its floors: the sample-shuffle surrogate (same channels, within-sample coupling destroyed), the "
             "excess over it with its 95% CI (delete-one-sample jackknife, or BCa bootstrap with <code>--waves-ci bca</code>; "
             "* significant: Gaussian-tail p &lt; 0.05 and CI above 0), its strength z = excess / surrogate SD, "
             "the same excess after gain normalisation (each step's vector divided by its RMS over channels), "
             "and the input floor, the model's embedding tap "
             + (f"<code>{esc(floor)}</code>" if floor else "(not recorded: no floor)")
             + ". Claims are judged on the induced values. The space probe is the out-of-fold R<sup>2</sup> of a "
             "linear probe for &ldquo;the next character is a space&rdquo;.</p>")
    h.append("</section>")
    return "".join(h)


def _decomposition_table(summary: dict | None) -> str:
    """Per checkpoint: what a sub-Poissonian count is made of (docs/method.md, Spelling):
    the word total against its renewal reference, each count against its length-conditioned
    reference and permutation null, the cascade relative risk against its within-sample null."""
    h = ['<section id="decomposition" class="card"><h2>Spelling counts against their references</h2>']
    cks = summary.get("checkpoints") if isinstance(summary, dict) else None
    rows = [c for c in cks if isinstance(c, dict) and isinstance(c.get("spelling"), dict)
            and isinstance(c["spelling"].get("words"), dict)] if isinstance(cks, list) else []
    if not rows:
        h.append(_not_computed("Decomposition table", "no spelling statistics with null models in summary.json"))
        h.append("</section>")
        return "".join(h)
    h.append(f'<div class="tablewrap"><table class="num"><thead><tr><th rowspan="2">{_axis(summary)}</th>'
             '<th colspan="2">word total</th><th colspan="6">correct words</th><th colspan="6">misspelled words</th>'
             '<th colspan="4">cascade</th></tr><tr><th>F</th><th>renewal ref.</th>'
             + ("<th>F</th><th>F<sub>ref</sub></th><th>F / F<sub>ref</sub></th><th>F / null median [95% CI]</th>"
                "<th>z</th><th>null p</th>") * 2
             + "<th>RR</th><th>null median</th><th>z</th><th>p</th></tr></thead><tbody>")

    def d(x):
        return x if isinstance(x, dict) else {}

    def _ci(x, i):
        ci = x.get("excess_null_ci")
        return ci[i] if isinstance(ci, list) and len(ci) == 2 else None

    for c in rows:
        sp = c["spelling"]
        w, cor, mis, cas = d(sp.get("words")), d(sp.get("correct")), d(sp.get("misspelled")), d(sp.get("cascade"))
        cells = [fmt(c.get("iteration")), fmt(w.get("fano")), fmt(w.get("renewal_reference"))]
        for x in (cor, mis):
            cells += [fmt(x.get("fano")), fmt(x.get("fano_ref")),
                      f"{fmt(x.get('excess'))} {_badge(x.get('excess_verdict')) if x.get('excess_verdict') else ''}",
                      f"{fmt(x.get('excess_null'))} <span class=\"ci\">[{fmt(_ci(x, 0))}, {fmt(_ci(x, 1))}]</span>",
                      fmt(x.get("excess_z")), fmt(x.get("excess_p"))]
        cells += [f"{fmt(cas.get('rr'))} {_badge(cas.get('verdict')) if cas.get('verdict') else ''}",
                  fmt(cas.get("null_median")), fmt(cas.get("z")), fmt(cas.get("p_value"))]
        h.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    h.append("</tbody></table></div>")
    h.append('<p class="note">A fixed-length sample holds a nearly fixed number of words, so the word total is '
             "sub-Poissonian by regular spacing alone (renewal reference: CV&sup2; of the spacing between word "
             "starts). F<sub>ref</sub> is the Fano factor that errors independent given word length and "
             "position would give (closed form); F / F<sub>ref</sub> &ne; 1 beyond the stratified permutation "
             "null (p) is what the word length, the position and the word total do not explain. F / null "
             "median comes with its 95% CI over samples, and z = log(F / null median) / the null's SD of log F. RR = "
             "P(misspelled | previous misspelled) / P(misspelled | previous correct) within samples, against a "
             "within-sample, within-position permutation null (z = log(RR / null median) / the null's SD of "
             "log RR).</p>")
    h.append("</section>")
    return "".join(h)


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


def _value_cell(v: Any) -> str:
    if isinstance(v, str):
        return f"<code>{esc(repr(v) if v.strip() != v or not v or any(c in v for c in chr(10) + chr(9)) else v)}</code>"
    if isinstance(v, float):
        return esc(f"{v:.6g}")
    return f"<code>{esc(json.dumps(v, ensure_ascii=False, default=str))}</code>"


def _provenance_section(summary: dict | None, run_dir: Path) -> str:
    h = ['<section id="provenance" class="card"><h2>Settings, versions and timings</h2>']
    if not isinstance(summary, dict):
        h.append(_not_computed("Settings, package versions and timings (summary.json)"))
        h.append("</section>")
        return "".join(h)
    h.append('<div class="cols">')
    st = summary.get("settings")
    h.append("<div><h3>Settings</h3>")
    if isinstance(st, dict) and st:
        h.append('<table class="kv"><tbody>')
        for k, v in _kv_rows(st):
            h.append(f"<tr><th>{esc(k)}</th><td>{_value_cell(v)}</td></tr>")
        h.append("</tbody></table>")
    else:
        h.append(_not_computed("Settings"))
    h.append("</div><div><h3>Package versions</h3>")
    vs = summary.get("versions")
    if isinstance(vs, dict) and vs:
        h.append('<table class="kv"><tbody>')
        for k, v in vs.items():
            h.append(f"<tr><th>{esc(k)}</th><td><code>{esc(v)}</code></td></tr>")
        h.append(f'<tr><th>gptwaves (report)</th><td><code>{esc(__version__)}</code></td></tr>')
        h.append("</tbody></table>")
    else:
        h.append(_not_computed("Package versions"))
    h.append("<h3>Timings</h3>")
    repro, _ = _read_json(run_dir / "reproduce.json")  # reproduce's own record has the summary/report times
    tm = repro.get("timings") if isinstance(repro, dict) and isinstance(repro.get("timings"), dict) \
        else summary.get("timings")
    if isinstance(tm, dict) and tm:
        stages = {k: v for k, v in tm.items() if k != "total"}  # summary.json may carry its own total
        total = _num(tm.get("total"))
        if total is None:
            total = sum(_num(v) or 0.0 for v in stages.values())
        h.append('<table class="kv num"><tbody>')
        for k, v in stages.items():
            h.append(f"<tr><th>{esc(k)}</th><td>{_duration(v)}</td></tr>")
        h.append(f"<tr class='total'><th>total</th><td>{_duration(total)}</td></tr></tbody></table>")
    else:
        h.append(_not_computed("Timings"))
    h.append("</div></div></section>")
    return "".join(h)


def _duration(v: Any) -> str:
    f = _num(v)
    if f is None:
        return "—"
    if f < 60:
        return f"{f:.1f} s"
    if f < 3600:
        return f"{int(f // 60)} min {f % 60:.0f} s"
    return f"{int(f // 3600)} h {int(f % 3600 // 60)} min"


# ------------------------------------------------------------------------------ training curves

def training_figure(run_dir: Path) -> Path | None:
    """``figures/training_curves.png`` from ``metrics.jsonl``, redrawn when missing or older than
    the metrics; None when there are no metrics (e.g. a Hugging Face run)."""
    from ..figures.training import training_curves
    from ..train import read_metrics

    metrics, png = run_dir / "metrics.jsonl", run_dir / TRAINING_FIGURE
    if not metrics.is_file():
        return png if png.is_file() else None
    if not png.is_file() or png.stat().st_mtime < metrics.stat().st_mtime:
        out: list = []
        guarded(out, training_curves, read_metrics(run_dir), run_dir / "figures" / "training_curves",
                title="Training")
    return png if png.is_file() else None


def _training_section(run_dir: Path, summary: dict | None) -> str:
    h = ['<section id="training" class="card"><h2>Training curves</h2>']
    png = training_figure(run_dir)
    data = _read_bytes(png, "training figure") if png is not None else None
    hf = (summary or {}).get("hf") if isinstance(summary, dict) else None
    if png is None and isinstance(hf, dict) and isinstance(hf.get("revisions"), list):
        h.append(_revision_list(hf))
    elif png is None:
        h.append(_not_computed("Training curves", "no metrics.jsonl (not trained here)"))
    elif data is None:
        h.append(_not_computed("Training curves", "the figure is not a regular file inside the run"))
    else:
        b64 = base64.b64encode(data).decode("ascii")
        cap = "Loss per character against iteration (from metrics.jsonl)."
        h.append(f'<figure class="wide"><img src="data:image/png;base64,{b64}" alt="{esc(cap)}">'
                 f"<figcaption>{esc(cap)}</figcaption></figure>")
        tps = _num(((summary or {}).get("training") or {}).get("median_tokens_per_s")) \
            if isinstance(summary, dict) and isinstance(summary.get("training"), dict) else None
        if tps:
            h.append(f'<p class="note">Throughput: median {fmt(tps, 3)} tokens/s.</p>')
    h.append("</section>")
    return "".join(h)


def _revision_list(hf: dict) -> str:
    """A Hugging Face suite's revisions in place of the training curve (trained elsewhere)."""
    rows = "".join(f"<tr><td>{esc(r.get('step'))}</td><td>{esc(r.get('revision') or '')}</td>"
                   f"<td><code>{esc(r.get('model'))}</code></td></tr>"
                   for r in hf["revisions"] if isinstance(r, dict))
    return (f'<p class="note">Model {esc(hf.get("model"))}, trained elsewhere: its published revisions '
            "are the checkpoints, and the training step of each is the iteration axis.</p>"
            '<div class="tablewrap"><table class="num"><thead><tr><th>step (iteration)</th><th>revision</th><th>model</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


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


def _figures_section(run_dir: Path) -> tuple[str, int]:
    h = ['<section id="figures" class="card"><h2>Figures</h2>']
    n_total = 0
    for heading, sub in FIGURE_GROUPS:
        root = run_dir / sub
        pngs = sorted(p for p in root.rglob("*.png") if p.is_file() and "report" not in p.parts[len(run_dir.parts):]
                      and p != run_dir / TRAINING_FIGURE) if root.is_dir() else []
        h.append(f'<h3 class="group">{esc(heading)}</h3>')
        if not pngs:
            h.append(_not_computed(f"{heading} figures"))
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
            files = groups[(folder, it)]
            is_open = it_any is None or it_any == last_it  # overview figures and the last checkpoint
            h.append(f'<details class="figgroup"{" open" if is_open else ""}><summary>'
                     f'{esc(label) if label else "Overview"} <span class="count">{len(files)} '
                     f'figure{"s" if len(files) != 1 else ""}</span></summary><div class="grid">')
            for p in files:
                short = figure_stem(p.stem)[1]
                cap = caption_from_stem(short or p.stem)
                rel = p.relative_to(run_dir).as_posix()
                data = _read_bytes(p, "figure")
                if not data or data[:8] != b"\x89PNG\r\n\x1a\n":
                    h.append(f'<figure class="fig missing"><div class="nc">{esc(rel)}: not embedded '
                             f"(unreadable, not a PNG, or over {MAX_FIGURE_BYTES >> 20} MiB)</div></figure>")
                    continue
                b64 = base64.b64encode(data).decode("ascii")
                h.append(f'<figure class="fig"><img src="data:image/png;base64,{b64}" alt="{esc(cap)}" '
                         f'decoding="async"><figcaption>{esc(cap)}<span class="path">{esc(rel)}</span>'
                         "</figcaption></figure>")
                n_total += 1
            h.append("</div></details>")
    h.append("</section>")
    return "".join(h), n_total


# ------------------------------------------------------------------------------ generated text

def _text_section(run_dir: Path) -> str:
    h = ['<section id="text" class="card"><h2>Generated text</h2>']
    d = run_dir / "spelling"
    files = sorted(d.glob("*.text.html"), key=lambda p: (_iter_from_name(p.name) is None,
                                                         _iter_from_name(p.name) or 0, p.name)) \
        if d.is_dir() else []
    if not files:
        h.append(_not_computed("Generated text (spelling/*.text.html)"))
        h.append("</section>")
        return "".join(h)
    h.append('<div class="controls"><label>Checkpoint <select id="text-select">')
    panes = []
    for k, p in enumerate(files):
        name = p.name[: -len(".text.html")]
        it = _iter_from_name(name)
        label = f"iteration {it}" if it is not None else name
        h.append(f'<option value="{k}"{" selected" if k == len(files) - 1 else ""}>{esc(label)}</option>')
        raw = _read_bytes(p, "generated text", 64 << 20)  # a FIFO or a link out of the run is not read
        frag = (_not_computed(name, "unreadable: not a regular file inside the run, or over 64 MiB") if raw is None
                else sanitize_fragment(raw.decode("utf-8", errors="replace")))
        panes.append(f'<div class="textpane" data-k="{k}"{"" if k == len(files) - 1 else " hidden"}>{frag}</div>')
    h.append('</select></label> <span class="legend-inline"><mark class="miss">misspelled</mark> '
             '<span class="prompt">prompt</span> <span class="unscored">not scored</span></span></div>')
    h.extend(panes)
    h.append("</section>")
    return "".join(h)


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
    import warnings

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
    from ..errors import GptwavesError
    from ..analysis.waves import CHAR_CLASSES
    from .waves import load_array

    from ..io import check_regular_file

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
    from ..record import Recording, list_recordings

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


def _explorer_section(run_dir: Path, max_ckpts: int, steps: int) -> tuple[str, str | None]:
    h = ['<section id="explorer" class="card"><h2>Wave explorer</h2>']
    data, notes = _explorer_data(run_dir, max_ckpts, steps)
    if data is None:
        h.append(_not_computed("Wave explorer (recordings/*.h5)", "; ".join(notes)))
        h.append("</section>")
        return "".join(h), None
    h.append('<p class="note">One channel of one tap while the model writes sample 0: the wave x(t) '
             "on top, the characters processed at each step below, coloured by the channel's value "
             "(blue below its mean, red above). Hover over the plot or the text to link the two; "
             "short ticks on the time axis mark spaces, a grey band the prompt.</p>")
    h.append('<div class="controls" id="wx-controls">'
             '<label>Checkpoint <select id="wx-ckpt"></select></label>'
             '<label>Tap <select id="wx-tap"></select></label>'
             '<label>Channel <input id="wx-ch" type="number" min="0" value="0" step="1"></label>'
             '<button id="wx-prev" type="button" title="previous channel">&#8722;</button>'
             '<button id="wx-next" type="button" title="next channel">+</button>'
             '<button id="wx-space" type="button">most space-selective</button>'
             '<span id="wx-info" class="info"></span></div>'
             '<div id="wx-plot" class="wxplot"></div><div id="wx-text" class="wxtext" aria-label="generated text"></div>')
    if notes:
        h.append(f'<p class="note">Skipped: {esc("; ".join(notes))}</p>')
    h.append("</section>")
    return "".join(h), json_for_html(data)


# ------------------------------------------------------------------------------ page

def build_report(run_dir: Path, *, max_explorer_checkpoints: int = 6, explorer_steps: int = 256) -> Path:
    """Write ``DIR/report/index.html``: one self-contained offline page; returns its path.

    Every file it reads is a regular file inside the run (io.confine_reads): a FIFO, a device or a
    symbolic link out of the run is shown as not embedded, never read."""
    from ..io import confine_reads

    with confine_reads(run_dir):
        return _build_report(Path(run_dir), max_explorer_checkpoints, explorer_steps)


def _build_report(run_dir: Path, max_explorer_checkpoints: int, explorer_steps: int) -> Path:
    run_dir = Path(run_dir)
    t0 = time.time()
    summary, why = _read_json(run_dir / "summary.json")
    if summary is not None and not isinstance(summary, dict):
        summary, why = None, "not a JSON object"

    explorer_html, explorer_json = _explorer_section(run_dir, max_explorer_checkpoints, explorer_steps)
    figures_html, n_figs = _figures_section(run_dir)
    body = "".join([
        _findings_section(summary, why),
        _checkpoint_table(summary),
        _decomposition_table(summary),
        _training_section(run_dir, summary),
        figures_html,
        explorer_html,
        _text_section(run_dir),
        _provenance_section(summary, run_dir),
    ])
    if _axis(summary) == "step":  # captions and labels of a suite's checkpoints: training steps
        body = re.sub(r"\biteration (?=\d)", "step ", body)
    js = _asset("report.js")
    css = _asset("report.css")
    js_hash = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
           f"script-src 'sha256-{js_hash}'; base-uri 'none'; form-action 'none'")
    meta_bits = []
    if isinstance(summary, dict):
        if summary.get("preset"):
            meta_bits.append(f"preset <b>{esc(summary.get('preset'))}</b>")
        if summary.get("corpus_sha256"):
            s = str(summary.get("corpus_sha256"))
            meta_bits.append(f'corpus sha256 <code title="{esc(s)}">{esc(s[:12])}&hellip;</code>')
    meta_bits.append(f"{n_figs} figures")
    meta_bits.append(f"built {esc(time.strftime('%Y-%m-%d %H:%M'))} by gptwaves {esc(__version__)}")
    title = f"gptwaves report — {run_dir.resolve().name}"
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in (
        ("findings", "Findings"), ("checkpoints", "Checkpoints"), ("training", "Training"),
        ("figures", "Figures"), ("explorer", "Wave explorer"), ("text", "Generated text"),
        ("provenance", "Settings")))
    data_block = (f'<script type="application/json" id="wx-data">{explorer_json}</script>'
                  if explorer_json else "")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{esc(title)}</title><style>{css}</style></head><body>"
        f'<header><div class="wrap"><h1>{esc(title)}</h1>'
        f'<p class="sub">Coherent wave dynamics and spelling-error statistics of {esc(_subject(summary))}. '
        f'{" · ".join(meta_bits)}</p><nav>{nav}</nav></div></header>'
        f'<main class="wrap">{body}</main>'
        f'<footer class="wrap">Self-contained report; works offline. Generated in {time.time() - t0:.1f} s.</footer>'
        '<dialog id="lightbox"></dialog>'
        f"{data_block}<script>{js}</script></body></html>\n"
    )
    out = run_dir / "report" / "index.html"
    atomic_write_text(out, page)
    return out
