"""The result schema (gptwaves.schema) is the one declaration of a result's shape: the analysis
returns exactly the declared keys, the validators refuse what the declared rules refuse, the
summary entries carry the declared fields, and the three renderings of the checkpoint table (the
report, the published claims page, the CLI) show the declared columns with the same cells."""

from __future__ import annotations

import copy
import html as htmlmod
import json
import re
from pathlib import Path

import numpy as np
import pytest

from gptwaves import schema, tables
from gptwaves.errors import CorruptArtefactError
from gptwaves.stages import checks
from gptwaves.stages.summary import spelling_entry, waves_entry

TAP = "blocks.1.hook_resid_post"  # a dotted tap name, as in every gptwaves run
FLOOR = "hook_embed"


@pytest.fixture(scope="module")
def tap_result():
    """tap_summary(analyze_tap(...)) of small synthetic waves (every optional part computed)."""
    from gptwaves.analysis import waves as W

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 80, 8))
    chars = rng.choice(np.array(list("ab c")), size=(6, 80))
    return W.tap_summary(W.analyze_tap(x, chars, np.roll(chars, -1, axis=1), n_surrogates=4, probe_null=3,
                                       seed=1, min_events=5))


@pytest.fixture(scope="module")
def spelling_stats():
    """analysis.spelling.analyze of synthetic texts (nulls, CIs and Q(w) computed)."""
    from gptwaves.analysis import spelling as S

    rng = np.random.default_rng(0)
    texts = ["\n" + " ".join(rng.choice(["the", "king", "qz", "a", "lord"], size=12)) for _ in range(20)]
    return S.analyze(texts, {"the", "king", "a", "lord"}, 1, 40, margin=0, n_boot=20, n_perm=20)


# ------------------------------------------------------------------ declared == returned

def test_every_key_of_a_tap_result_is_declared_and_vice_versa(tap_result):
    got = schema.result_paths(tap_result, schema.TAP_FIELDS)
    declared = schema.declared_paths(schema.TAP_FIELDS)
    assert sorted(got - declared) == [], "returned by tap_summary, not declared in gptwaves.schema"
    assert sorted(declared - got) == [], "declared in gptwaves.schema, not returned by tap_summary"


def test_every_key_of_a_spelling_result_is_declared_and_vice_versa(spelling_stats):
    got = schema.result_paths(spelling_stats, schema.SPELLING_FIELDS)
    declared = schema.declared_paths(schema.SPELLING_FIELDS)
    assert sorted(got - declared) == [] and sorted(declared - got) == []


def test_real_results_pass_the_declared_rules(tap_result, spelling_stats):
    assert schema.check_fields(tap_result, schema.TAP_FIELDS, "tap", schema.TAP_GROUPS) is None
    assert schema.check_fields(spelling_stats, schema.SPELLING_FIELDS, "stats") is None


def _summary_paths(entry: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in entry.items():
        p = f"{prefix}.{k}" if prefix else k
        out |= _summary_paths(v, p) if isinstance(v, dict) else {p}
    return out


def test_summary_entries_carry_the_declared_fields(tap_result, spelling_stats):
    w, s = waves_entry(tap_result), spelling_entry(spelling_stats)
    assert _summary_paths(w) == {f.summary for f in schema.TAP_FIELDS if f.summary}
    assert _summary_paths(s) == {f.summary for f in schema.SPELLING_FIELDS if f.summary}
    for f in schema.SPELLING_FIELDS:  # renamed on the way (decomposition.correct.p_value -> correct.excess_p)
        if f.summary:
            assert schema.get_path(s, f.summary) == schema.get_path(spelling_stats, f.path), f.path
    # optional groups are null as a whole when not computed; the surrogate keeps its keys, null
    bare = {k: v for k, v in tap_result.items() if k not in ("gain_normalised", "probe", "surrogate")}
    e = waves_entry(bare)
    assert e["gain_normalised"] is None and e["probe"] is None
    assert e["surrogate"]["mean_abs_corr"]["excess"] is None and e["surrogate"]["p_rank_bound"] is None


# ------------------------------------------------------------------ validators from the rules

BAD = {"probability": [1.5, -0.1], "nonnegative": [-1.0], "at_least_one": [0.5], "count": [-1, 2.5],
       "any": ["x"], "interval": [[2.0, 1.0], [1.0]], "text": [3], "flag": ["yes"], "list": ["x"], "object": [[]]}


def _waves_file(tap: dict) -> dict:
    return {"name": "iter_0000010", "iteration": 10, "recording": "iter_0000010.h5", "recording_sha256": "0" * 64,
            "settings": {}, "record_settings": {"samples": 6}, "taps": {TAP: tap}, "focus_tap": TAP}


def _spelling_file(st: dict) -> dict:
    return {"name": "iter_0000010", "iteration": 10, "train_loss": 2.0, "val_loss": 2.1,
            "settings": {"samples": 20, "alpha": 0.05, "n_boot": 20, "sampling": {"seed": 0}},
            "stats": st}


def _set(obj: dict, path: str, v) -> None:
    *head, last = path.split(".")
    for k in head:
        obj = obj[k]
    obj[last] = v


def _planted(result: dict, fields):
    """(path, bad value, copy of result with it planted) for every declared field present."""
    for f in fields:
        if schema.get_path(result, f.path, default=KeyError) is KeyError:
            continue
        for bad in BAD[f.rule]:
            r = copy.deepcopy(result)
            _set(r, f.path, bad)
            yield f.path, bad, r


def test_validators_refuse_every_declared_rule_broken(tap_result, spelling_stats):
    checks.waves_summary(_waves_file(tap_result))  # valid as the analysis wrote it
    checks.spelling_result(_spelling_file(spelling_stats))
    n = 0
    for path, bad, r in _planted(tap_result, schema.TAP_FIELDS):
        with pytest.raises(CorruptArtefactError):
            checks.waves_summary(_waves_file(r))
            pytest.fail(f"taps.{TAP}.{path} = {bad!r} was accepted")
        n += 1
    for path, bad, r in _planted(spelling_stats, schema.SPELLING_FIELDS):
        with pytest.raises(CorruptArtefactError):
            checks.spelling_result(_spelling_file(r))
            pytest.fail(f"stats.{path} = {bad!r} was accepted")
        n += 1
    assert n > 250


def test_validators_refuse_a_missing_required_field(tap_result, spelling_stats):
    for f in [f for f in schema.TAP_FIELDS if f.required and "." not in f.path] + \
             [schema.Field(g, g, "object", required=True) for g in schema.TAP_GROUPS]:
        r = copy.deepcopy(tap_result)
        del r[f.path]
        with pytest.raises(CorruptArtefactError, match="missing"):
            checks.waves_summary(_waves_file(r))
    for f in [f for f in schema.SPELLING_FIELDS if f.required]:
        r = copy.deepcopy(spelling_stats)
        *head, last = f.path.split(".")
        (schema.get_path(r, ".".join(head)) if head else r).pop(last)
        with pytest.raises(CorruptArtefactError, match="missing"):
            checks.spelling_result(_spelling_file(r))


def test_key_name_rules_come_from_the_schema():
    """check_values' rules by key name (any file: summary.json, interventions...) are the
    schema's unanimous rules, plus those of files the schema does not describe."""
    assert schema.names_with_rule("probability") <= checks._PROB
    assert {"mean_abs_corr", "p_value", "error_rate", "evoked_share", "alpha"} <= checks._PROB
    assert {"fano", "var", "rr", "participation_ratio", "n_samples"} <= checks._NONNEG
    assert {"ci", "fano_ci", "excess_null_ci"} <= checks._PAIR
    assert not (schema.GENERIC_NAMES & (checks._PROB | checks._NONNEG | checks._PAIR))
    with pytest.raises(CorruptArtefactError, match="evoked_share"):
        checks.check_values({"checkpoints": [{"waves": {TAP: {"evoked_share": 1.2}}}]})


def test_names_declared_once():
    """The order parameters and the claim titles of the analysis are those of the schema."""
    from gptwaves.analysis import coherence_nulls
    from gptwaves.analysis import waves_claims
    from gptwaves.stages import summary

    assert tuple(k for k, _ in coherence_nulls.ORDER_KEYS) == schema.ORDER_KEYS
    assert tuple(d for _, d in coherence_nulls.ORDER_KEYS) == tuple(d for *_, d in schema.ORDER_PARAMETERS)
    assert summary.CLAIM_TITLES is schema.CLAIM_TITLES
    assert (waves_claims.CLAIM1, waves_claims.CLAIM4) == (schema.CLAIM_TITLES[1], schema.CLAIM_TITLES[4])
    src = "".join(p.read_text() for p in Path(waves_claims.__file__).parent.glob("*.py"))
    for n in (1, 2, 3, 4, 5):  # the titles are written nowhere in the analysis: they come from the schema
        assert f'"{schema.CLAIM_TITLES[n]}"' not in src


# ------------------------------------------------------------------ one table, three renderings

def _results(tap_result, spelling_stats) -> list[dict]:
    """Stage results of two checkpoints: a spelling result and the waves of two taps each."""
    floor = copy.deepcopy(tap_result)
    floor["induced"]["mean_abs_corr"] = 0.05
    out = []
    for it in (0, 100):
        st = copy.deepcopy(spelling_stats)
        st["correct"]["fano"] = 1.0 + it / 1000
        out.append({"iteration": it, "train_loss": 2.0, "val_loss": 2.1 - it / 1000, "stats": st,
                    "taps": {FLOOR: floor, TAP: tap_result}})
    return out


def _summary(results: list[dict]) -> dict:
    return {"checkpoints": [{"iteration": r["iteration"], "train_loss": r["train_loss"], "val_loss": r["val_loss"],
                             "waves": {t: waves_entry(v) for t, v in r["taps"].items()},
                             "spelling": spelling_entry(r["stats"])} for r in results]}


def _md_cells(line: str) -> list[str]:
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    return [htmlmod.unescape(re.sub(r"\\(.)", r"\1", c)) for c in cells]


def _html_text(fragment: str) -> str:
    fragment = re.sub(r"<br><small>.*?</small>", "", fragment)
    return htmlmod.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def test_the_three_renderings_show_the_declared_columns_and_the_same_cells(tap_result, spelling_stats, tmp_path):
    from gptwaves.cli import spelling_table, table_text, waves_table
    from gptwaves.publish import _checkpoint_markdown
    from gptwaves.stages.report import build_report

    results = _results(tap_result, spelling_stats)
    s = _summary(results)
    expect = {p: tables.checkpoint_table(s["checkpoints"], p, tap=TAP, floor=FLOOR) for p in schema.PLACES}
    for p, t in expect.items():
        assert t.labels == [c.label for c in schema.COLUMNS if p in c.places]
        assert len(t.rows) == (4 if p == "cli-waves" else 2)  # the waves command: a row per tap

    # the report (HTML from its template)
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(s))
    page = build_report(run).read_text()
    sec = page[page.index('id="checkpoints"'):page.index('id="decomposition"')]
    head = [_html_text(h) for h in re.findall(r"<th>(.*?)</th>", sec)]
    assert head == [lab.replace("_", "").replace("^", "") for lab in expect["report"].labels]
    rows = [[_html_text(c) for c in re.findall(r"<td>(.*?)</td>", r)] for r in re.findall(r"<tr>(.*?)</tr>", sec)]
    assert rows[1:] == [[c.text for c in r] for r in expect["report"].rows]

    # the published claims page (Markdown)
    md = [line for line in _checkpoint_markdown(s).splitlines() if line.startswith("|")]
    assert _md_cells(md[0]) == expect["claims"].labels
    assert [_md_cells(line) for line in md[2:]] == [[c.text for c in r] for r in expect["claims"].rows]

    # the CLI: the spelling and waves commands' tables, from the stage results
    sp = [{k: r[k] for k in ("iteration", "val_loss", "stats")} for r in results]
    wv = [{k: r[k] for k in ("iteration", "taps")} for r in results]
    for table, place in ((spelling_table(sp), "cli-spelling"), (waves_table(wv), "cli-waves")):
        assert table.labels == expect[place].labels
        lines = table_text(table).splitlines()
        assert len(lines) == 1 + len(expect[place].rows)
        for line, row in zip(lines[1:], table.rows):
            at = 0
            for c in row:  # every cell, in column order
                at = line.index(c.text, at) + len(c.text)

    # a column shown in several places shows the same cell everywhere
    cols = {p: {c.key: i for i, c in enumerate(t.columns)} for p, t in expect.items()}
    cli_sp = spelling_table(sp)
    shared = set(cols["report"]) & set(cols["claims"]) & set(cols["cli-spelling"])
    assert {"iteration", "val_loss", "fano_correct", "verdict_correct", "error_rate"} <= shared
    for key in shared:
        for r in range(2):
            assert rows[1 + r][cols["report"][key]] == _md_cells(md[2 + r])[cols["claims"][key]] \
                == cli_sp.rows[r][cols["cli-spelling"][key]].text
    focus_rows = [r for r in waves_table(wv).rows if r[1].text == TAP]
    shared = set(cols["report"]) & set(cols["cli-waves"])
    assert {"mean_abs_corr", "excess", "z", "excess_gain", "probe"} <= shared
    for key in shared:
        for r in range(2):
            assert rows[1 + r][cols["report"][key]] == focus_rows[r][cols["cli-waves"][key]].text


def test_cells():
    assert tables.fmt_number(None) == "—" and tables.fmt_number(float("nan")) == "—"
    assert tables.fmt_number(0.123456) == "0.123" and tables.fmt_number(12345) == "12345"
    assert tables.fmt_number(2.5e-5) == "2.50e-05" and tables.fmt_number(True) == "—"
    c = tables.Cell(value="0.3", ci=("0.2", "0.4"), mark=True, p="0.01")
    assert c.text == "0.3 [0.2, 0.4] * (p 0.01)" and tables.Cell(verdict="Poissonian").text == "Poissonian"
    with pytest.raises(ValueError):
        tables.checkpoint_table([], "nowhere")


def test_publish_checks_summary_entries_by_the_schema(tap_result, spelling_stats):
    """A published summary's checkpoint entries are held to the declared rules at their summary
    paths (a p-value of 2 deep in a tap's surrogate is refused, naming it)."""
    from gptwaves.publish import check_summary
    from gptwaves.stages.summary import SUMMARY_FORMAT, SUMMARY_VERSION

    s = {"format": SUMMARY_FORMAT, "format_version": SUMMARY_VERSION, **_summary(_results(tap_result, spelling_stats)),
         "findings": {"claims": [], "crossing": None}}
    check_summary(copy.deepcopy(s))
    s["checkpoints"][1]["waves"][TAP]["surrogate"]["lambda_max_share"]["p_rank"] = 2.0
    with pytest.raises(CorruptArtefactError, match=r"surrogate\.lambda_max_share\.p_rank"):
        check_summary(s)
    s["checkpoints"][1]["waves"][TAP]["surrogate"]["lambda_max_share"]["p_rank"] = 0.5
    s["checkpoints"][0]["spelling"]["correct"]["excess_null_ci"] = [2.0, 1.0]
    with pytest.raises(CorruptArtefactError, match="excess_null_ci"):
        check_summary(s)
