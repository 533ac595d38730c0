"""``gptwaves publish sweep``: a collected sweep's summary, cost and tables published into the docs
(gptwaves.publish_sweep), and the results page's ``gen:sweep:NAME`` block. The sweep is made by the
real ``gptwaves.sweep.collect`` on hand-made members (their per-sample curves synthetic: no training,
no recording). Hostile sweeps and output folders get one line and leave an existing publication intact."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from gptwaves import publish
from gptwaves import publish_sweep as ps
from gptwaves import results_page as rp
from gptwaves.stages.summary import SUMMARY_FORMAT, SUMMARY_VERSION

VALUES = (8, 16, 32)
NAMES = [f"n_embd={v}" for v in VALUES]
TAP = "blocks.1.hook_resid_post"


def _timings(k: int) -> dict:
    """Member k's stage seconds as its summary records them (member 1 was resumed once)."""
    last = {"train": 10.0 * (k + 1) + 0.5, "record": 2.25, "spelling": 1.0}
    hist = [{"train": 7.0, "record": 1.0, "total": 8.5}] if k == 1 else []
    return {"timings": last, "timings_history": hist}


def _member_summary(k: int, iterations) -> dict:
    cks = [{"iteration": it, "val_loss": 3.0 - 0.1 * it - 0.01 * k,
            "waves": {TAP: {"induced": {"participation_ratio": 2.0 + it},
                            "surrogate": {"mean_abs_corr": {"excess": 0.01 * it}}}}} for it in iterations]
    return {"format": SUMMARY_FORMAT, "format_version": SUMMARY_VERSION, "gptwaves_version": "0.1.0",
            "preset": "smoke", "machine": {"platform": f"Linux-{k}", "processor": "x86_64"}, **_timings(k),
            "checkpoints": cks}


def _synthetic_per_sample(run: Path, iterations, seed: int, progress: bool) -> dict:
    """Logistic steps in u with per-sample noise, narrower in larger members."""
    k = NAMES.index(run.name)
    rng = np.random.default_rng(k)
    u = np.log1p(np.asarray(iterations, float))
    coh = [1 / (1 + np.exp(-(x - 1.0) / (0.6 / (k + 1)))) + 0.05 * rng.normal(size=8) for x in u]
    return {"coherence_excess": coh, "error_rate": [1 - c for c in coh]}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    from gptwaves import sweep

    s = sweep.SweepSettings(preset="smoke", vary="n_embd", values=VALUES, train_overrides={"max_iters": 5},
                            n_boot=20)
    out = tmp_path_factory.mktemp("sweep") / "s"
    for k, (name, cfg) in enumerate(s.members()):
        d = sweep.member_dir(out, name)
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(_member_summary(k, cfg.checkpoints)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep, "_per_sample_curves", _synthetic_per_sample)
        mp.setenv("GPTWAVES_FIGURES", "png")
        sweep.collect(s, out, progress=False)
    assert (out / "sweep" / "curves.png").is_file()
    return out


@pytest.fixture
def sw(made, tmp_path) -> Path:
    """A fresh copy of the collected sweep, for a test to change."""
    return Path(shutil.copytree(made, tmp_path / "s", symlinks=True))


def _edit(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def _nan(path: Path) -> None:
    """The sweep's n_boot written as NaN (a JSON literal Python reads as a float)."""
    text = path.read_text()
    assert text.count('"n_boot": 20,') == 1
    path.write_text(text.replace('"n_boot": 20,', '"n_boot": NaN,'))


def _cli(capsys, *argv) -> tuple[int, str]:
    from gptwaves.cli import main

    code = main(["publish", *map(str, argv)])
    cap = capsys.readouterr()
    if code != 0:
        err = cap.err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("gptwaves: error:"), err
        assert "internal error" not in err and "Traceback" not in err, err
    return code, cap.err.strip()


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ what is published


def test_publish_sweep_writes_summary_cost_page_and_figure(sw, tmp_path, capsys):
    dest = tmp_path / "docs" / "results" / "sweep"
    code, _ = _cli(capsys, "sweep", sw, dest)
    assert code == 0
    assert sorted(p.name for p in dest.iterdir()) == ["cost.json", "curves.png", "summary.json", "sweep.md"]
    assert (dest / "summary.json").read_bytes() == (sw / "summary.json").read_bytes()
    assert (dest / "curves.png").read_bytes() == (sw / "sweep" / "curves.png").read_bytes()

    cost = json.loads((dest / "cost.json").read_text())
    assert cost["format"] == ps.COST_FORMAT and cost["machine"] == {"platform": "Linux-0", "processor": "x86_64"}
    assert [m["name"] for m in cost["members"]] == NAMES and [m["value"] for m in cost["members"]] == list(VALUES)
    assert cost["members"][0]["seconds"] == {"train": 10.5, "record": 2.25, "spelling": 1.0}
    # member 1 was resumed: its earlier invocation counts, its "total" row does not
    assert cost["members"][1]["seconds"] == {"train": 27.5, "record": 3.25, "spelling": 1.0}
    assert cost["members"][1]["invocations"] == 2 and cost["members"][1]["total"] == 31.75
    assert cost["total"] == pytest.approx(13.75 + 31.75 + 33.75)
    assert cost["members"][2]["final_val_loss"] == pytest.approx(3.0 - 0.5 - 0.02)

    md = (dest / "sweep.md").read_text()
    entry = json.loads((sw / "summary.json").read_text())["sweep"]
    assert "Do not edit by hand" in md and f"**{entry['verdict']['verdict']}**" in md
    assert publish.md_escape(entry["verdict"]["reason"]) in md
    for name in NAMES:
        assert f"| {publish.md_escape(name)} |" in md
    assert "| all members | 68.5 | 7.8 | 3.0 | 79.2 | | |" in md  # 7.75 and 79.25 shown to one decimal
    assert "![every member's curves" in md and "(curves.png)" in md
    assert ps.sweep_markdown(entry, cost, level=2).rstrip("\n") in md


def test_module_entry_and_a_sweep_without_a_figure(sw, tmp_path):
    (sw / "sweep" / "curves.png").unlink()
    dest = tmp_path / "pub"
    assert publish.main(["sweep", str(sw), str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["cost.json", "summary.json", "sweep.md"]
    assert "curves.png" not in (dest / "sweep.md").read_text()


def test_markup_in_values_is_escaped(sw, tmp_path):
    evil_name, evil_reason = "big|<script>alert(1)</script>\n# heading", "see | <b>x</b>\n<!-- results:end -->"

    def f(s):
        s["sweep"]["members"][0]["name"] = evil_name
        s["sweep"]["verdict"]["reason"] = evil_reason
        s["sweep"]["curves"]["val_loss"] = "loss `code` [link](http://x) *em*"

    _edit(sw / "summary.json", f)
    dest = tmp_path / "pub"
    ps.publish_sweep(sw, dest)
    md = (dest / "sweep.md").read_text()
    assert "<script>" not in md and "<b>" not in md and "<!--" not in md and "\n# heading" not in md
    assert publish.md_escape(evil_name) in md and publish.md_escape(evil_reason) in md
    assert "&lt;script&gt;" in md and r"big\|&lt;" in md and "](http" not in md.replace(r"\](http", "")
    for line in md.splitlines():  # every row of a table has as many cells as its header
        if line.startswith("|"):
            cells = line.replace("\\|", "").count("|")
            assert cells in {h.replace("\\|", "").count("|") for h in md.splitlines() if h.startswith("|---")}, line
    cost = json.loads((dest / "cost.json").read_text())
    assert cost["members"][0]["name"] == evil_name  # the data as it is; only the Markdown is escaped


# ------------------------------------------------------------------ the results page


def _site(sw: Path, tmp_path: Path) -> tuple[Path, dict]:
    site = tmp_path / "site"
    ps.publish_sweep(sw, site / "results" / "sw")
    return site, json.loads((sw / "summary.json").read_text())["sweep"]


def test_results_page_sweep_block_is_the_published_tables(sw, tmp_path):
    site, entry = _site(sw, tmp_path)
    cost = json.loads((site / "results" / "sw" / "cost.json").read_text())
    stale = "# Sweep\n\n<!-- gen:sweep:sw:begin -->\nold\n<!-- gen:sweep:sw:end -->\n"
    problems = rp.check_page(stale, site)
    assert len(problems) == 1 and "gen:sweep:sw is stale" in problems[0]
    fresh = rp.render_page(stale, site)
    assert rp.check_page(fresh, site) == []
    assert ps.sweep_markdown(entry, cost).rstrip("\n") in fresh and "### Cost" in fresh
    edited = fresh.replace("| all members | 68.5", "| all members | 68.6")
    assert edited != fresh and any("stale" in p for p in rp.check_page(edited, site))
    (site / "results" / "sw" / "cost.json").unlink()  # a sweep published without its cost: no cost table
    assert any("stale" in p for p in rp.check_page(fresh, site))
    assert "### Cost" not in rp.render_page(stale, site)


def test_results_page_quotes_a_sweep_and_its_cost(sw, tmp_path):
    site, entry = _site(sw, tmp_path)
    w = entry["scaling"]["coherence_excess"]["width"]["exponent"]
    ok = (f"The width exponent is {w:.3g}<!--=sw:sweep/scaling/coherence_excess/width/exponent--> and the sweep "
          "took 79.25<!--=sw-cost:total--> s, of which 31.75<!--=sw-cost:members/name=n_embd=16/total--> s for the "
          "middle member.\n")
    assert rp.check_page(ok, site) == []
    for bad in ("79.4<!--=sw-cost:total-->", "31.75<!--=sw-cost:members/name=n_embd=64/total-->",
                "79.25<!--=other-cost:total-->"):
        assert rp.check_page(f"The sweep took {bad} s.\n", site)


@pytest.mark.parametrize("damage", ["nan", "format", "stage"])
def test_results_page_refuses_a_damaged_published_sweep(sw, tmp_path, damage):
    site, _ = _site(sw, tmp_path)
    page = rp.render_page("<!-- gen:sweep:sw:begin -->\n<!-- gen:sweep:sw:end -->\n", site)
    pub = site / "results" / "sw"
    if damage == "nan":
        _nan(pub / "summary.json")
    elif damage == "format":
        _edit(pub / "cost.json", lambda c: c.update(format_version=99))
    else:
        _edit(pub / "cost.json", lambda c: c["members"][0]["seconds"].update({"x`<b>": 1.0}))
    problems = rp.check_page(page, site)
    want = {"nan": "sweep.n_boot = nan", "format": "is not a gptwaves sweep cost",
            "stage": "is not a plain name"}[damage]
    assert any("gen:sweep:sw cannot be rendered" in p and want in p for p in problems), problems
    assert all("\n" not in p for p in problems)


# ------------------------------------------------------------------ refusals


def _set(*path_and_value):
    *keys, value = path_and_value

    def f(s):
        o = s
        for k in keys[:-1]:
            o = o[k]
        o[keys[-1]] = value
    return f


def _link_out(rel: str):
    def f(sw: Path, tmp: Path):
        outside = tmp / "outside.json"
        shutil.copy(sw / rel, outside)
        (sw / rel).unlink()
        (sw / rel).symlink_to(outside)
    return f


def _member(k: int, fn):
    return lambda sw, tmp: _edit(sw / "members" / NAMES[k] / "summary.json", fn)


DAMAGE = {
    "summary-missing": (lambda sw, tmp: (sw / "summary.json").unlink(), "sweep summary not found"),
    "summary-not-json": (lambda sw, tmp: (sw / "summary.json").write_text("{"), "not valid JSON"),
    "wrong-format": (lambda sw, tmp: _edit(sw / "summary.json", _set("format", "gptwaves-summary")),
                     "is not a gptwaves sweep summary"),
    "old-version": (lambda sw, tmp: _edit(sw / "summary.json", _set("format_version", 0)),
                    "is not a gptwaves sweep summary"),
    "no-sweep-entry": (lambda sw, tmp: _edit(sw / "summary.json", lambda s: s.pop("sweep")), "no sweep entry"),
    "nan": (lambda sw, tmp: _nan(sw / "summary.json"), "sweep.n_boot = nan is not a finite number"),
    "infinity-deep": (lambda sw, tmp: _edit(sw / "summary.json", _set(
        "sweep", "scaling", "coherence_excess", "width", "exponent", float("inf"))), "is not a finite number"),
    "verdict-unknown": (lambda sw, tmp: _edit(sw / "summary.json", _set("sweep", "verdict", "verdict", "<b>yes</b>")),
                        "is not one of"),
    "members-empty": (lambda sw, tmp: _edit(sw / "summary.json", _set("sweep", "members", [])), "members has 0"),
    "member-without-name": (lambda sw, tmp: _edit(sw / "summary.json", lambda s: s["sweep"]["members"][1].pop("name")),
                            "members[1].name"),
    "member-ci-three": (lambda sw, tmp: _edit(sw / "summary.json", lambda s: s["sweep"]["members"][0]["curves"][
        "coherence_excess"]["change_point"].update(ci=[1, 2, 3])), "is not an interval"),
    "member-run-up": (lambda sw, tmp: _edit(sw / "summary.json", _set("sweep", "members", 0, "run", "../elsewhere")),
                      "is not a plain folder inside the sweep"),
    "member-run-absolute": (lambda sw, tmp: _edit(sw / "summary.json", _set("sweep", "members", 0, "run", "/etc")),
                            "is not a plain folder inside the sweep"),
    "vary-markup": (lambda sw, tmp: _edit(sw / "summary.json", _set("sweep", "settings", "vary", "n` <b>")),
                    "is not a plain name"),
    "summary-linked-out": (_link_out("summary.json"), "leads outside"),
    "member-summary-missing": (lambda sw, tmp: (sw / "members" / NAMES[2] / "summary.json").unlink(),
                               "member summary not found"),
    "member-summary-linked-out": (_link_out(f"members/{NAMES[1]}/summary.json"), "leads outside"),
    "member-folder-linked-out": (lambda sw, tmp: (shutil.move(sw / "members" / NAMES[0], tmp / "m0"),
                                                  (sw / "members" / NAMES[0]).symlink_to(tmp / "m0")),
                                 "leads outside"),
    "member-not-a-run-summary": (_member(0, _set("format", "gptwaves-sweep")), "is not a gptwaves summary"),
    "member-without-timings": (_member(1, _set("timings", None)), "records no stage timings"),
    "member-seconds-negative": (_member(1, _set("timings", "train", -1)), "the seconds of stage train"),
    "member-seconds-huge": (_member(2, _set("timings", "record", 1e12)), "the seconds of stage record"),
    "member-stage-markup": (_member(0, _set("timings", "x|<b>", 1.0)), "is not a plain name"),
    "member-history-not-objects": (_member(1, _set("timings_history", [3])), "timings_history[0]"),
    "member-val-loss-text": (_member(2, lambda s: s["checkpoints"][-1].update(val_loss="low")), "val_loss"),
    "member-machine-list": (_member(0, _set("machine", [1])), "machine"),
    "curves-not-png": (lambda sw, tmp: (sw / "sweep" / "curves.png").write_bytes(b"<svg>not a png</svg>"),
                       "is not a PNG file"),
    "curves-fifo": (lambda sw, tmp: ((sw / "sweep" / "curves.png").unlink(), os.mkfifo(sw / "sweep" / "curves.png")),
                    "not a regular file"),
    "curves-linked-out": (_link_out("sweep/curves.png"), "leads outside"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_bad_sweep_is_one_line_and_writes_nothing(sw, tmp_path, capsys, damage):
    dest = tmp_path / "docs" / "sw"
    assert _cli(capsys, "sweep", sw, dest)[0] == 0  # an earlier publication ...
    (dest / "sweep.md").write_text("earlier\n")
    before = _snapshot(dest)
    fn, words = DAMAGE[damage]
    fn(sw, tmp_path)
    code, err = _cli(capsys, "sweep", sw, dest)
    assert code != 0 and words in err, err
    assert _snapshot(dest) == before  # ... is left as it was
    fresh = tmp_path / "docs" / "new"
    assert _cli(capsys, "sweep", sw, fresh)[0] != 0 and not fresh.exists()


def test_bad_folders_are_refused_before_writing(sw, tmp_path, capsys):
    before = _snapshot(sw)
    for argv, words in [((sw, sw / "published"), "inside the sweep"), ((sw, sw), "inside the sweep"),
                        ((sw, sw / "members" / NAMES[0] / "pub"), "inside the sweep"),
                        ((sw, sw / "summary.json"), "is not a folder"),
                        ((tmp_path / "nowhere", tmp_path / "pub"), "sweep folder not found"),
                        ((sw / "summary.json", tmp_path / "pub"), "not a directory")]:
        code, err = _cli(capsys, "sweep", *argv)
        assert code != 0 and words in err, (argv, err)
    assert _snapshot(sw) == before and not (tmp_path / "pub").exists()


def test_the_cli_lists_the_command(capsys):
    from gptwaves.cli import main

    assert main(["publish", "--help"]) == 0
    assert "sweep" in capsys.readouterr().out
    assert "publish sweep SWEEP_DIR" in publish.__doc__
