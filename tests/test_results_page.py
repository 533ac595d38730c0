"""docs/results.md says only what the published summaries say (gptwaves.results_page).

Every number on the page carries a reference to the summary field it quotes and is checked against
it (rounding included); every "every"/"all"/"steadily"-style statement carries a checked
predicate; generated blocks are compared with a fresh rendering. The checker itself is tested on
small synthetic pages, and on the sentences the earlier page got wrong. Reads JSON and Markdown only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptwaves import results_page as rp

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_the_published_results_page_checks_out():
    page = DOCS / "results.md"
    problems = rp.check_page(page.read_text(encoding="utf-8"), DOCS)
    assert problems == [], "\n".join(problems)


def test_the_published_page_states_the_status_of_its_verdicts():
    """The page says which runs are under the revised, calibrated rules (and by which code) and which
    still carry the earlier rules' verdicts."""
    text = (DOCS / "results.md").read_text(encoding="utf-8")
    head = " ".join(line.lstrip("> ") for line in text[:text.index("## ")].splitlines())  # one line
    paper = json.loads((DOCS / "results" / "paper" / "summary.json").read_text())
    assert (paper.get("calibration") or {}).get("claims")  # the paper run is calibrated ...
    assert "revised rules" in head and "calibrated" in head and "`09d5ae6`" in head  # ... and says by what
    quick = json.loads((DOCS / "results" / "quick" / "summary.json").read_text())
    assert (quick.get("calibration") or {}).get("claims") and "`73454c0`" in head  # quick too, and by what
    assert "pending" not in head and "seed tables" in head  # the seeds: the same rules, by the same code
    for run in ("paper", "quick"):
        assert (DOCS / "results" / f"{run}-seeds.md").is_file() and f"<!-- gen:seeds:{run}," in text
    for word in ("position-aware", "z-scores", "paired", "gain normalisation", "probe"):
        assert word in head
    for run in ("paper", "quick"):
        assert f"<!-- gen:findings:{run}:begin -->" in text and f"<!-- gen:budget:{run}:begin -->" in text


def _summary(**over) -> dict:
    s = {"preset": "t", "checkpoints": [
        {"iteration": 0, "x": 0.30, "ok": True, "v": "sub-Poissonian", "p": 0.2},
        {"iteration": 10, "x": 0.12633, "ok": True, "v": "sub-Poissonian", "p": 0.004},
        {"iteration": 20, "x": 0.1315, "ok": True, "v": "Poissonian", "p": 0.076}],
        "tiny": 2.036e-144, "big": 465472, "settings": {"train": {"seed": 1337}},
        "findings": {"claims": [
            {"id": 1, "claim": "A", "as_stated": {"verdict": "supported"},
             "beyond_null": {"verdict": "not supported"}},
            {"id": 2, "claim": "B", "as_stated": {"verdict": "inconclusive"}, "beyond_null": {"verdict": "not supported"}},
        ]}}
    s.update(over)
    return s


@pytest.fixture
def site(tmp_path):
    (tmp_path / "results" / "t").mkdir(parents=True)
    (tmp_path / "results" / "t" / "summary.json").write_text(json.dumps(_summary()))
    return tmp_path


def check(site, text):
    return rp.check_page(text, site)


def test_quoted_numbers_must_round_to_their_field(site):
    ok = ("x is 0.126<!--=t:checkpoints/iteration=10/x--> or 0.1263<!--=t:checkpoints/1/x-->, "
          "p = 2e-144<!--=t:tiny-->, 465,472<!--=t:big--> windows, seed 1337<!--=t:settings/train/seed-->.\n")
    assert check(site, ok) == []
    for bad in ("0.12<!--=t:checkpoints/1/x-->", "0.127<!--=t:checkpoints/1/x-->", "3e-144<!--=t:tiny-->",
                "0.126<!--=t:checkpoints/iteration=99/x-->", "0.126<!--=t:nothing-->"):
        problems = check(site, f"x is {bad}.\n")
        assert len(problems) == 1, (bad, problems)


def test_aliases_fan_out_and_functions(site):
    text = ("<!-- alias k = t:checkpoints -->\n"
            "x ranges 0.126<!--=k/*/x|min--> to 0.30<!--=k/*/x|max--> over 3<!--=k|count--> checkpoints, "
            "0.13<!--=k/iteration>0/x|max--> after the first, 0.126<!--=k/iteration=5..15/x|min--> at ten.\n")
    assert check(site, text) == []


def test_a_number_without_a_reference_is_an_error_but_conventions_are_not(site):
    assert check(site, "Published on 2026-11-29; claim 2 has a 95% bootstrap CI; x crosses 1.\n") == []
    problems = check(site, "x ends at 0.126 after training.\n")
    assert len(problems) == 1 and "0.126 has no reference" in problems[0]
    assert check(site, "Code `x = 0.126` and [a link](results/t/3.md) state nothing.\n") == []


def test_quantified_statements_need_a_true_check(site):
    assert any("quantifier" in p for p in check(site, "x falls at every later checkpoint.\n"))
    two = "x is significant at every checkpoint and all are small. <!--check t:checkpoints/*/ok all == true-->\n"
    assert any("2 quantifier(s)" in p for p in check(site, two))
    assert check(site, "Every number here is quoted. <!--wording-->\n") == []
    assert check(site, "x is significant at every checkpoint. <!--check t:checkpoints/*/ok all == true-->\n") == []
    false = {
        "x falls at every later checkpoint. <!--check t:checkpoints/*/x decreasing-->": "is false",
        "x is sub-Poissonian at all checkpoints. <!--check t:checkpoints/*/v all == sub-Poissonian-->": "is false",
        "p is small from 10 on. <!--check t:checkpoints/iteration>=10/p all <= 0.004-->": "is false",
        "No checkpoint is Poissonian. <!--check t:checkpoints/*/v none == Poissonian-->": "is false",
    }
    for text, why in false.items():
        problems = [p for p in check(site, text + "\n") if "has no reference" not in p]
        assert len(problems) == 1 and why in problems[0], (text, problems)
    assert check(site, "x is not monotone. <!--check t:checkpoints/*/x not-monotone-->\n") == []
    assert check(site, "q. <!--check t:checkpoints/iteration<=10/x all > @t:checkpoints/iteration<=10/p-->\n") == []


def test_interpretation_carries_no_numbers(site):
    assert check(site, "*Interpretation:* the input explains it.\n") == []
    problems = check(site, "*Interpretation:* the input explains 0.126<!--=t:checkpoints/1/x--> of it.\n")
    assert len(problems) == 1 and "interpretation carries numbers" in problems[0]


def test_generated_blocks_are_rendered_and_checked_for_staleness(site):
    stale = "<!-- gen:claims:t:begin -->\n| old |\n<!-- gen:claims:t:end -->\n"
    problems = check(site, stale)
    assert len(problems) == 1 and "stale" in problems[0]
    fresh = rp.render_page(stale, site)
    assert check(site, fresh) == []
    assert "| 1 | A | supported | not supported |" in fresh
    other = _summary(preset="u")
    other["findings"]["claims"][1]["beyond_null"]["verdict"] = "supported"
    (site / "results" / "u").mkdir()
    (site / "results" / "u" / "summary.json").write_text(json.dumps(other))
    diff = rp.render_page("<!-- gen:diff:t,u:begin -->\n<!-- gen:diff:t,u:end -->\n", site)
    assert ("differ from the `t` run's in claim 2 beyond the null (not supported in `t`, supported in `u`), "
            "and in no other.") in diff and check(site, diff) == []
    assert "the same verdicts" in rp.render_page("<!-- gen:diff:t,t:begin -->\n<!-- gen:diff:t,t:end -->\n", site)
    (site / "seeds.md").write_text("| seed | 1 |\n")
    inc = rp.render_page("<!-- gen:include:seeds.md:begin -->\n<!-- gen:include:seeds.md:end -->\n", site)
    assert "| seed | 1 |" in inc and check(site, inc) == []


def test_headline_says_what_is_supported_not_supported_and_undecided():
    h = rp.headline(_summary())
    assert h.startswith("Without a calibration at its sizes")
    assert "supports claim 1 as stated;" in h
    assert "does not support claims 1 and 2 beyond the null;" in h
    assert "leaves claim 2 as stated inconclusive" in h
    for word in ("True", "None", "nan"):
        assert word not in h


def _level(false_lo: float, powers: list[float], strengths=(0.5, 1.0)) -> dict:
    """A calibration level: one no-effect scenario whose false-"supported" CI starts at ``false_lo``,
    and the power at each planted strength (80% power reached where any is >= 0.8)."""
    from gptwaves.analysis.calibration import min_detectable

    return {"false_supported": [{"scenario": "independent", "rate": false_lo, "ci": [false_lo, min(1, false_lo + .1)],
                                 "k": 0, "n": 100}],
            "power": [{"scenario": f"e{x}", "strength": x, "rate": pw, "ci": [pw, pw], "k": 0, "n": 100}
                      for x, pw in zip(strengths, powers)],
            "min_detectable": min_detectable(list(strengths), powers)}


def test_calibrated_headline_separates_absent_from_invisible_and_flags_uninformative_support():
    """docs/method.md, Calibration: "not supported" means absent only where the test could have seen the
    effect; a "supported" that the test also gives without the effect shows nothing."""
    s = _summary()
    s["findings"]["claims"] = [
        {"id": 1, "claim": "A", "as_stated": {"verdict": "supported"}, "beyond_null": {"verdict": "not supported"}},
        {"id": 2, "claim": "B", "as_stated": {"verdict": "supported"}, "beyond_null": {"verdict": "not supported"}},
        {"id": 3, "claim": "C", "as_stated": {"verdict": "inconclusive"}, "beyond_null": {"verdict": "not supported"}}]
    s["settings"] = {"analysis": {"waves": {"alpha": 0.05}}, "spelling": {"alpha": 0.05}}
    s["calibration"] = {"claims": {
        "1": {"as_stated": _level(0.0, [0.6, 0.95]), "beyond_null": _level(0.0, [0.9, 1.0])},
        "2": {"as_stated": _level(0.9, [1.0, 1.0]), "beyond_null": _level(0.01, [0.1, 0.3])},
        "3": {"as_stated": _level(0.0, [0.1, 0.2]), "beyond_null": _level(0.0, [0.5, 0.85])}}}
    h = rp.headline(s)
    assert h.startswith("Calibrated at its own sizes, the `t` run (3 checkpoints) supports claim 1 as stated;")
    assert 'says "supported" for claim 2 as stated too, but' in h
    assert "shows claims 1 and 3 beyond the null absent (not supported by a test that detects the planted effect " \
           "in at least 80% of runs like this one)" in h
    assert "leaves claim 3 as stated, claim 2 beyond the null invisible at this size" in h
    assert h.count(".") == 1 and h.endswith(")."), h  # one sentence
    del s["calibration"]["claims"]["3"]
    assert "claims 3 as stated" not in rp.headline(s) and "were not calibrated" in rp.headline(s)
    # the size flag reads the rule's own alpha: a false rate whose CI starts at 0.08 is within alpha 0.1
    s["calibration"]["claims"]["2"]["as_stated"] = _level(0.08, [1.0, 1.0])
    assert "too, but" in rp.headline(s)
    s["settings"]["spelling"]["alpha"] = 0.1
    assert "too, but" not in rp.headline(s) and "supports claims 1 and 2 as stated;" in rp.headline(s)


@pytest.mark.parametrize("sentence, check_marker", [
    # the earlier page's errors, each against the published paper summary
    ("the induced mean |R| falls at every later checkpoint",
     "paper:checkpoints/iteration>=10/waves/blocks.5.hook_resid_post/induced/mean_abs_corr decreasing"),
    ("from iteration 100 to 2000 a misspelling is followed by another less often than chance (p <= 0.004)",
     "paper:checkpoints/iteration=100..2000/spelling/cascade/p_value all <= 0.004"),
    ("the space channels' rhythm similarity is not higher at the last block than at the input",
     "paper:findings/claims/id=4/beyond_null/numbers/max_space_similarity "
     "<= @paper:findings/claims/id=4/beyond_null/numbers/max_space_similarity_input"),
])
def test_the_earlier_pages_errors_are_caught(sentence, check_marker):
    problems = [p for p in rp.check_page(f"{sentence}. <!--wording--><!--check {check_marker}-->\n", DOCS)
                if "has no reference" not in p]
    assert len(problems) == 1 and "is false" in problems[0], problems


def test_earlier_quotes_are_caught():
    # 0.126 is the excess, not the induced mean |R| (0.1315); "0.03" is not the evoked share range
    text = ("0.126<!--=paper:checkpoints/-1/waves/blocks.5.hook_resid_post/induced/mean_abs_corr--> and "
            "0.03<!--=quick:checkpoints/iteration>200/waves/blocks.3.hook_resid_post/evoked_share|min-->.\n")
    assert len(rp.check_page(text, DOCS)) == 2


def test_cli_check_reports_in_one_line(tmp_path, site, capsys):
    page = site / "page.md"
    page.write_text("x ends at 0.126 after training.\n")
    assert rp.main(["--page", str(page), "--check"]) != 0
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("gptwaves: error: 1 problem(s)")
    assert rp.main(["--page", str(tmp_path / "missing.md")]) != 0
    assert "gptwaves: error:" in capsys.readouterr().err
    page.write_text("<!-- gen:claims:t:begin -->\n<!-- gen:claims:t:end -->\n")
    assert rp.main(["--page", str(page)]) == 0
    assert "| 2 | B | inconclusive | not supported |" in page.read_text()


def test_cli_renders_the_readme_block_from_the_summary_it_names(tmp_path, capsys):
    from gptwaves import publish

    (tmp_path / "docs" / "results" / "t").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "t" / "summary.json").write_text(json.dumps(_summary()))
    page = tmp_path / "docs" / "results.md"
    page.write_text("Nothing quoted.\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{publish.BEGIN}\nfrom docs/results/t/summary.json, old\n{publish.END}\n\nrest\n")
    assert rp.main(["--page", str(page), "--readme", str(readme), "--check"]) != 0
    assert "is stale" in capsys.readouterr().err
    assert rp.main(["--page", str(page), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert rp.headline(_summary()) in text and text.endswith("\n\nrest\n")
    assert rp.main(["--page", str(page), "--readme", str(readme), "--check"]) == 0
    page.write_text("<!-- gen:include:missing.md:begin -->\n<!-- gen:include:missing.md:end -->\n")
    assert rp.main(["--page", str(page)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gptwaves: error:")


@pytest.mark.parametrize("run", ["paper", "quick"])
def test_the_seed_table_agrees_with_the_published_summary_of_its_seed(run):
    """The published run is one of its seed table's columns: its verdicts, crossing and final
    validation loss there are those of docs/results/RUN/summary.json."""
    table = DOCS / "results" / f"{run}-seeds.md"
    s = json.loads((DOCS / "results" / run / "summary.json").read_text())
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.read_text().splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    col = rows[0].index(f"seed {s['settings']['train']['seed']}")
    cells = {r[0]: r[col] for r in rows[1:]}
    for c in s["findings"]["claims"]:
        for key, label in (("as_stated", "as stated"), ("beyond_null", "beyond the null")):
            assert cells[f"{c['id']}. {c['claim']} ({label})"] == c[key]["verdict"]
    assert rp._rounds_to(cells["crossing iteration of F_correct"], s["findings"]["crossing"]["iteration"])
    assert rp._rounds_to(cells["final val loss"], s["checkpoints"][-1]["val_loss"])


# ------------------------------------------------------------------ a published time budget (budget.json)


def _budget() -> dict:
    """A budget.json as `gptwaves publish run` writes it (gptwaves.bench.budget.budget)."""
    return {"format": "gptwaves-budget", "format_version": 1,
            "machine": {"summary": "CPU X, 2 cores, torch 2, 2 threads", "cores": 2},
            "invocations": [{"train": 3600.0, "total": 3601.5}, {"train": 1800.25, "record": 62.5, "total": 1900.0}],
            "peaks": {"status": "measured", "n": 64, "repeats": 3, "fp32_gflops": 181.4, "bf16_gflops": 415.2},
            "stages": {"train": {"flops": 2.5e15, "peak": "bf16", "seconds_at_peak": 6021.2, "seconds": 5400.25,
                                 "gap": 0.8, "seconds_at_median_rate": 4817.0, "wall_gap": 0.8969,
                                 "median_tokens_per_s": 2900.0},
                       "record": {"flops": 1.2e12, "peak": "fp32", "seconds_at_peak": 6.615, "seconds": 62.5,
                                  "gap": 9.448},
                       "waves": {"flops": None, "peak": None, "seconds_at_peak": None, "seconds": 12.0, "gap": None}},
            "total": {"seconds": 5474.75, "invocations": 2},
            "run": {"preset": "t", "gptwaves_version": "0.1.0", "machine": {"platform": "Linux", "processor": "x86"}}}


@pytest.fixture
def budget_site(site):
    (site / "results" / "t" / "budget.json").write_text(json.dumps(_budget()))
    return site


def test_numbers_quoted_from_a_published_budget_are_checked(budget_site):
    """``NAME-budget:PATH`` quotes results/NAME/budget.json the way ``NAME:PATH`` quotes the
    summary: a right number passes, a wrong one, a missing field or a missing file fails."""
    ok = ("Training took 5400<!--=t-budget:stages/train/seconds--> s, 1.5<!--=t-budget:stages/train/seconds|hours--> "
          "hours over 2<!--=t-budget:invocations|count--> invocations, against 6021<!--=t-budget:stages/train/"
          "seconds_at_peak--> s at the bf16 peak of 415<!--=t-budget:peaks/bf16_gflops--> GFLOP/s "
          "(2.5e15<!--=t-budget:stages/train/flops--> FLOP); the recordings ran 9.4<!--=t-budget:stages/record/gap--> "
          "times their limit, at seed 1337<!--=t:settings/train/seed-->.\n")
    assert check(budget_site, ok) == []
    aliased = "<!-- alias B = t-budget:stages -->\nThe waves took 12<!--=B/waves/seconds--> s.\n"
    assert check(budget_site, aliased) == []
    for bad in ("5401<!--=t-budget:stages/train/seconds-->", "9.5<!--=t-budget:stages/record/gap-->",
                "182<!--=t-budget:peaks/fp32_gflops-->", "3<!--=t-budget:invocations|count-->",
                "5400<!--=t-budget:stages/report/seconds-->", "5400<!--=u-budget:stages/train/seconds-->"):
        problems = check(budget_site, f"Training took {bad} s.\n")
        assert problems and len(problems) <= 2, (bad, problems)  # a missing file: its load and the quote
    problems = check(budget_site, "<!-- alias B = t-budget:stages -->\nThe waves took 13<!--=B/waves/seconds--> s.\n")
    assert len(problems) == 1 and "13 quotes" in problems[0]
    every = "Every invocation trained. <!--check t-budget:invocations/*/train all > 1000-->\n"
    assert check(budget_site, every) == []
    assert any("is false" in p for p in check(budget_site, every.replace("1000", "2000")))


def test_the_budget_block_is_the_published_time_table(budget_site):
    stale = "<!-- gen:budget:t:begin -->\n| old |\n<!-- gen:budget:t:end -->\n"
    problems = check(budget_site, stale)
    assert len(problems) == 1 and "stale" in problems[0]
    fresh = rp.render_page(stale, budget_site)
    assert check(budget_site, fresh) == []
    assert rp.budget_markdown(_budget()).rstrip("\n") in fresh
    assert "| train | 3600.0 | 1800.2 | 5400.2 |" in fresh and "| total | 3601.5 | 1900.0 | 5501.5 |" in fresh
    assert "| record | 1.2e+12 | fp32 | 6.62 | 62.5 | 9.45 |" in fresh
    assert "| train at the median logged rate (2900 tokens/s) | 2.5e+15 | bf16 | 6.02e+03 | 4817.0 | 0.8 |" in fresh
    assert "| waves | no limit (numpy/scipy) | | | 12.0 | |" in fresh
    assert "fp32 181 GFLOP/s, bf16 415 GFLOP/s (64-cubed `torch.mm`, median of 3, measured at publication" in fresh
    b = _budget()
    b["peaks"] = {"status": "absent", "n": None, "repeats": None, "fp32_gflops": None, "bf16_gflops": None}
    b["run"]["machine"] = None
    md = rp.budget_markdown(b)
    assert "not measured (published with `--no-peaks`)" in md and "recorded no machine" in md
    assert "None" not in md and "nan" not in md
