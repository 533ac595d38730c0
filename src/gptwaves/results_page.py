"""The results page (docs/results.md): generated blocks, and a check of every number it quotes.

    python -m gptwaves.results_page [--page docs/results.md] [--readme README.md] [--check]

``--readme`` also renders the README's results block from the published summary it names (the
same block ``python -m gptwaves.publish run --readme`` writes, with its headline sentence).

The page is prose written by people around numbers that are never typed without a reference to the
published file they come from. Three kinds of markers make that checkable:

* **Generated blocks** ``<!-- gen:KIND:SOURCE:begin -->`` ... ``<!-- gen:KIND:SOURCE:end -->`` are
  rendered from ``results/SOURCE/summary.json`` (relative to the page) by this module: ``claims``
  (the verdict table), ``setup`` (model and analysis sizes), ``times`` (the stage times, the
  machine and the versions the summary records), ``headline`` (one sentence on what the verdicts
  mean), ``findings`` (each claim's verdicts with their sentences of numbers and calibration, as in
  the published ``claims.md``), ``budget`` (the time table of ``results/SOURCE/budget.json``, as in the published
  ``claims.md``); ``sweep`` (a published sweep's verdict, scaling, member and cost tables, as in its
  ``sweep.md``: `gptwaves.publish_sweep.sweep_markdown` of ``results/SOURCE/summary.json``'s ``sweep``
  entry, with ``results/SOURCE/cost.json`` where published); ``gen:diff:A,B`` lists the verdicts that
  differ between two runs; ``gen:seeds:A,B,...``
  renders the seed table (`gptwaves.publish.seeds_table_of`) from the published summaries of runs
  that differ only in their training seed; ``gen:include:FILE`` copies a published Markdown file.
* **Quoted numbers** carry the field they quote: ``0.126<!--=paper:PATH-->``. PATH walks the JSON
  with ``/``: a key, a list index (``-1`` is the last), ``key=value`` (the element of a list of
  objects whose field has that value, e.g. ``iteration=300`` or ``id=1``), ``key>=value`` /
  ``key<=value`` / ``key>value`` / ``key<value`` / ``*`` (several elements: the rest of the path is
  applied to each). ``|fn`` applies ``min``, ``max``, ``count``, ``sum``, ``abs``, ``minutes``,
  ``hours`` to the result. The quoted number must be the field's value rounded to the digits
  shown (``0.126`` matches 0.12633; ``2e-144`` matches 2.036e-144). ``NAME/...`` uses a path
  declared once on the page with ``<!-- alias NAME = SOURCE:PATH -->``. A SOURCE ``NAME-budget``
  is the run's ``results/NAME/budget.json`` (stage times, machine, matmul peaks, FLOPs:
  ``0.8<!--=paper-budget:stages/train/gap-->``); ``NAME-cost`` is a published sweep's
  ``results/NAME/cost.json`` (its members' stage seconds: ``0.5<!--=sweep-cost:members/0/total-->``);
  any other SOURCE is ``results/SOURCE/summary.json`` (a sweep's too: ``sweep:sweep/verdict/...``).
* **Checked words**: each "every", "all", "each", "steadily", "monotone", "always", "never",
  "none", "no checkpoint", "throughout" or "consistently" of a paragraph needs a
  ``<!--check SOURCE:PATH PREDICATE-->`` in that paragraph
  (``all == X``, ``all != X``, ``all < X`` ..., ``none == X``, ``increasing``, ``decreasing``,
  ``not-monotone`` on the values of a multi-element PATH; ``== X`` ... on a single value; a
  right-hand side ``@REF`` compares element by element), or a ``<!--wording-->`` where the word
  is not a statement about the data (e.g. "every number on this page").

Every other number outside code, links, markers and generated blocks is an error, except a few
conventions (dates, claim and item numbers, "95% bootstrap CI", "log(1 + iteration)"). A paragraph
starting with ``*Interpretation:*`` carries no numbers at all. ``check_page`` returns the list of
problems; an empty list means every number on the page is what its published file says.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

from .errors import GptwavesError
from .io import atomic_write_text, read_json

__all__ = ["check_page", "render_page", "resolve", "headline", "render_block", "readme_refresh", "budget_markdown",
           "main"]

GEN_RE = re.compile(r"<!-- gen:(?P<spec>[^ ]+?):begin -->\n(?P<body>.*?)<!-- gen:(?P=spec):end -->", re.S)
QUOTE_RE = re.compile(r"(?P<num>[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?)<!--=(?P<ref>[^\n]*?)-->")
CHECK_RE = re.compile(r"<!--check (?P<body>[^\n]*?)-->")
ALIAS_RE = re.compile(r"<!-- alias (?P<name>\w+) = (?P<ref>[^ ]+) -->")
COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
NUMBER_RE = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])")
QUANTIFIER_RE = re.compile(r"\b(every|all|each|steadily|monoton\w*|always|never|none|no checkpoint|throughout"
                           r"|consistently)\b", re.I)
#: numbers that are conventions of the text, not results
EXEMPT_RE = re.compile(r"\d{4}-\d{2}-\d{2}|\bclaims? \d(?:(?:, | and | or )\d)*|\bitems? \d(?:(?:-|, | and )\d)*"
                       r"|95%\s+(?:bootstrap\s+)?CI|log\(1 \+ iteration\)|\bAR\(1\)"
                       r"|\b(?:crosses|through|towards)\s+1\b")
FUNCS = {"min": min, "max": max, "count": len, "sum": sum, "abs": abs,
         "minutes": lambda v: v / 60, "hours": lambda v: v / 3600}


# ---------------------------------------------------------------- paths into a summary

def _walk(node, segs: list[str]):
    if not segs:
        return [node]
    seg, rest = segs[0], segs[1:]
    if isinstance(node, list):
        if re.fullmatch(r"-?\d+", seg):
            return _walk(node[int(seg)], rest)
        if seg == "*":
            return [v for x in node for v in _walk(x, rest)]
        m = re.fullmatch(r"([\w.]+)(==|=|>=|<=|>|<)(.+)", seg)
        if not m:
            raise KeyError(f"'{seg}' does not select from a list")
        key, op, raw = m.groups()
        rng = re.fullmatch(r"(-?[\d.]+)\.\.(-?[\d.]+)", raw) if op in ("=", "==") else None
        if op in ("=", "==") and not rng:
            want = _value(raw)
            hits = [x for x in node if _field(x, key) == want]
            if len(hits) != 1:
                raise KeyError(f"{len(hits)} elements with {key} = {raw}")
            return _walk(hits[0], rest)
        if rng:
            lo, hi = float(rng[1]), float(rng[2])
            cmp = lambda a: lo <= a <= hi  # noqa: E731
        else:
            want = _value(raw)
            cmp = {">=": lambda a: a >= want, "<=": lambda a: a <= want, ">": lambda a: a > want,
                   "<": lambda a: a < want}[op]
        hits = [x for x in node if isinstance(_field(x, key), (int, float)) and cmp(_field(x, key))]
        return [v for x in hits for v in _walk(x, rest)]
    if isinstance(node, dict):
        if seg not in node:
            raise KeyError(f"no field '{seg}'")
        return _walk(node[seg], rest)
    raise KeyError(f"'{seg}' below a {type(node).__name__}")


def _field(x, key: str):
    """``x[a][b][c]`` for the dotted key ``a.b.c`` (None where it is missing)."""
    for k in key.split("."):
        if not isinstance(x, dict):
            return None
        x = x.get(k)
    return x


def _value(raw: str):
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _fan_out(path: str) -> bool:
    return any(s == "*" or re.fullmatch(r"[\w.]+((>=|<=|>|<).+|==?-?[\d.]+\.\.-?[\d.]+)", s)
               for s in path.split("/"))


def resolve(ref: str, sources: dict, aliases: dict | None = None):
    """The value a reference ``SOURCE:PATH[|fn...]`` (or ``ALIAS/PATH``) points to.

    A path that selects several elements gives a list. Raises KeyError with the reason when the
    reference does not resolve."""
    ref, *fns = [p.strip() for p in ref.strip().split("|")]
    if ":" not in ref.split("/")[0]:
        name, _, rest = ref.partition("/")
        if not aliases or name not in aliases:
            raise KeyError(f"unknown alias '{name}'")
        ref = aliases[name] + ("/" + rest if rest else "")
    src, _, path = ref.partition(":")
    if src not in sources:
        raise KeyError(f"unknown source '{src}'")
    vals = _walk(sources[src], [s for s in path.split("/") if s])
    val = vals if _fan_out(path) else vals[0]
    for fn in fns:
        if fn not in FUNCS:
            raise KeyError(f"unknown function '{fn}'")
        val = FUNCS[fn](val)
    return val


def _rounds_to(quoted: str, value) -> bool:
    """Whether ``value`` rounded to the digits of ``quoted`` is ``quoted`` (half a unit of the last
    digit shown, plus a hair for binary floats)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    try:
        q = Decimal(quoted.replace(",", "").lstrip("+"))
    except InvalidOperation:
        return False
    exp = q.as_tuple().exponent
    half = Decimal(5).scaleb(exp - 1)
    return abs(Decimal(repr(float(value))) - q) <= half * Decimal("1.000001")


def _predicate(vals, pred: list[str], refer=None) -> bool:
    """Whether ``vals`` (a value, or the list a multi-element path selects) satisfies ``pred``.

    ``refer`` resolves a right-hand side written ``@REF`` (compared element by element)."""
    ops = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
           "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
    if len(pred) == 2:
        if pred[0] not in ops:
            raise KeyError(f"unknown comparison '{pred[0]}'")
        return ops[pred[0]](vals, refer(pred[1][1:]) if pred[1].startswith("@") else _value(pred[1]))
    if not isinstance(vals, list) or not vals:
        raise KeyError("this statement needs a path that selects several values")
    if pred == ["increasing"]:
        return all(b > a for a, b in zip(vals, vals[1:]))
    if pred == ["decreasing"]:
        return all(b < a for a, b in zip(vals, vals[1:]))
    if pred == ["not-monotone"]:
        d = [b - a for a, b in zip(vals, vals[1:])]
        return any(x > 0 for x in d) and any(x < 0 for x in d)
    if len(pred) == 3 and pred[0] in ("all", "none"):
        if pred[1] not in ops:
            raise KeyError(f"unknown comparison '{pred[1]}'")
        if pred[2].startswith("@"):
            other = refer(pred[2][1:])
            if not isinstance(other, list) or len(other) != len(vals):
                raise KeyError(f"'{pred[2]}' does not select as many values as the left side")
        else:
            other = [_value(pred[2])] * len(vals)
        hits = [ops[pred[1]](a, b) for a, b in zip(vals, other)]
        return all(hits) if pred[0] == "all" else not any(hits)
    raise KeyError(f"unknown predicate '{' '.join(pred)}'")


# ---------------------------------------------------------------- generated blocks

def _f(v, nd: int = 3) -> str:
    return f"{v:.{nd}g}"


def _claims(s: dict) -> list[dict]:
    return [c for c in (s.get("findings") or {}).get("claims", []) if isinstance(c, dict) and "as_stated" in c]


def _ids(xs: list[tuple[str, str]]) -> str:
    """``claims 1 and 4 as stated, claim 2 beyond the null`` from (level label, claim id) pairs."""
    parts = []
    for label in ("as stated", "beyond the null"):
        ids = [i for lb, i in xs if lb == label]
        if ids:
            parts.append(("claims " + ", ".join(ids[:-1]) + " and " + ids[-1] if len(ids) > 1 else f"claim {ids[0]}")
                         + f" {label}")
    return ", ".join(parts) if parts else "none"


_LEVELS = (("as_stated", "as stated"), ("beyond_null", "beyond the null"))


def _claim_alpha(s: dict, cid: int) -> float:
    """The significance level of the rule of claim ``cid`` as the summary records it (the waves
    stage's for claims 1 and 4, the spelling stage's for the others)."""
    st = s.get("settings") or {}
    a = (((st.get("analysis") or {}).get("waves") or {}).get("alpha") if cid in (1, 4)
         else (st.get("spelling") or {}).get("alpha"))
    return float(a) if isinstance(a, (int, float)) else 0.05


def _calibrated_class(s: dict, cid: int, key: str, verdict: str) -> str:
    """What a verdict means once calibrated (docs/method.md, Calibration): ``supported``; ``uninformative``
    (supported, but the test also says so without the effect: the lower end of the CI of its worst
    no-effect rate is above the rule's alpha); ``absent`` (not supported by a test that reaches 80%
    power at a simulated effect); ``invisible`` (inconclusive, or not supported by a test that does
    not); ``uncalibrated``."""
    level = ((((s.get("calibration") or {}).get("claims") or {}).get(str(cid)) or {}).get(key)) or {}
    if not level.get("power") and not level.get("false_supported"):
        return "uncalibrated"
    if verdict == "supported":
        worst = max((f for f in level.get("false_supported") or [] if f.get("ci")),
                    key=lambda f: f["ci"][0], default=None)
        return "uninformative" if worst and worst["ci"][0] > _claim_alpha(s, cid) else "supported"
    if verdict == "not supported" and (level.get("min_detectable") or {}).get("effect") is not None:
        return "absent"
    return "invisible"


def headline(s: dict) -> str:
    """One sentence on what a summary's verdicts mean (docs/method.md, "Findings"): with a calibration
    entry, what is supported, what the test shows absent (where it could have seen the effect) and what
    is invisible at this run's sizes; without one, the verdicts as they are, marked uncalibrated."""
    n = len(s.get("checkpoints") or [])
    run = f"the `{s.get('preset')}` run ({n} checkpoints)"
    if not (s.get("calibration") or {}).get("claims"):
        groups: dict[str, list] = {}
        for c in _claims(s):
            for key, label in _LEVELS:
                groups.setdefault(c[key]["verdict"], []).append((label, str(c["id"])))
        return (f"Without a calibration at its sizes, {run} supports {_ids(groups.get('supported', []))}; it does "
                f"not support {_ids(groups.get('not supported', []))}; it leaves "
                f"{_ids(groups.get('inconclusive', []))} inconclusive (neither shown nor ruled out by these data).")
    cls: dict[str, list] = {}
    for c in _claims(s):
        for key, label in _LEVELS:
            k = _calibrated_class(s, int(c["id"]), key, c[key]["verdict"])
            cls.setdefault(k, []).append((label, str(c["id"])))
    sup = cls.get("supported", [])
    parts = [f"Calibrated at its own sizes, {run} supports {_ids(sup) if sup else 'no claim'}"]
    if cls.get("uninformative"):
        parts.append(f"it says \"supported\" for {_ids(cls['uninformative'])}{' too' if sup else ''}, but there "
                     f"the test also says so in more runs without the effect than the rule's alpha allows, so that "
                     f"verdict does not show the effect")
    targets = [((lv.get("min_detectable") or {}).get("target")) for c in s["calibration"]["claims"].values()
               if isinstance(c, dict) for lv in (c.get(k) for k, _ in _LEVELS) if isinstance(lv, dict)]
    target = next((t for t in targets if isinstance(t, (int, float))), 0.8)
    if cls.get("absent"):
        parts.append(f"it shows {_ids(cls['absent'])} absent (not supported by a test that detects the planted "
                     f"effect in at least {100 * target:.0f}% of runs like this one)")
    if cls.get("invisible"):
        parts.append(f"it leaves {_ids(cls['invisible'])} invisible at this size (inconclusive, or not supported "
                     f"by a test with less than {100 * target:.0f}% power for the strongest planted effect)")
    if cls.get("uncalibrated"):
        parts.append(f"{_ids(cls['uncalibrated'])} {'were' if len(cls['uncalibrated']) > 1 else 'was'} not "
                     f"calibrated")
    return "; ".join(parts) + "."


def _diff(a: dict, b: dict) -> str:
    """Which verdicts of run ``b`` differ from those of run ``a``."""
    vb = {c["id"]: c for c in _claims(b)}
    out = []
    for c in _claims(a):
        for key, label in (("as_stated", "as stated"), ("beyond_null", "beyond the null")):
            other = (vb.get(c["id"]) or {}).get(key, {}).get("verdict", "not reported")
            if other != c[key]["verdict"]:
                out.append(f"claim {c['id']} {label} ({c[key]['verdict']} in `{a.get('preset')}`, {other} in "
                           f"`{b.get('preset')}`)")
    if not out:
        return f"The `{b.get('preset')}` run has the same verdicts as the `{a.get('preset')}` run."
    return (f"The `{b.get('preset')}` run's verdicts differ from the `{a.get('preset')}` run's in "
            + "; ".join(out) + ", and in no other.")


def _setup(s: dict) -> str:
    t = (s.get("settings") or {}).get("train") or {}
    a = (s.get("settings") or {}).get("analysis") or {}
    sp = (s.get("settings") or {}).get("spelling") or {}
    cks = s.get("checkpoints") or []
    lr = ("constant" if t.get("min_lr") == t.get("learning_rate") and not t.get("lr_decay_iters")
          else f"decaying to {t.get('min_lr'):g}")
    return (f"Model: {t.get('n_layer')} layers, {t.get('n_head')} heads, {t.get('n_embd')} channels, context "
            f"{t.get('block_size')}, dropout {t.get('dropout'):g}, learning rate {t.get('learning_rate'):g} ({lr}), "
            f"{t.get('max_iters')} iterations of {t.get('batch_size')} x {t.get('block_size')} characters, training "
            f"seed {t.get('seed')}; validation loss {cks[0].get('val_loss'):.4g} -> {cks[-1].get('val_loss'):.4g}. "
            f"Analysed at {len(cks)} checkpoints ({cks[0].get('iteration')} to {cks[-1].get('iteration')}): "
            f"{a.get('record_samples')} samples x {a.get('record_steps')} steps recorded at every tap, "
            f"{a.get('waves', {}).get('n_surrogates')} sample-shuffle surrogates per coherence statistic, "
            f"{sp.get('samples')} spelling samples of {sp.get('length')} + {sp.get('margin')} characters per "
            f"checkpoint. gptwaves {s.get('gptwaves_version')}, torch {(s.get('versions') or {}).get('torch')}.")


def _times(s: dict) -> str:
    tm = {k: v for k, v in (s.get("timings") or {}).items() if isinstance(v, (int, float))}
    hist = [h for h in s.get("timings_history") or [] if isinstance(h, dict)]
    rows = ["| stage | last invocation | all recorded invocations |", "|---|---|---|"]
    for k in [k for k in tm if k != "total"]:
        total = tm[k] + sum(h[k] for h in hist if isinstance(h.get(k), (int, float)))
        rows.append(f"| {k} | {tm[k]:.1f} s ({tm[k] / 60:.1f} min) | {total:.1f} s ({total / 60:.1f} min) |")
    m = s.get("machine") or {}
    tok = (s.get("training") or {}).get("median_tokens_per_s")
    rows += ["", f"Invocations recorded: {1 + len(hist)}. Machine as recorded: `{m.get('platform', 'not recorded')}`, "
                 f"processor `{m.get('processor', 'not recorded')}`."
             + (f" Median training throughput {tok:.0f} tokens/s." if isinstance(tok, (int, float)) else "")]
    return "\n".join(rows)


def _n(v, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def budget_markdown(b: dict) -> str:
    """The time table of a published run from its ``budget.json`` (written by ``gptwaves publish
    run``; the same numbers ``gptwaves bench budget`` prints): the stage times of every
    ``reproduce`` invocation, and per stage the FLOPs, the seconds at the matmul peak, the measured
    seconds and the gap, with the peaks and the machine they were measured on."""
    from .publish import md_escape

    inv = [t for t in b.get("invocations") or [] if isinstance(t, dict)]
    names = list(dict.fromkeys(k for t in inv for k in t if k != "total"))
    out = ["Stage times of every `gptwaves reproduce` invocation, earliest first (seconds):", "",
           "| stage | " + " | ".join(f"invocation {i + 1}" for i in range(len(inv))) + " | all invocations |",
           "|---|" + "---|" * len(inv) + "---|"]
    for k in names + (["total"] if any("total" in t for t in inv) else []):
        vals = [t.get(k) for t in inv]
        out.append(f"| {md_escape(k)} | " + " | ".join(_n(v, ".1f") for v in vals)
                   + f" | {sum(v for v in vals if v is not None):.1f} |")
    pk = b.get("peaks") or {}
    out += ["", "Time budget: the matmul FLOPs each stage had to do (counted from the run's settings and files), "
            "the seconds they take at the matmul peak, the measured seconds (all invocations) and the gap "
            "(measured / at the peak):", "",
            "| stage | FLOP | peak | seconds at the peak | measured seconds | gap |", "|---|---|---|---|---|---|"]
    for k, st in (b.get("stages") or {}).items():
        if st.get("flops") is None:
            out.append(f"| {md_escape(k)} | no limit (numpy/scipy) | | | {_n(st.get('seconds'), '.1f')} | |")
            continue
        gap = st.get("wall_gap") if "wall_gap" in st else st.get("gap")
        out.append(f"| {md_escape(k)} | {st['flops']:.3g} | {md_escape(st.get('peak') or 'n/a')} | "
                   f"{_n(st.get('seconds_at_peak'), '.3g')} | {_n(st.get('seconds'), '.1f')} | {_n(gap, '.3g')} |")
        if st.get("seconds_at_median_rate") is not None:
            out.append(f"| {md_escape(k)} at the median logged rate ({_n(st.get('median_tokens_per_s'), '.0f')} "
                       f"tokens/s) | {st['flops']:.3g} | {md_escape(st.get('peak') or 'n/a')} | "
                       f"{_n(st.get('seconds_at_peak'), '.3g')} | {_n(st.get('seconds_at_median_rate'), '.1f')} | "
                       f"{_n(st.get('gap'), '.3g')} |")
    m = b.get("machine") or {}
    where = md_escape(m.get("summary") or "an unrecorded machine")
    if pk.get("status") == "absent":
        out += ["", "Matmul peaks: not measured (published with `--no-peaks`), so there are no seconds at the "
                "peak and no gaps."]
    else:
        how = (f"{int(pk['n'])}-cubed `torch.mm`, median of {int(pk['repeats'])}, measured at publication on {where}"
               if pk.get("status") == "measured" else "given to `gptwaves publish`, measured elsewhere")
        out += ["", f"Matmul peaks: fp32 {_n(pk.get('fp32_gflops'), '.0f')} GFLOP/s, bf16 "
                    f"{_n(pk.get('bf16_gflops'), '.0f')} GFLOP/s ({how})."]
    run_m = ((b.get("run") or {}).get("machine")) or {}
    out.append(f"The run itself recorded its machine as `{md_escape(run_m.get('platform'))}`, processor "
               f"`{md_escape(run_m.get('processor') or 'not recorded')}`." if run_m.get("platform")
               else "The run itself recorded no machine.")
    return "\n".join(out) + "\n"


def render_block(spec: str, page_dir: Path) -> str:
    """The body of the generated block ``gen:SPEC`` of a page in ``page_dir``."""
    kind, _, arg = spec.partition(":")
    if kind == "include":
        return (page_dir / arg).read_text(encoding="utf-8").rstrip("\n")
    if kind == "seeds":  # the seed table from the published summaries it reads
        from .publish import seeds_table_of

        names = arg.split(",")
        return seeds_table_of([_load(page_dir, n) for n in names],
                              [f"results/{n}/summary.json" for n in names]).rstrip("\n")
    if kind == "diff":
        return _diff(*[_load(page_dir, n) for n in arg.split(",", 1)])
    if kind == "budget":
        return budget_markdown(_load(page_dir, arg + BUDGET_SUFFIX)).rstrip("\n")
    if kind == "sweep":  # gptwaves publish sweep: the summary, and the cost where published
        from .publish_sweep import check_cost, check_sweep_summary, sweep_markdown

        s = check_sweep_summary(_load(page_dir, arg), f"results/{arg}/summary.json")
        has_cost = os.path.lexists(page_dir / "results" / arg / "cost.json")
        cost = check_cost(_load(page_dir, arg + COST_SUFFIX), f"results/{arg}/cost.json") if has_cost else None
        return sweep_markdown(s["sweep"], cost).rstrip("\n")
    s = _load(page_dir, arg)
    if kind == "claims":
        out = ["| # | claim | as stated | beyond the null |", "|---|---|---|---|"]
        out += [f"| {c['id']} | {c['claim']} | {c['as_stated']['verdict']} | {c['beyond_null']['verdict']} |"
                for c in _claims(s)]
        return "\n".join(out)
    if kind == "setup":
        return _setup(s)
    if kind == "times":
        return _times(s)
    if kind == "headline":
        return headline(s)
    if kind == "findings":
        from .publish import check_summary, claims_text  # publish imports this module

        check_summary(s, f"results/{arg}/summary.json")
        return claims_text(s).rstrip("\n")
    raise GptwavesError(f"unknown generated block 'gen:{spec}'")


#: A source named ``NAME-budget`` is ``results/NAME/budget.json`` (the run's time budget),
#: ``NAME-cost`` is ``results/NAME/cost.json`` (a sweep's stage seconds); any other ``NAME`` is
#: ``results/NAME/summary.json``.
BUDGET_SUFFIX, COST_SUFFIX = "-budget", "-cost"
_SIDE_FILES = {BUDGET_SUFFIX: ("budget.json", "published budget"), COST_SUFFIX: ("cost.json", "published sweep cost")}


def _load(page_dir: Path, name: str) -> dict:
    for suffix, (file, what) in _SIDE_FILES.items():
        if name.endswith(suffix):
            return read_json(page_dir / "results" / name[:-len(suffix)] / file, what, dict)
    return read_json(page_dir / "results" / name / "summary.json", "published summary", dict)


def render_page(text: str, page_dir: Path) -> str:
    """``text`` with every generated block rendered anew."""
    return GEN_RE.sub(lambda m: (f"<!-- gen:{m['spec']}:begin -->\n{render_block(m['spec'], page_dir)}\n"
                                 f"<!-- gen:{m['spec']}:end -->"), text)


# ---------------------------------------------------------------- the check

def _prose(text: str) -> str:
    """Text outside generated blocks, fenced code, code spans and link targets (markers kept)."""
    text = GEN_RE.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "``", text)
    return re.sub(r"\]\([^)]*\)", "]()", text)


def _paragraphs(text: str) -> list[str]:
    out, cur = [], []
    for line in text.splitlines():
        if not line.strip() or re.match(r"\s*([-*] |\d+\. |\||#)", line):
            if cur:
                out.append("\n".join(cur))
            cur = [line] if line.strip() else []
        else:
            cur.append(line)
    if cur:
        out.append("\n".join(cur))
    return [p for p in out if p.strip()]


def check_page(text: str, page_dir: Path) -> list[str]:
    """Every problem of a results page: stale generated blocks, quoted numbers that are not what
    their field says, false or unchecked quantified statements, numbers without a reference."""
    page_dir = Path(page_dir)
    problems = []
    names = {m.split(":")[0] for m in re.findall(r"<!--(?:=|check )\s*([\w.-]+):", text)}
    names |= {n + (BUDGET_SUFFIX if m.startswith("budget:") else "")
              for m in re.findall(r"<!-- gen:(\w+:[^ ]+?):begin", text) if not m.startswith("include:")
              for n in m.split(":", 1)[1].split(",")}
    names |= {a.split(":")[0] for a in ALIAS_RE.findall(text) for a in [a[1]]}
    sources = {}
    for n in sorted(names):
        try:
            sources[n] = _load(page_dir, n)
        except GptwavesError as e:
            problems.append(str(e))
    aliases = {m["name"]: m["ref"] for m in ALIAS_RE.finditer(text)}
    for m in GEN_RE.finditer(text):
        try:
            fresh = render_block(m["spec"], page_dir)
        except (GptwavesError, OSError, KeyError, TypeError) as e:
            problems.append(f"generated block gen:{m['spec']} cannot be rendered: {e}")
            continue
        if m["body"].rstrip("\n") != fresh:
            problems.append(f"generated block gen:{m['spec']} is stale: run `python -m gptwaves.results_page`")
    prose = _prose(text)
    for m in QUOTE_RE.finditer(prose):
        try:
            val = resolve(m["ref"], sources, aliases)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            problems.append(f"{m['num']} quotes {m['ref'].strip()}, which does not resolve: {e}")
            continue
        if not _rounds_to(m["num"], val):
            problems.append(f"{m['num']} quotes {m['ref'].strip()} = {val!r}")
    for para in _paragraphs(prose):
        checks = CHECK_RE.findall(para)
        for body in checks:
            ref, *pred = shlex.split(body)
            try:
                ok = _predicate(resolve(ref, sources, aliases), pred,
                                lambda r: resolve(r, sources, aliases))
            except (KeyError, IndexError, TypeError, ValueError) as e:
                problems.append(f"check '{body.strip()}' does not resolve: {e}")
                continue
            if not ok:
                problems.append(f"check '{body.strip()}' is false")
        bare = COMMENT_RE.sub(" ", QUOTE_RE.sub(" ", para))
        words = [] if bare.startswith("#") else QUANTIFIER_RE.findall(bare)  # a heading names, it states nothing
        if len(words) > len(checks) + para.count("<!--wording-->"):
            problems.append(f"{len(words)} quantifier(s) ({', '.join(words)}) but "
                            f"{len(checks) + para.count('<!--wording-->')} <!--check ...--> or <!--wording--> "
                            f"marker(s) in: {_short(bare)}")
        bare = EXEMPT_RE.sub(" ", bare)
        if re.match(r"\s*(?:[-*] )?\*Interpretation:\*", bare):
            nums = NUMBER_RE.findall(COMMENT_RE.sub(" ", EXEMPT_RE.sub(" ", para)))
            if nums:
                problems.append(f"interpretation carries numbers {nums}: {_short(bare)}")
            continue
        for n in NUMBER_RE.findall(bare):
            problems.append(f"{n} has no reference to a published field in: {_short(bare)}")
    return problems


def readme_refresh(readme: Path) -> str:
    """The README's text with its results block rendered anew from the published summary the block
    names (``docs/results/NAME/summary.json``), as ``python -m gptwaves.publish run --readme`` would."""
    from . import publish

    readme = Path(readme)
    if not readme.is_file():
        raise GptwavesError(f"{readme} does not exist")
    text = readme.read_text(encoding="utf-8")
    if publish.BEGIN not in text or publish.END not in text:
        raise GptwavesError(f"{readme} has no {publish.BEGIN} ... {publish.END} block")
    a, b = text.index(publish.BEGIN), text.index(publish.END) + len(publish.END)
    names = sorted(set(re.findall(r"docs/results/([\w.-]+)/summary\.json", text[a:b])))
    if len(names) != 1:
        raise GptwavesError(f"the results block of {readme} names {len(names)} published summaries, not one")
    rel = f"docs/results/{names[0]}"
    s = read_json(readme.parent / rel / "summary.json", "published summary", dict)
    fig = "fano_reference_null.png" if (readme.parent / rel / "fano_reference_null.png").is_file() else None
    return text[:a] + publish.readme_block(s, rel, fig) + text[b:]


def _short(s: str, n: int = 90) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[:n] + "..."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gptwaves.results_page", description=__doc__.split("\n\n")[0])
    ap.add_argument("--page", default="docs/results.md", help="the results page (default: %(default)s)")
    ap.add_argument("--readme", default=None, help="also render the results block of this README from the "
                    "published summary it names")
    ap.add_argument("--check", action="store_true", help="only check; rewrite nothing")
    args = ap.parse_args(argv)
    page = Path(args.page)
    try:
        if not page.is_file():
            raise GptwavesError(f"{page} does not exist")
        text = page.read_text(encoding="utf-8")
        if not args.check:
            new = render_page(text, page.parent)
            if new != text:
                atomic_write_text(page, new)
                print(page)
            text = new
        problems = check_page(text, page.parent)
        if args.readme:
            fresh = readme_refresh(Path(args.readme))
            if fresh != Path(args.readme).read_text(encoding="utf-8"):
                if args.check:
                    problems.append(f"the results block of {args.readme} is stale")
                else:
                    atomic_write_text(args.readme, fresh)
                    print(args.readme)
        for p in problems:
            print(f"{page}: {p}", file=sys.stderr)
        if problems:
            raise GptwavesError(f"{len(problems)} problem(s) in {page}")
    except GptwavesError as e:
        print(f"gptwaves: error: {e}", file=sys.stderr)
        return e.exit_code
    except (OSError, KeyError, TypeError, ValueError) as e:  # a generated block that cannot be rendered
        print(f"gptwaves: error: {page}: {type(e).__name__}: {e}", file=sys.stderr)
        return GptwavesError.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
