"""The shape of gptwaves' results, declared once.

Every number of a tap's wave results (:func:`gptwaves.analysis.waves.tap_summary`), of a
checkpoint's spelling statistics (:func:`gptwaves.analysis.spelling.analyze`) and of a checkpoint
entry of ``summary.json`` (iteration, losses) is a :class:`Field`: its path in the analysis result,
a label for people, a range rule, whether a reader must find it, and where it goes in
``summary.json`` (its path in the checkpoint's ``waves.<tap>`` or ``spelling`` entry, or nowhere).
The checkpoint table is a list of :class:`Column` (what it shows and where: the run report, the
published claims page, the ``spelling`` and ``waves`` commands' tables).

Derived from these declarations (nowhere else written out):

- the validators of :mod:`gptwaves.stages.checks` (:func:`check_fields` walks the fields; the
  key-name range rules of any other file come from :func:`names_with_rule`);
- the summary entries of :mod:`gptwaves.stages.summary` (:func:`summary_entry`);
- the checkpoint table of the report, the claims page and the CLI
  (:func:`gptwaves.tables.checkpoint_table`, one function; each place renders its cells, never
  computes them).

Adding a number to a tap's results means: the analysis function, one :class:`Field` here (plus a
:class:`Column` if a table shows it) and a test (tests/test_schema.py checks that the analysis
returns exactly the declared keys). This module imports nothing from gptwaves, so every layer may
import it. docs/outputs.md, "The result schema".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["Field", "Column", "RULES", "ORDER_PARAMETERS", "CLAIM_TITLES", "TAP_FIELDS",
           "SPELLING_FIELDS", "CHECKPOINT_FIELDS", "COLUMNS", "PLACES", "summary_entry", "check_fields",
           "names_with_rule", "declared_paths", "TAP_GROUPS", "GENERIC_NAMES", "result_paths", "get_path",
           "in_summary", "rule_ok"]

# ------------------------------------------------------------------------------ names declared once

#: The coherence order parameters (docs/method.md, Coherence): key, label, range rule, and the
#: direction in which coherence grows (+1: larger is more coherent).
ORDER_PARAMETERS: tuple[tuple[str, str, str, int], ...] = (
    ("mean_abs_corr", "mean |R|", "probability", +1),
    ("lambda_max_share", "lambda_max / C", "probability", +1),
    ("participation_ratio", "participation ratio", "nonnegative", -1),
)
ORDER_KEYS = tuple(k for k, *_ in ORDER_PARAMETERS)

#: The claims of the abstract, by number (docs/method.md, Findings).
CLAIM_TITLES = {1: "Coherence builds up with training",
                2: "Correct spellings go from Poissonian to sub-Poissonian",
                3: "Misspellings show the opposite trend",
                4: "Space-associated channels stand out",
                5: "No cascade of defects once trained"}

# ------------------------------------------------------------------------------ range rules

#: Range rules: name -> (what a value must be, in words). ``None`` (JSON null, an undefined
#: number) passes every rule unless the field is ``required`` and not ``nullable``.
RULES = {
    "probability": "a number in [0, 1]",
    "nonnegative": "a non-negative number",
    "at_least_one": "a number >= 1",
    "count": "a non-negative integer",
    "any": "a number",
    "interval": "an interval [low, high]",
    "text": "a string",
    "flag": "true or false",
    "list": "a JSON array",
    "object": "a JSON object",
}
EPS = 1e-9  # round-off of a probability just above 1, of a ratio just below 1


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def rule_ok(rule: str, v: Any) -> bool:
    """Whether a (non-null) value obeys a range rule."""
    if rule == "probability":
        return _is_num(v) and -EPS <= v <= 1 + EPS
    if rule == "nonnegative":
        return _is_num(v) and v >= 0
    if rule == "at_least_one":
        return _is_num(v) and v >= 1 - EPS
    if rule == "count":
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if rule == "any":
        return _is_num(v)
    if rule == "interval":
        if not (isinstance(v, list) and len(v) == 2 and all(x is None or _is_num(x) for x in v)):
            return False
        return v[0] is None or v[1] is None or v[0] <= v[1] + EPS * max(1.0, abs(v[1]))
    if rule == "text":
        return isinstance(v, str)
    if rule == "flag":
        return isinstance(v, bool)
    if rule == "list":
        return isinstance(v, list)
    if rule == "object":
        return isinstance(v, dict)
    raise ValueError(f"unknown range rule {rule!r}")


# ------------------------------------------------------------------------------ fields

@dataclass(frozen=True)
class Field:
    """One number (or labelled value) of a result.

    ``path``: dotted path in the analysis result. ``summary``: its dotted path in the summary
    entry (``waves.<tap>`` or ``spelling`` of a checkpoint of summary.json), or None when
    summary.json does not carry it. ``required``: a reader indexes it, so a file without it is
    refused; ``nullable``: null (undefined) is allowed."""

    path: str
    label: str
    rule: str = "any"
    summary: str | None = None
    required: bool = False
    nullable: bool = True

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"{self.path}: unknown range rule {self.rule!r}")

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]


def _f(path: str, label: str, rule: str = "any", summary: bool | str = False, **kw) -> Field:
    return Field(path, label, rule, path if summary is True else (summary or None), **kw)


def _surrogate_fields(prefix: str, what: str, to_summary: bool) -> list[Field]:
    """The sample-shuffle surrogate block of one coherence analysis (docs/method.md, "Coherence
    against its floors"); in summary.json: p_rank_bound and, per order parameter, the mean, SD,
    excess, CI, z, p-values and the significance flag."""
    s = to_summary
    out = [_f(f"{prefix}.on", f"{what}: order parameters the surrogate is compared with", "text"),
           _f(f"{prefix}.n_surrogates", f"{what}: surrogates", "count"),
           _f(f"{prefix}.n_boot", f"{what}: bootstrap resamples of the excess", "count"),
           _f(f"{prefix}.n_ci_surrogates", f"{what}: surrogates per resample", "count"),
           _f(f"{prefix}.alpha", f"{what}: level", "probability"),
           _f(f"{prefix}.p_rank_bound", f"{what}: smallest rank p-value possible", "probability", s)]
    for op, label, rule, _ in ORDER_PARAMETERS:
        p, w = f"{prefix}.{op}", f"{what}: {label}"
        out += [_f(f"{p}.observed", f"{w}, observed (induced)", rule),
                _f(f"{p}.surrogate_mean", f"{w}, surrogate mean", rule, s),
                _f(f"{p}.surrogate_sd", f"{w}, surrogate SD", "nonnegative", s),
                _f(f"{p}.surrogate_q95", f"{w}, surrogate 95th percentile", rule),
                _f(f"{p}.excess", f"{w}, excess over the surrogate", "any", s),
                _f(f"{p}.z", f"{w}, z = excess / surrogate SD", "any", s),
                _f(f"{p}.ci", f"{w}, 95% CI of the excess", "interval", s),
                _f(f"{p}.ci_method", f"{w}, CI method", "text"),
                _f(f"{p}.se", f"{w}, standard error of the excess", "nonnegative"),
                _f(f"{p}.p_value", f"{w}, Gaussian-tail p-value", "probability", s),
                _f(f"{p}.p_rank", f"{w}, rank p-value", "probability", s),
                _f(f"{p}.significant", f"{w}, significant", "flag", s),
                _f(f"{p}.loo", f"{w}, leave-one-sample-out excesses", "list")]
    return out


def _tap_fields() -> tuple[Field, ...]:
    out: list[Field] = []
    for op, label, rule, _ in ORDER_PARAMETERS:
        out.append(_f(op, f"{label}, raw", rule, True, required=True))
    for op, label, rule, _ in ORDER_PARAMETERS:
        out.append(_f(f"induced.{op}", f"{label}, induced", rule, True))
    out += [_f("evoked_share", "evoked share", "probability", True, required=True),
            _f("evoked_share_chance", "evoked share at chance", "probability", True)]
    out += _surrogate_fields("surrogate", "surrogate", True)
    for op, label, rule, _ in ORDER_PARAMETERS:
        out.append(_f(f"gain_normalised.{op}", f"{label}, gain-normalised", rule, True))
    for op, label, rule, _ in ORDER_PARAMETERS:
        out.append(_f(f"gain_normalised.induced.{op}", f"{label}, gain-normalised, induced", rule, True))
    out += _surrogate_fields("gain_normalised.surrogate", "gain-normalised surrogate", True)
    for op, label, _, _ in ORDER_PARAMETERS:
        p = f"gain_normalised.raw_minus_normalised.{op}"
        out += [_f(f"{p}.difference", f"{label}: raw minus gain-normalised", "any", True),
                _f(f"{p}.se", f"{label}: SE of raw minus gain-normalised", "nonnegative", True),
                _f(f"{p}.ci", f"{label}: 95% CI of raw minus gain-normalised", "interval", True)]
    out += [
        _f("probe.r2", "space probe R^2 (out of fold)", "any", True),
        _f("probe.ci", "space probe R^2, 95% CI", "interval", True),
        _f("probe.se", "space probe R^2, standard error", "nonnegative"),
        _f("probe.loo", "space probe R^2, leave-one-sample-out", "list"),
        _f("probe.rhythm_similarity", "space probe rhythm similarity", "any", True),
        _f("probe.null_r2_q95", "space probe R^2, null 95th percentile", "any", True),
        _f("probe.null_rhythm_q95", "space probe rhythm similarity, null 95th percentile", "any", True),
        _f("probe.null_r2", "space probe R^2 of the null", "list"),
        _f("probe.n_null", "space probe null size", "count", True),
        _f("probe.space_rate", "share of steps before a space", "probability"),
        _f("probe.ridge_penalty", "space probe ridge penalty", "nonnegative"),
        _f("probe.n_folds", "space probe folds", "count"),
        _f("probe.n_fit_rows", "space probe rows fitted", "count"),
        _f("probe.n_eval_steps", "space probe steps evaluated", "count"),
        _f("probe.metric", "space probe metric", "text", True),
        _f("n_constant", "constant channels", "count", True),
        _f("n_oscillating", "oscillating channels (beyond red noise)", "count", True),
        _f("cluster_structure", "cluster structure beyond the surrogate", "flag", True),
        _f("n_clusters", "clusters (1: no cluster structure)", "count", True, required=True, nullable=False),
        _f("constant_channels", "constant channels (first 50)", "list"),
        _f("silhouette", "silhouette", "any"),
        _f("best_k", "best number of clusters", "at_least_one"),
        _f("best_silhouette", "best silhouette", "any"),
        _f("null_silhouette_q95", "silhouette, surrogate 95th percentile", "any"),
        _f("label_counts", "channels per function label", "object", required=True, nullable=False),
        _f("n_labelled", "labelled channels", "count"),
        _f("n_space_labelled", "space channels", "count"),
        _f("label_classes_eligible", "character classes with enough events", "list"),
        _f("class_events", "events per character class", "object", required=True),
        _f("max_abs_d_space", "largest |d| for a space", "nonnegative"),
        _f("max_abs_d_by_class", "largest |d| per character class", "object", required=True),
        _f("space_channels", "most space-selective channels", "list"),
        _f("top_channels", "most selective channels", "list"),
        _f("median_period_acf", "median period (auto-correlation)", "nonnegative"),
        _f("median_period_psd", "median period (power spectrum)", "nonnegative"),
        _f("n_period_acf_unfiltered", "channels with an auto-correlation period", "count"),
        _f("red_noise_threshold", "red-noise threshold", "any"),
        _f("red_noise_dof", "red-noise degrees of freedom", "nonnegative"),
        _f("max_space_similarity", "largest space similarity", "any"),
        _f("space_similarity_baseline", "largest space similarity of the AR(1) twin", "any"),
        _f("max_space_similarity_excess", "largest space similarity over its AR(1) twin", "any"),
        _f("n_samples", "samples analysed", "count", required=True, nullable=False),
        _f("n_steps", "steps analysed", "count"),
        _f("n_channels", "channels", "count"),
    ]
    return tuple(out)


def _spelling_fields() -> tuple[Field, ...]:
    out = [
        _f("prompt_len", "prompt length", "count"),
        _f("length", "counted characters per sample", "count"),
        _f("margin", "margin characters", "count"),
        _f("alpha", "level of every test", "probability"),
        _f("n_boot", "bootstrap resamples", "count"),
        _f("n_perm", "permutations", "count"),
        _f("seed", "seed", "count"),
        _f("n_words_total", "words counted", "count"),
        _f("cut_fraction", "share of words cut", "probability"),
        _f("n_short_texts", "texts shorter than prompt + length + margin", "count"),
    ]
    for which, what in (("correct", "correct words"), ("misspelled", "misspelled words"), ("words", "all words")):
        to = which != "words"  # summary.json keeps the dispersion of the two counts, the word total's below
        out += [_f(f"{which}.n", f"{what}: samples", "count"),
                _f(f"{which}.mean", f"{what}: mean per sample", "nonnegative", to, required=to),
                _f(f"{which}.var", f"{what}: variance", "nonnegative", to, required=to),
                _f(f"{which}.fano", f"{what}: Fano factor F", "nonnegative", to, required=to),
                _f(f"{which}.q", f"{what}: Mandel Q = F - 1", "any", to, required=to),
                _f(f"{which}.fano_ci", f"{what}: 95% CI of F", "interval", to, required=to),
                _f(f"{which}.log_se", f"{what}: SE of log F", "nonnegative"),
                _f(f"{which}.D", f"{what}: index-of-dispersion statistic", "nonnegative"),
                _f(f"{which}.dof", f"{what}: degrees of freedom", "count"),
                _f(f"{which}.p_value", f"{what}: dispersion test p-value", "probability", to, required=to),
                _f(f"{which}.verdict", f"{what}: dispersion verdict", "text", to, required=to, nullable=False),
                _f(f"{which}.reason", f"{what}: why undefined", "text")]
    return tuple(out) + _reference_fields()


def _reference_fields() -> tuple[Field, ...]:
    """The spelling counts against their references and nulls (docs/method.md, Spelling)."""
    out = [
        _f("error_rate_reason", "why the error rate is undefined", "text"),
        _f("rate_by_length", "error rate by word length", "object"),
        _f("rate_by_position", "error rate by position", "object"),
        _f("excess_correct", "F / F_ref, correct words", "nonnegative"),
        _f("excess_misspelled", "F / F_ref, misspelled words", "nonnegative"),
        _f("cascade_rr", "cascade relative risk", "nonnegative"),
        _f("decomposition.words.fano", "word total: F", "nonnegative", "words.fano"),
        _f("decomposition.words.renewal_reference", "word total: renewal reference", "nonnegative",
           "words.renewal_reference"),
        _f("decomposition.words.mean_spacing", "word total: mean spacing of word starts", "nonnegative"),
        _f("decomposition.words.n_spacings", "word total: spacings", "count"),
        _f("decomposition.words.verdict", "word total: dispersion verdict", "text", "words.verdict"),
        _f("decomposition.words.p_value", "word total: dispersion test p-value", "probability"),
    ]
    for which, what in (("correct", "correct words"), ("misspelled", "misspelled words")):
        p = f"decomposition.{which}"
        out += [_f(f"{p}.fano", f"{what}: F", "nonnegative"),
                _f(f"{p}.fano_ref", f"{what}: F_ref (independent errors)", "nonnegative", f"{which}.fano_ref"),
                _f(f"{p}.excess", f"{what}: F / F_ref", "nonnegative", f"{which}.excess"),
                _f(f"{p}.null_median", f"{what}: permutation null median of F", "nonnegative", f"{which}.null_median"),
                _f(f"{p}.null_band", f"{what}: permutation null band of F", "interval", f"{which}.null_band"),
                _f(f"{p}.p_value", f"{what}: permutation p-value", "probability", f"{which}.excess_p"),
                _f(f"{p}.verdict", f"{what}: against the null", "text", f"{which}.excess_verdict"),
                _f(f"{p}.excess_null", f"{what}: F / null median", "nonnegative", f"{which}.excess_null"),
                _f(f"{p}.excess_null_ci", f"{what}: 95% CI of F / null median", "interval",
                   f"{which}.excess_null_ci"),
                _f(f"{p}.log_excess_se", f"{what}: SE of log(F / null median)", "nonnegative"),
                _f(f"{p}.log_null_sd", f"{what}: SD of log F over the null", "nonnegative"),
                _f(f"{p}.z", f"{what}: z against the null", "any", f"{which}.excess_z"),
                _f(f"{p}.n_null", f"{what}: permutations", "count"),
                _f(f"{p}.reason", f"{what}: why undefined", "text"),
                _f(f"{p}.residual_ratio", f"{what}: residual ratio", "any", f"{which}.residual_ratio"),
                _f(f"{p}.log_residual_se", f"{what}: SE of the log residual ratio", "nonnegative")]
    out += [
        _f("error_rate", "error rate", "probability", True, required=True),
        _f("decomposition.n_perm", "permutations", "count"),
        _f("decomposition.perm_seed", "permutation seed", "list"),
        _f("decomposition.length_bins", "word-length bins", "count"),
        _f("decomposition.position_edges", "position bin edges", "list"),
        _f("q_curve", "Mandel Q against counting window", "object"),
        _f("cascade.rr", "cascade relative risk RR", "nonnegative", True),
        _f("cascade.rr_ci", "95% CI of RR", "interval", True),
        _f("cascade.p_mis_given_prev_mis", "P(misspelled | previous misspelled)", "probability"),
        _f("cascade.p_mis_given_prev_correct", "P(misspelled | previous correct)", "probability"),
        _f("cascade.n_pairs", "word pairs", "count"),
        _f("cascade.n_pairs_prev_mis", "word pairs after a misspelling", "count"),
        _f("cascade.reason", "why RR is undefined", "text"),
        _f("cascade.null_median", "RR, permutation null median", "nonnegative", True),
        _f("cascade.null_band", "RR, permutation null band", "interval"),
        _f("cascade.p_value", "RR, permutation p-value", "probability", True),
        _f("cascade.n_null", "RR, permutations", "count"),
        _f("cascade.verdict", "RR against the null", "text", True),
        _f("cascade.log_null_sd", "SD of log RR over the null", "nonnegative"),
        _f("cascade.z", "RR, z against the null", "any", True),
        _f("cascade.perm_seed", "RR permutation seed", "list"),
        _f("counts", "per-sample counts", "object", required=True, nullable=False),
        _f("n_cut", "words cut at the end of a sample", "count", True),
        _f("n_samples", "samples", "count", True, required=True, nullable=False),
    ]
    return tuple(out)


#: A tap's wave results (tap_summary) and where each number goes in summary.json.
TAP_FIELDS = _tap_fields()
#: A checkpoint's spelling statistics (analysis.spelling.analyze) and where each goes.
SPELLING_FIELDS = _spelling_fields()
#: The checkpoint-level numbers of a spelling result and of a summary.json checkpoint entry.
CHECKPOINT_FIELDS = (
    _f("iteration", "iteration", "count", True, required=True),
    _f("train_loss", "train loss", "nonnegative", True, required=True),
    _f("val_loss", "val loss", "nonnegative", True, required=True),
)

#: Groups a tap result must hold (an object, or null when not computed).
TAP_GROUPS = ("induced", "surrogate")

#: Key names too common to mean one thing in every file (a seed, a mean, a length, in the
#: settings or in a claim's numbers): their rules apply by path only (:func:`check_fields`),
#: never by name (:func:`names_with_rule`).
GENERIC_NAMES = frozenset({"mean", "n", "se", "D", "dof", "seed", "length", "margin", "on", "metric", "iteration",
                           "train_loss", "val_loss"})

#: Groups of a summary entry that are null when the result has none (the others are written
#: with null numbers): the gain-normalised analysis and the space probe are optional.
_NULL_GROUPS = {"induced", "gain_normalised", "gain_normalised.induced", "gain_normalised.raw_minus_normalised",
                "probe"}


def in_summary(fields: Iterable[Field]) -> tuple[Field, ...]:
    """The fields as summary.json holds them: at their summary path, none required (a summary
    entry may have been written by hand or by an older format), each with its range rule."""
    return tuple(Field(f.summary, f.label, f.rule) for f in fields if f.summary)


def get_path(obj: Any, path: str, default: Any = None) -> Any:
    """``obj[a][b]...`` for ``path`` ``"a.b..."``; ``default`` when a step is missing or not an object."""
    for k in path.split("."):
        if not isinstance(obj, dict) or k not in obj:
            return default
        obj = obj[k]
    return obj


def summary_entry(result: dict, fields: Iterable[Field]) -> dict:
    """The summary.json entry of an analysis result: every field with a ``summary`` path, in
    declaration order; a missing number is null, and a missing optional group
    (:data:`_NULL_GROUPS`, of fields kept at the same path) is null as a whole."""
    out: dict = {}
    for f in fields:
        if f.summary is None:
            continue
        parts = f.summary.split(".")
        src_parts = f.path.split(".")
        node, skip = out, False
        for i, k in enumerate(parts[:-1]):
            group = ".".join(parts[: i + 1])
            if f.summary == f.path and group in _NULL_GROUPS and get_path(result, ".".join(src_parts[: i + 1])) is None:
                node[k] = None
                skip = True
                break
            node = node.setdefault(k, {})
        if not skip:
            node[parts[-1]] = get_path(result, f.path)
    return out


def declared_paths(fields: Iterable[Field]) -> set[str]:
    return {f.path for f in fields}


def result_paths(result: dict, fields: Iterable[Field], prefix: str = "") -> set[str]:
    """The paths of an actual result, descending into objects except those a field declares as a
    whole (rule "object": their keys are data, not schema)."""
    fields = list(fields)
    whole = {f.path for f in fields if f.rule == "object"}
    out = set()
    for k, v in result.items():
        p = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and p not in whole:
            out |= result_paths(v, fields, p)
        else:
            out.add(p)
    return out


def check_fields(obj: Any, fields: Iterable[Field], where: str = "", groups: Iterable[str] = ()) -> str | None:
    """What is wrong with ``obj`` against the fields (one line), or None: a required field or
    group (``groups``) missing, a value of the wrong type or out of its range rule, a group that
    is not an object."""
    at = (where + ".") if where else ""
    if not isinstance(obj, dict):
        return f"{where or 'it'} is not an object"
    for g in groups:
        if g not in obj:
            return f"{at}{g} is missing"
        if obj[g] is not None and not isinstance(obj[g], dict):
            return f"{at}{g} is not an object"
    for f in fields:
        parts = f.path.split(".")
        node, ok = obj, True
        for i, k in enumerate(parts[:-1]):
            if node is None:
                ok = False
                break
            if not isinstance(node, dict):
                return f"{at}{'.'.join(parts[:i]) or 'it'} is not an object"
            node = node.get(k)
        if not ok or node is None:
            if f.required and not f.nullable:
                return f"{at}{f.path} is missing"
            continue
        if not isinstance(node, dict):
            return f"{at}{'.'.join(parts[:-1])} is not an object"
        if parts[-1] not in node:
            if f.required:
                return f"{at}{f.path} is missing"
            continue
        v = node[parts[-1]]
        if v is None:
            if not f.nullable:
                return f"{at}{f.path} is null, not {RULES[f.rule]}"
            continue
        if f.rule == "interval" and isinstance(v, list) and len(v) == 2 and all(x is None or _is_num(x) for x in v) \
                and not rule_ok("interval", v):
            return f"{at}{f.path} = {v!r} has low > high"
        if not rule_ok(f.rule, v):
            return f"{at}{f.path} = {str(v)[:40]!r} is not {RULES[f.rule]}"
    return None


def names_with_rule(rule: str, *field_sets: Iterable[Field]) -> set[str]:
    """Key names whose every declared field (in summary.json or in a result) has ``rule``, less
    :data:`GENERIC_NAMES`: the key-name range rules :func:`gptwaves.stages.checks.check_values`
    applies in any file."""
    seen: dict[str, set[str]] = {}
    for fields in field_sets or (TAP_FIELDS, SPELLING_FIELDS, CHECKPOINT_FIELDS):
        for f in fields:
            for name in {f.name, (f.summary or f.path).rsplit(".", 1)[-1]}:
                seen.setdefault(name, set()).add(f.rule)
    return {n for n, rules in seen.items() if rules == {rule} and n not in GENERIC_NAMES}


# ------------------------------------------------------------------------------ the checkpoint table

#: Where the checkpoint table is shown: the run report, the published claims page (publish run),
#: and the tables of the `gptwaves spelling` and `gptwaves waves` commands (one row per tap).
PLACES = ("report", "claims", "cli-spelling", "cli-waves")


@dataclass(frozen=True)
class Column:
    """One column of the checkpoint table. Paths are in a summary.json checkpoint entry;
    ``{tap}`` is the focus tap (the row's tap in the `waves` command's table), ``{floor}`` the
    input floor (the embedding tap). A cell shows ``value`` with ``digits`` significant digits,
    then its ``ci`` ``[low, high]``, `` *`` when ``mark`` is true, ``(p ...)`` from ``p``; a verdict
    column (``verdict``) shows the verdict word."""

    key: str
    label: str
    places: frozenset[str]
    value: str | None = None
    digits: int = 3
    ci: str | None = None
    mark: str | None = None
    p: str | None = None
    verdict: str | None = None
    note: str | None = None  # under the label in the report: "{tap}", "{floor}, induced"


def _c(key, label, places, **kw) -> Column:
    return Column(key, label, frozenset(places.split()), **kw)


_W = "waves.{tap}."
_MR = _W + "surrogate.mean_abs_corr."
_GMR = _W + "gain_normalised.surrogate.mean_abs_corr."
#: The checkpoint table, in column order.
COLUMNS = (
    _c("iteration", "iteration", "report claims cli-spelling cli-waves", value="iteration", digits=4),
    _c("tap", "tap", "cli-waves"),
    _c("train_loss", "train loss", "report", value="train_loss", digits=4),
    _c("val_loss", "val loss", "report claims cli-spelling", value="val_loss", digits=4),
    _c("fano_correct", "F_correct [95% CI]", "report claims cli-spelling", value="spelling.correct.fano",
       ci="spelling.correct.fano_ci"),
    _c("verdict_correct", "verdict", "report claims cli-spelling", verdict="spelling.correct.verdict"),
    _c("excess_correct", "F/F_ref correct (p)", "claims cli-spelling", value="spelling.correct.excess",
       p="spelling.correct.excess_p"),
    _c("z_correct", "z_correct", "cli-spelling", value="spelling.correct.excess_z"),
    _c("fano_misspelled", "F_misspelled [95% CI]", "report claims cli-spelling", value="spelling.misspelled.fano",
       ci="spelling.misspelled.fano_ci"),
    _c("verdict_misspelled", "verdict", "report claims cli-spelling", verdict="spelling.misspelled.verdict"),
    _c("excess_misspelled", "F/F_ref misspelled (p)", "claims cli-spelling", value="spelling.misspelled.excess",
       p="spelling.misspelled.excess_p"),
    _c("z_misspelled", "z_misspelled", "cli-spelling", value="spelling.misspelled.excess_z"),
    _c("error_rate", "error rate", "report claims cli-spelling", value="spelling.error_rate"),
    _c("cascade_rr", "RR (p)", "claims cli-spelling", value="spelling.cascade.rr", p="spelling.cascade.p_value"),
    _c("z_rr", "z_RR", "cli-spelling", value="spelling.cascade.z"),
    _c("mean_abs_corr", "mean |R| raw", "report cli-waves", value=_W + "mean_abs_corr", note="{tap}"),
    _c("lambda_max_share", "lambda_max / C", "cli-waves", value=_W + "lambda_max_share"),
    _c("participation_ratio", "PR", "cli-waves", value=_W + "participation_ratio"),
    _c("induced", "induced mean |R|", "report claims", value=_W + "induced.mean_abs_corr"),
    _c("surrogate", "surrogate", "report", value=_MR + "surrogate_mean"),
    _c("excess", "excess [95% CI]", "report claims cli-waves", value=_MR + "excess", ci=_MR + "ci",
       mark=_MR + "significant"),
    _c("z", "z", "report cli-waves", value=_MR + "z"),
    _c("excess_gain", "excess, gain-normalised [95% CI]", "report cli-waves", value=_GMR + "excess",
       ci=_GMR + "ci", mark=_GMR + "significant"),
    _c("input_floor", "input floor", "report", value="waves.{floor}.induced.mean_abs_corr",
       note="{floor}, induced"),
    _c("evoked_share", "evoked share", "report", value=_W + "evoked_share"),
    _c("probe", "space probe R^2 [95% CI]", "report cli-waves", value=_W + "probe.r2", ci=_W + "probe.ci"),
    _c("n_clusters", "clusters", "cli-waves", value=_W + "n_clusters"),
    _c("space_channels", "space channels", "cli-waves", value=_W + "n_space_labelled"),
)
