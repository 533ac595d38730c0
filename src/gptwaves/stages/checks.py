"""Validation of the files the stages read back (their own earlier outputs and caches).

Every stage output is checked before it is reused or summarised: its JSON type, the keys its
readers index, the types of their values, ranges (probabilities in [0, 1], Fano factors and
variances non-negative, confidence intervals as ordered pairs, no NaN, infinities or absurdly
large numbers — gptwaves writes ``null`` for those), counts (as many per-sample counts as the
settings say samples, and the mean and variance they give equal to the stored ones), the
iteration against the file name, and generated texts against the prompt, length and vocabulary.

A cache that fails is rebuilt by the stage that owns it (the validators are passed to
:func:`gptwaves.versions.reusable`); a stage's result read by another stage (``summary``) is
refused with one line naming the file and what to re-run (:func:`read_checked`). Each validator
raises :class:`~gptwaves.errors.CorruptArtefactError` with one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scipy import stats

from .. import schema
from ..errors import CorruptArtefactError
from ..io import read_json
from ..names import iteration_of_name

__all__ = ["check_values", "spelling_result", "waves_summary", "crossing_file", "repeatability_file",
           "reproduce_file", "intervention_result", "texts_cache", "read_checked"]

#: Integers beyond this are not counts, iterations or sizes gptwaves writes.
MAX_INT = 2**53
#: Tolerance of the range checks (floating-point round-off of a p-value just above 1).
EPS = 1e-9

# Range rules by key name, in any file: those of the result schema (gptwaves.schema: every key
# whose declared fields share one rule, generic names aside), and those of the files the schema
# does not describe (interventions, calibration, the crossing, settings, checkpoint names).
_PROB = schema.names_with_rule("probability") | {"p", "p_permutation", "min_p_value", "boot_not_crossed_fraction",
                                                  "boot_below_fraction"}
_NONNEG = (schema.names_with_rule("nonnegative") | schema.names_with_rule("count")
           | {"n_words", "samples", "steps"})
_AT_LEAST_ONE = schema.names_with_rule("at_least_one")
_PAIR = schema.names_with_rule("interval") | {"error_rate_ci"}
_STR = schema.names_with_rule("text") | {"name", "focus_tap", "tap", "checkpoint"}


class _Bad(CorruptArtefactError):
    """What a validator found wrong (one line, without the file's name: the callers add it)."""


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_values(obj: Any, where: str = "") -> None:
    """Walk a JSON value: no NaN/inf, no huge integers, and the range rules of well-known keys.

    Raises ``_Bad`` (turned into one line by the callers) naming the key path.
    """
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise _Bad(f"{where or 'a value'} is {obj} (gptwaves writes null for undefined numbers)")
        if abs(obj) > 1e300:
            raise _Bad(f"{where} = {obj:g} is absurdly large")
    elif _is_int(obj):
        if abs(obj) > MAX_INT:
            raise _Bad(f"{where} = {obj} is absurdly large")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{where}.{k}" if where else str(k)
            _key_rule(str(k), v, path)
            check_values(v, path)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_values(v, f"{where}[{i}]")


def _key_rule(k: str, v: Any, path: str) -> None:
    if v is None:
        return
    if isinstance(v, list) and k not in _PAIR:  # a list of such values: each one
        for i, x in enumerate(v):
            if not isinstance(x, (list, dict)):
                _key_rule(k, x, f"{path}[{i}]")
        return
    if k in _PROB and not isinstance(v, dict):
        if not _is_num(v) or not (-EPS <= v <= 1 + EPS):
            raise _Bad(f"{path} = {v!r} is not a number in [0, 1]")
    elif k in _NONNEG and not isinstance(v, dict):
        if not _is_num(v) or v < 0:
            raise _Bad(f"{path} = {v!r} is not a non-negative number")
    elif k in _AT_LEAST_ONE and not isinstance(v, dict):
        if not _is_num(v) or v < 1 - EPS:
            raise _Bad(f"{path} = {v!r} is not a number >= 1")
    elif k in _PAIR:
        if not (isinstance(v, list) and len(v) == 2 and all(x is None or _is_num(x) for x in v)):
            raise _Bad(f"{path} = {v!r} is not an interval [low, high]")
        if v[0] is not None and v[1] is not None and v[0] > v[1] + EPS * max(1.0, abs(v[1])):
            raise _Bad(f"{path} = {v!r} has low > high")
    elif k in _STR and not isinstance(v, str):
        raise _Bad(f"{path} = {v!r} is not a string")
    elif k == "iteration" and not isinstance(v, dict) and not (_is_num(v) and v >= 0):
        raise _Bad(f"{path} = {v!r} is not a non-negative number")


def _need(obj: Any, key: str, kinds: tuple, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise _Bad(f"{where + '.' if where else ''}{key} is missing")
    v = obj[key]
    ok = any((t is None and v is None) or (t is float and _is_num(v)) or (t is int and _is_int(v))
             or (t not in (None, float, int) and isinstance(v, t)) for t in kinds)
    if not ok:
        names = "/".join("null" if t is None else "number" if t is float else t.__name__ for t in kinds)
        raise _Bad(f"{where + '.' if where else ''}{key} = {str(v)[:40]!r} is not {names}")
    return v


def _name_and_iteration(obj: dict, name: str | None) -> None:
    got = _need(obj, "name", (str,), "")
    if name is not None and got != name:
        raise _Bad(f"it names checkpoint {got!r}, not {name!r}")
    it = _need(obj, "iteration", (int, None), "")
    expect = iteration_of_name(got)
    if expect is not None and it != expect:
        raise _Bad(f"iteration {it!r} disagrees with the name {got}")


# ------------------------------------------------------------------------------ per artefact

def spelling_result(obj: Any, name: str | None = None) -> None:
    """``spelling/<name>.json``: keys, types, ranges; per-sample counts as many as the settings'
    samples, and the stored mean and variance equal to those of the counts."""
    if not isinstance(obj, dict):
        raise _Bad(f"it holds a JSON {type(obj).__name__}, not an object")
    _name_and_iteration(obj, name)
    _fields(obj, schema.CHECKPOINT_FIELDS[1:], "")  # the losses; the iteration is checked against the name
    settings = _need(obj, "settings", (dict,), "")
    for k, kinds in (("samples", (int,)), ("alpha", (float,)), ("n_boot", (int,)), ("sampling", (dict,))):
        _need(settings, k, kinds, "settings")
    _need(settings["sampling"], "seed", (int,), "settings.sampling")
    st = _need(obj, "stats", (dict,), "")
    _fields(st, schema.SPELLING_FIELDS, "stats")  # keys, types and ranges of every declared number
    n = st["n_samples"]
    counts = st["counts"]
    if _is_int(settings.get("samples")) and n != settings["samples"]:
        raise _Bad(f"stats of {n} samples, the settings say {settings['samples']}")
    for which in ("correct", "misspelled"):
        c = _need(counts, which, (list,), "stats.counts")
        if len(c) != n or not all(_is_int(x) and 0 <= x <= MAX_INT for x in c):
            raise _Bad(f"stats.counts.{which} is not {n} non-negative integers")
        d = st[which]
        if n >= 2 and d["mean"] is not None and d["var"] is not None:
            mean = sum(c) / n
            var = sum((x - mean) ** 2 for x in c) / (n - 1)
            if not (math.isclose(mean, d["mean"], rel_tol=1e-6, abs_tol=1e-9)
                    and math.isclose(var, d["var"], rel_tol=1e-6, abs_tol=1e-9)):
                raise _Bad(f"stats.{which}: mean and variance disagree with the per-sample counts")
        _dispersion_consistent(d, n, settings["alpha"], f"stats.{which}")
    check_values(obj)


def _dispersion_consistent(d: dict, n: int, alpha: float, where: str) -> None:
    """The stored dispersion numbers agree with what they derive from (docs/method.md, "Reading a run's files"):
    F = var / mean, q = F - 1, the two-sided index-of-dispersion p-value of F with n - 1 degrees of
    freedom, and the verdict of that p-value at ``alpha`` (an edited Fano factor or verdict is
    refused instead of reported)."""
    mean, var, fano, q, p, verdict = (d.get(k) for k in ("mean", "var", "fano", "q", "p_value", "verdict"))
    if fano is None or mean is None or var is None or mean <= 0:
        return
    if not math.isclose(fano, var / mean, rel_tol=1e-6, abs_tol=1e-12):
        raise _Bad(f"{where}.fano = {fano:g} is not its variance over its mean ({var:g} / {mean:g})")
    if q is not None and not math.isclose(q, fano - 1.0, rel_tol=1e-6, abs_tol=1e-9):
        raise _Bad(f"{where}.q = {q:g} is not F - 1")
    if p is None or n < 2:
        return
    D, dof = (n - 1) * fano, n - 1
    expect_p = min(1.0, 2.0 * min(float(stats.chi2.cdf(D, dof)), float(stats.chi2.sf(D, dof))))
    if not math.isclose(p, expect_p, rel_tol=1e-5, abs_tol=1e-12):
        raise _Bad(f"{where}.p_value = {p:g} is not the dispersion test's p-value of F = {fano:g} ({expect_p:.3g})")
    expect = ("sub-Poissonian" if p < alpha and fano < 1 else "super-Poissonian" if p < alpha and fano > 1
              else "Poissonian")
    if verdict != expect:
        raise _Bad(f"{where}.verdict {verdict!r} disagrees with F = {fano:.3g}, p = {p:.2g} at alpha {alpha:g} "
                   f"({expect})")


def _fields(obj: Any, fields, where: str, groups=()) -> None:
    """The declared fields of ``obj`` (gptwaves.schema): required ones present, each of its type
    and in its range."""
    why = schema.check_fields(obj, fields, where, groups)
    if why:
        raise _Bad(why)


def waves_summary(obj: Any, name: str | None = None) -> None:
    """``waves/<name>/summary.json``: keys, types, ranges, the taps and their sizes."""
    if not isinstance(obj, dict):
        raise _Bad(f"it holds a JSON {type(obj).__name__}, not an object")
    _name_and_iteration(obj, name)
    rec = _need(obj, "recording", (str,), "")
    if rec != f"{obj['name']}.h5":
        raise _Bad(f"recording {rec!r} is not {obj['name']}.h5")
    _need(obj, "recording_sha256", (str,), "")
    _need(obj, "settings", (dict,), "")
    rs = _need(obj, "record_settings", (dict,), "")
    taps = _need(obj, "taps", (dict,), "")
    if not taps:
        raise _Bad("no taps")
    ft = _need(obj, "focus_tap", (str,), "")
    if ft not in taps:
        raise _Bad(f"focus_tap {ft!r} is not one of its taps")
    for t, v in taps.items():
        where = f"taps.{t}"
        if not isinstance(v, dict):
            raise _Bad(f"{where} is not an object")
        _fields(v, schema.TAP_FIELDS, where, schema.TAP_GROUPS)
        if not all(_is_int(x) and x >= 0 for x in v["label_counts"].values()):
            raise _Bad(f"{where}.label_counts are not counts")
        ns = v["n_samples"]
        if _is_int(rs.get("samples")) and ns != rs["samples"]:
            raise _Bad(f"{where}: {ns} samples analysed, the recording settings say {rs['samples']}")
    check_values(obj)


def crossing_file(obj: Any) -> None:
    """``spelling/crossing.json``."""
    if not isinstance(obj, dict):
        raise _Bad(f"it holds a JSON {type(obj).__name__}, not an object")
    _need(obj, "settings", (dict, None), "")
    cks = _need(obj, "checkpoints", (list,), "")
    if not all(isinstance(c, str) for c in cks):
        raise _Bad("checkpoints are not names")
    c = _need(obj, "crossing", (dict, None), "")
    if c is not None:
        _need(c, "iteration", (float, None), "crossing")
        _need(c, "ci", (list, None), "crossing")
        _need(c, "reported", (bool,), "crossing")
        _need(c, "reason", (str, None), "crossing")
    check_values(obj)


def repeatability_file(obj: Any) -> None:
    """``waves/repeatability.json``: square similarity matrices with one row per name."""
    if not isinstance(obj, dict):
        raise _Bad(f"it holds a JSON {type(obj).__name__}, not an object")
    _need(obj, "tap", (str,), "")
    _need(obj, "checkpoint", (str, None), "")
    for key in ("seeds", "prompts"):
        if key not in obj:
            continue
        g = _need(obj, key, (dict,), "")
        names = _need(g, "names", (list,), key)
        n = len(names)
        for m in ("corr_similarity", "acf_similarity"):
            mat = _need(g, m, (list,), key)
            if len(mat) != n or not all(isinstance(r, list) and len(r) == n and all(x is None or _is_num(x)
                                                                                   for x in r) for r in mat):
                raise _Bad(f"{key}.{m} is not a {n} x {n} matrix")
        for m in ("mean_corr_similarity", "mean_acf_similarity"):
            _need(g, m, (float, None), key)
        _need(g, "baselines", (dict, None), key)
    check_values(obj)


def reproduce_file(obj: Any) -> None:
    """``reproduce.json``: the analysis sizes and stage timings."""
    if not isinstance(obj, dict):
        raise _Bad(f"it holds a JSON {type(obj).__name__}, not an object")
    for k in ("train", "analysis", "timings"):
        if k in obj:
            _need(obj, k, (dict, None), "")
    if isinstance(obj.get("timings"), dict) and not all(_is_num(v) and v >= 0 for v in obj["timings"].values()):
        raise _Bad("timings are not non-negative numbers of seconds")
    if "timings_history" in obj:
        h = _need(obj, "timings_history", (list,), "")
        if not all(isinstance(x, dict) for x in h):
            raise _Bad("timings_history is not a list of objects")
    check_values(obj)


def intervention_result(obj: Any) -> None:
    """``interventions/<name>/result.json``: what the command prints and the report shows."""
    if not isinstance(obj, dict):
        raise _Bad(f"it holds a JSON {type(obj).__name__}, not an object")
    _need(obj, "settings", (dict,), "")
    ch = _need(obj, "channels", (dict,), "")
    _need(ch, "target", (list,), "channels")
    _need(ch, "control", (list, None), "channels")
    conds = _need(obj, "conditions", (dict,), "")
    if "baseline" not in conds or "edited" not in conds:
        raise _Bad("conditions lack the baseline or the edited texts")
    for c, v in conds.items():
        _need(conds, c, (dict,), "conditions")
        _need(v, "error_rate", (float, None), f"conditions.{c}")
        _need(v, "error_rate_ci", (list,), f"conditions.{c}")
        _need(v, "words_per_sample", (float,), f"conditions.{c}")
        _need(_need(v, "word_length", (dict,), f"conditions.{c}"), "mean", (float, None), f"conditions.{c}.word_length")
    cmps = _need(obj, "comparisons", (dict,), "")
    for c, v in cmps.items():
        _need(cmps, c, (dict,), "comparisons")
        e = _need(v, "error_rate", (dict,), f"comparisons.{c}")
        w = _need(v, "word_length", (dict,), f"comparisons.{c}")
        for d, where in ((e, "error_rate"), (w, "word_length")):
            _need(d, "diff", (float, None), f"comparisons.{c}.{where}")
            _need(d, "ci", (list,), f"comparisons.{c}.{where}")
        _need(e, "p_permutation", (float, None), f"comparisons.{c}.error_rate")
        _need(_need(w, "chi2", (dict,), f"comparisons.{c}.word_length"), "p", (float, None), f"comparisons.{c}")
    _need(obj, "figures", (list,), "")
    check_values(obj)


def texts_cache(obj: Any, key: dict, vocab: list[str] | None = None) -> None:
    """A generated-text cache (``{"settings": key, "texts": [...]}``): as many texts as the key's
    samples, each a string starting with the prompt, and, for character vocabularies, exactly
    prompt + ``length`` characters from the vocabulary."""
    if not isinstance(obj, dict):
        raise _Bad(f"it holds a JSON {type(obj).__name__}, not an object")
    texts = _need(obj, "texts", (list,), "")
    if len(texts) != key.get("samples"):
        raise _Bad(f"{len(texts)} texts, the settings say {key.get('samples')}")
    prompt = key.get("prompt") or ""
    if not all(isinstance(t, str) and t.startswith(prompt) for t in texts):
        raise _Bad("a text is not a string starting with the prompt")
    if vocab is not None and all(isinstance(c, str) and len(c) == 1 for c in vocab):
        n = len(prompt) + int(key.get("length") or 0)
        if any(len(t) != n for t in texts):
            raise _Bad(f"a text is not {n} characters long")
        allowed = set(vocab)
        if any(not set(t) <= allowed for t in texts):
            raise _Bad("a text has characters outside the model's vocabulary")


# ------------------------------------------------------------------------------ entry points

def read_checked(path: Path, what: str, validator: Callable[..., None], *args: Any, stage: str | None = None):
    """Read a JSON artefact and validate it; one line naming the file (and the stage to re-run)."""
    obj = read_json(path, what)
    try:
        validator(obj, *args)
    except _Bad as e:
        again = f"; re-run `gptwaves {stage}` (it rebuilds it)" if stage else "; delete it and re-run its stage"
        raise CorruptArtefactError(f"{what} {path} is damaged or inconsistent: {e}{again}") from None
    return obj
