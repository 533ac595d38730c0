"""Published results (docs/results/*) stay readable by the current code, and the README's results
block is exactly what `gptwaves publish` generates from them (never typed by hand). Hostile runs,
summaries, READMEs and output folders get one line and leave an existing publication intact."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gptwaves import publish
from gptwaves.stages.summary import SUMMARY_FORMAT, SUMMARY_VERSION

ROOT = Path(__file__).resolve().parents[1]
#: The published run summaries (a published sweep's summary.json is of another format: tests/test_publish_sweep.py).
PUBLISHED = sorted(p for p in (ROOT / "docs" / "results").glob("*/summary.json")
                   if json.loads(p.read_text()).get("format") == SUMMARY_FORMAT)


@pytest.fixture(autouse=True)
def _cheap_peaks(monkeypatch):
    """The matmul peaks publish measures by default: a constant here (a 2048-cubed torch.mm per
    publish would make these tests slow); tests that measure for real pass tiny sizes."""
    import gptwaves.bench.budget as budget

    monkeypatch.setattr(budget, "matmul_peak", lambda dtype, n=2048, repeats=7: 100.0)


def _reproduced(run: Path, timings: dict | None = None) -> Path:
    """Give a hand-made run what publish's time budget reads: a reproduce record and one
    checkpoint's metadata (its model shape; the weights are not read)."""
    from dataclasses import asdict

    from gptwaves.model import GPTConfig

    (run / "reproduce.json").write_text(json.dumps({"train": {"max_iters": 100, "batch_size": 4, "precision": "fp32"},
                                                    "timings": timings or {"train": 1.5, "spelling": 2.0}}))
    (run / "checkpoints").mkdir(exist_ok=True)
    cfg = asdict(GPTConfig(block_size=16, vocab_size=5, n_layer=2, n_head=2, n_embd=8))
    (run / "checkpoints" / "iter_0000100.json").write_text(json.dumps(
        {"iteration": 100, "config": cfg, "vocab": list("\n abc"), "weights_sha256": "0" * 64}))
    return run


@pytest.mark.parametrize("path", PUBLISHED, ids=[p.parent.name for p in PUBLISHED])
def test_published_summary_is_readable_by_current_code(path):
    s = json.loads(path.read_text())
    assert s["format"] == SUMMARY_FORMAT and s["format_version"] == SUMMARY_VERSION
    assert [c["id"] for c in s["findings"]["claims"]] == [1, 2, 3, 4, 5]
    for c in s["findings"]["claims"]:
        for part in ("as_stated", "beyond_null"):
            assert c[part]["verdict"] in ("supported", "not supported", "inconclusive") and c[part]["text"]
    md = publish.claims_markdown(s)
    assert md.count("\n| ") == 5  # one row per claim
    claims_md = (path.parent / "claims.md").read_text()
    assert publish.claims_markdown(s) in claims_md  # claims.md was generated from this summary
    budget = path.parent / "budget.json"
    if budget.is_file():  # publications since budget.json: its time table is the one in claims.md
        from gptwaves.bench.budget import BUDGET_FORMAT, BUDGET_VERSION
        from gptwaves.results_page import budget_markdown

        b = json.loads(budget.read_text())
        assert b["format"] == BUDGET_FORMAT and b["format_version"] == BUDGET_VERSION
        assert budget_markdown(b) in claims_md


def test_readme_block_is_generated_from_the_published_summary():
    readme = (ROOT / "README.md").read_text()
    assert publish.BEGIN in readme and publish.END in readme
    block = readme[readme.index(publish.BEGIN): readme.index(publish.END) + len(publish.END)]
    sources = [p for p in PUBLISHED if f"{p.parent.relative_to(ROOT).as_posix()}/summary.json" in block]
    assert len(sources) == 1, "the README's results block names one published summary"
    src = sources[0]
    s = json.loads(src.read_text())
    fig = "fano_reference_null.png" if (src.parent / "fano_reference_null.png").is_file() else None
    assert block == publish.readme_block(s, src.parent.relative_to(ROOT).as_posix(), fig)


def test_publish_run_and_seeds_table(tmp_path):
    """publish_run on a minimal run directory: files, claims.md, README block replaced; seeds table."""
    from gptwaves.analysis import claims as cl

    run = tmp_path / "run"
    run.mkdir()
    part = {"verdict": cl.SUPPORTED, "text": "numbers."}
    claims = [cl.claim(i, f"claim {i}", part, {"verdict": cl.NOT_SUPPORTED, "text": "null."}) for i in range(1, 6)]
    summary = {"format": SUMMARY_FORMAT, "format_version": SUMMARY_VERSION, "preset": "quick",
               "settings": {"train": {"seed": 7}},
               "checkpoints": [{"iteration": 0, "val_loss": 4.2, "spelling": None, "waves": None},
                               {"iteration": 100, "val_loss": 2.0, "spelling": None, "waves": None}],
               "findings": {"crossing": {"iteration": None, "reason": "not significant"}, "claims": claims}}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "spelling" / "figures").mkdir(parents=True)
    (run / "spelling" / "figures" / "decomposition.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    _reproduced(run)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{publish.BEGIN}\nold\n{publish.END}\n\nrest\n")
    written = publish.publish_run(run, tmp_path / "docs" / "results" / "q", readme, peaks="none")
    dest = tmp_path / "docs" / "results" / "q"
    assert (dest / "summary.json").is_file() and (dest / "fano_reference_null.png").is_file()
    md = (dest / "claims.md").read_text()
    assert "| 1 | claim 1 | **supported** | **not supported** |" in md and "not reported (not significant)" in md
    text = readme.read_text()
    assert "old" not in text and "docs/results/q/fano_reference_null.png" in text and text.endswith("rest\n")
    assert readme in written
    table = publish.seeds_table([run, run])
    assert "seed 7 | seed 7" in table and "same in every seed" in table and "fragile" not in table
    claims[0]["as_stated"]["verdict"] = cl.INCONCLUSIVE
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.json").write_text(json.dumps(summary))
    assert "**fragile**" in publish.seeds_table([run, other])
    # a seed trained and scored for spelling only: its coherence claims are "not run", not verdicts
    from gptwaves.stages.summary import NOT_RUN

    spelling_only = tmp_path / "spelling_only"
    spelling_only.mkdir()
    s2 = json.loads(json.dumps(summary))
    for c in s2["findings"]["claims"]:
        if c["id"] in (1, 4):
            c["as_stated"] = c["beyond_null"] = {"verdict": cl.INCONCLUSIVE, "text": NOT_RUN[0]}
    (spelling_only / "summary.json").write_text(json.dumps(s2))
    table = publish.seeds_table([other, spelling_only]).splitlines()
    row1 = next(r for r in table if r.startswith("| 1. claim 1 (as stated)"))
    row2 = next(r for r in table if r.startswith("| 2. claim 2 (as stated)"))
    assert row1 == "| 1. claim 1 (as stated) | inconclusive | not run | same in every seed that ran it (1 of 2) |"
    assert row2.endswith("| same in every seed |") and "fragile" not in "\n".join(table)
    # written: each column cites a published summary.json, copied beside the table when not yet published
    s2["settings"]["train"]["seed"] = 8
    (spelling_only / "summary.json").write_text(json.dumps(s2))
    root = tmp_path / "docs" / "results"
    written = publish.write_seeds_table(root / "q-seeds.md", [root / "q", spelling_only])  # q: published above
    copied = root / "q-seed8" / "summary.json"
    assert written == [copied, copied.parent / "claims.md", root / "q-seeds.md"]
    assert copied.read_bytes() == (spelling_only / "summary.json").read_bytes()
    seed_md = (copied.parent / "claims.md").read_text()  # the seed's own verdicts, generated from its summary
    assert "training seed 8" in seed_md and publish.claims_markdown(s2) in seed_md
    assert "seed 7: [q/summary.json](q/summary.json); seed 8: [q-seed8/summary.json]" \
        "(q-seed8/summary.json)." in (root / "q-seeds.md").read_text()
    # a results page renders the same table from the published summaries, and its check sees a stale one
    from gptwaves import results_page as rp

    page = "<!-- gen:seeds:q,q-seed8:begin -->\nold\n<!-- gen:seeds:q,q-seed8:end -->\n"
    fresh = rp.render_page(page, root.parent)
    assert "| 1. claim 1 (as stated) | supported | not run |" in fresh
    assert "seed 8: [results/q-seed8/summary.json](results/q-seed8/summary.json)." in fresh
    assert rp.check_page(fresh, root.parent) == []
    assert rp.check_page(page, root.parent) != []


def test_publish_refuses_an_old_summary(tmp_path):
    from gptwaves.errors import GptwavesError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"format": SUMMARY_FORMAT, "findings": {}}))
    with pytest.raises(GptwavesError, match="format version"):
        publish.publish_run(tmp_path / "run", tmp_path / "out")


def test_results_page_seed_block_is_the_generated_table():
    """docs/results.md shows each seed table exactly as `python -m gptwaves.publish seeds` wrote it
    (``paper-seeds.md``, ``quick-seeds.md``), rendered from the same published summaries."""
    page = (ROOT / "docs" / "results.md").read_text()
    section = page[page.index("<!-- seeds:begin -->"): page.index("<!-- seeds:end -->")]
    for run in ("paper", "quick"):
        table = (ROOT / "docs" / "results" / f"{run}-seeds.md").read_text()
        rows = "\n".join(line for line in table.splitlines() if line.startswith("|"))
        assert rows in section


# ------------------------------------------------------------------ hostile inputs


def _summary(n_claims: int = 5) -> dict:
    from gptwaves.analysis import claims as cl

    part = {"verdict": cl.SUPPORTED, "text": "numbers."}
    claims = [cl.claim(i, f"claim {i}", part, {"verdict": cl.NOT_SUPPORTED, "text": "null."})
              for i in range(1, n_claims + 1)]
    return {"format": SUMMARY_FORMAT, "format_version": SUMMARY_VERSION, "preset": "quick",
            "gptwaves_version": "0.1.0", "settings": {"train": {"seed": 7}},
            "checkpoints": [{"iteration": 0, "val_loss": 4.2, "spelling": None, "waves": None},
                            {"iteration": 100, "val_loss": 2.0, "spelling": None, "waves": None}],
            "findings": {"crossing": {"iteration": 50.0, "ci": [10.0, 90.0], "reason": None}, "claims": claims}}


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


@pytest.fixture
def site(tmp_path):
    """A run with a summary, a figure and reproduce timings; a repository with a README."""
    run = tmp_path / "run"
    (run / "spelling" / "figures").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(_summary()))
    (run / "spelling" / "figures" / "decomposition.png").write_bytes(PNG)
    _reproduced(run)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text(f"# x\n\n{publish.BEGIN}\nold\n{publish.END}\n\nrest\n")
    return run, repo


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


def test_publish_command_and_module_entry(site, capsys):
    run, repo = site
    code, _ = _cli(capsys, "run", run, repo / "docs" / "results" / "q", "--readme", repo / "README.md")
    assert code == 0
    out = repo / "docs" / "results" / "q"
    assert (out / "summary.json").read_bytes() == (run / "summary.json").read_bytes()
    assert (out / "fano_reference_null.png").read_bytes() == PNG
    assert "| train | 1.5 | 1.5 |" in (out / "claims.md").read_text()
    assert "docs/results/q/fano_reference_null.png" in (repo / "README.md").read_text()
    assert publish.main(["seeds", str(repo / "seeds.md"), str(run), str(run)]) == 0
    assert "seed 7 | seed 7" in (repo / "seeds.md").read_text()


def _mutate(key_path, value):
    def f(s):
        o = s
        for k in key_path[:-1]:
            o = o[k]
        o[key_path[-1]] = value
    return f


SUMMARY_DAMAGE = {
    "findings-list": _mutate(["findings"], [1]),
    "claims-strings": _mutate(["findings", "claims"], ["x", 3]),
    "claim-without-title": lambda s: s["findings"]["claims"][0].pop("claim"),
    "claim-title-blank": _mutate(["findings", "claims", 0, "claim"], "  "),
    "verdict-unknown": _mutate(["findings", "claims", 0, "as_stated", "verdict"], "<b>yes</b>"),
    "crossing-ci-three": _mutate(["findings", "crossing", "ci"], [1.0, 2.0, 3.0]),
    "crossing-iteration-huge": _mutate(["findings", "crossing", "iteration"], 1e200),
    "iteration-10e300": _mutate(["checkpoints", 1, "iteration"], 10**300),
    "iteration-float": _mutate(["checkpoints", 1, "iteration"], 1e308),
    "val_loss-huge": _mutate(["checkpoints", 1, "val_loss"], 1e308),
    "preset-markup": _mutate(["preset"], "q` <script>alert(1)</script>"),
    "seed-negative": _mutate(["settings", "train", "seed"], -1),
    "tap-markup": _mutate(["checkpoints", 1, "waves"], {"a`|<b>": {}}),
}


@pytest.mark.parametrize("damage", sorted(SUMMARY_DAMAGE))
def test_malformed_summary_is_one_line_and_writes_nothing(site, capsys, damage):
    run, repo = site
    s = _summary()
    SUMMARY_DAMAGE[damage](s)
    (run / "summary.json").write_text(json.dumps(s))
    before = _snapshot(repo)
    code, err = _cli(capsys, "run", run, repo / "docs" / "q", "--readme", repo / "README.md")
    assert code != 0 and "summary.json" in err
    assert _snapshot(repo) == before


@pytest.mark.parametrize("text", ['{"format": "gptwaves-summary", "x": 1' + "0" * 5000 + "}",
                                  "[" * 100000 + "]" * 100000, '{"a": NaN}', "[" * 70 + "]" * 70, ""])
def test_absurd_json_is_one_line(site, capsys, text):
    run, repo = site
    (run / "summary.json").write_text(text)
    code, err = _cli(capsys, "run", run, repo / "docs" / "q")
    assert code != 0 and not (repo / "docs").exists()


def test_numbers_nan_and_huge_json_literals(site, capsys):
    run, repo = site
    for lit in ("NaN", "1e999", "-Infinity"):
        (run / "summary.json").write_text(json.dumps(_summary()).replace('"val_loss": 2.0', f'"val_loss": {lit}'))
        code, err = _cli(capsys, "run", run, repo / "docs" / "q")
        assert code != 0 and "val_loss" in err, err
    (run / "summary.json").write_text(json.dumps(_summary()).replace('"iteration": 100', '"iteration": '
                                                                     + "1" * 5000))
    code, err = _cli(capsys, "run", run, repo / "docs" / "q")
    assert code != 0


def test_markup_in_values_is_escaped_and_markers_cannot_be_forged(site, capsys):
    run, repo = site
    s = _summary()
    evil = f"x | y <script>alert(1)</script> ![i](https://evil.example/p.png) [l](javascript:x) {publish.END}\nz"
    s["findings"]["claims"][0]["claim"] = evil
    s["findings"]["claims"][1]["as_stated"]["text"] = evil
    s["findings"]["crossing"] = {"iteration": None, "reason": evil}
    (run / "summary.json").write_text(json.dumps(s))
    for _ in range(2):  # a second publish still finds exactly one block
        code, err = _cli(capsys, "run", run, repo / "docs" / "q", "--readme", repo / "README.md")
        assert code == 0, err
    readme = (repo / "README.md").read_text()
    assert readme.count(publish.BEGIN) == 1 and readme.count(publish.END) == 1 and readme.endswith("rest\n")
    for text in (readme, (repo / "docs" / "q" / "claims.md").read_text()):
        for bad in ("<script", "![i](", "[l](", "x | y", "\nz"):
            assert bad not in text, bad
        rows = [r for r in text.splitlines() if r.startswith("| 1 |")]
        assert rows and all(len(re.findall(r"(?<!\\)\|", r)) == 5 for r in rows), rows  # 4 cells, no more
    assert publish.md_escape("a|b<c>[d](e)\n") == "a\\|b&lt;c&gt;\\[d\\](e) "


def test_bad_outputs_and_readmes_are_refused_before_writing(site, capsys, tmp_path):
    run, repo = site
    readme = repo / "README.md"
    good = readme.read_text()
    (repo / "afile").write_text("x")
    fifo = repo / "fifo.md"
    os.mkfifo(fifo)
    cases = [
        ("run", run, repo / "afile"),                                   # OUT is an existing file
        ("run", run, run / "published"),                               # OUT inside the run
        ("run", run, repo / "d", "--readme", repo / "missing.md"),      # README missing
        ("run", run, repo / "d", "--readme", "/dev/zero"),               # a device
        ("run", run, repo / "d", "--readme", fifo),                      # a FIFO: no hang
        ("run", run, tmp_path / "elsewhere", "--readme", readme),       # OUT not under the README's folder
        ("run", tmp_path / "nope", repo / "d"),                         # no run
        ("seeds", repo, run),                                           # OUT is a folder
    ]
    (repo / "latin1.md").write_bytes(f"{publish.BEGIN}\n\xe9\n{publish.END}".encode("latin-1"))
    cases.append(("run", run, repo / "d", "--readme", repo / "latin1.md"))     # not UTF-8
    (repo / "two.md").write_text(f"{publish.BEGIN}{publish.END}{publish.END}")
    cases.append(("run", run, repo / "d", "--readme", repo / "two.md"))        # a forged second marker
    (repo / "none.md").write_text("no markers\n")
    cases.append(("run", run, repo / "d", "--readme", repo / "none.md"))
    before = _snapshot(repo)
    for argv in cases:
        code, err = _cli(capsys, *argv)
        assert code != 0, argv
    assert _snapshot(repo) == before and readme.read_text() == good
    assert not (repo / "d").exists() and not (tmp_path / "elsewhere").exists()


def test_symlinks_out_of_the_run_and_fifos_are_refused(site, capsys, tmp_path):
    run, repo = site
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG + b"secret")
    fig = run / "spelling" / "figures" / "fano.png"
    fig.symlink_to(secret)
    code, err = _cli(capsys, "run", run, repo / "d")
    assert code != 0 and "outside the run" in err and not (repo / "d").exists()
    fig.unlink()
    os.mkfifo(fig)
    code, err = _cli(capsys, "run", run, repo / "d")
    assert code != 0 and "FIFO" in err
    fig.unlink()
    inside = run / "spelling" / "figures" / "decomposition.png"
    fig.symlink_to(inside)  # a link inside the run is fine
    assert _cli(capsys, "run", run, repo / "d")[0] == 0
    (run / "summary.json").rename(run / "real.json")
    (run / "summary.json").symlink_to(tmp_path / "other.json")
    (tmp_path / "other.json").write_text(json.dumps(_summary()))
    code, err = _cli(capsys, "run", run, repo / "d2")
    assert code != 0 and "outside the run" in err


def test_reproduce_timings_are_checked(site, capsys):
    run, repo = site
    for bad in ({"timings": {"train": 1e300}}, {"timings": {"train": float("nan")}}, {"timings": [1]},
                {"timings": {"<b>": 1.0}}, {"timings": {}, "timings_history": [3]}):
        (run / "reproduce.json").write_text(json.dumps(bad))
        code, err = _cli(capsys, "run", run, repo / "d")
        assert code != 0 and "reproduce" in err, err


def test_an_existing_publication_survives_a_file_size_limit(site, tmp_path):
    """Under ``ulimit -f`` the copy fails with one line and the published summary.json is intact."""
    run, repo = site
    dest = repo / "docs" / "q"
    from gptwaves.cli import main

    assert main(["publish", "run", str(run), str(dest)]) == 0
    published = _snapshot(dest)
    s = _summary()
    for c in s["findings"]["claims"]:
        c["as_stated"]["text"] = "long " * 1500  # a summary.json over the 4 KiB limit
    (run / "summary.json").write_text(json.dumps(s))
    code = (f"import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); from gptwaves.cli import main; "
            f"sys.exit(main(['publish', 'run', {str(run)!r}, {str(dest)!r}, '--no-peaks']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert p.returncode != 0
    assert p.stderr.strip().startswith("gptwaves: error: cannot write") and len(p.stderr.strip().splitlines()) == 1
    assert _snapshot(dest) == published and not list(dest.glob(".*.tmp"))


# ------------------------------------------------------------------ the time budget (budget.json)


def _smoke_run(trained_run, tmp_path) -> Path:
    """A copy of the session's tiny trained run, made publishable: a summary, a reproduce record
    of two invocations (a resumed run), a recording and a spelling result."""
    import shutil

    src, cfg, _ = trained_run
    run = tmp_path / "smoke"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns(".lock"))
    (run / "summary.json").write_text(json.dumps(_summary()))
    (run / "reproduce.json").write_text(json.dumps({
        "train": {"max_iters": cfg.max_iters, "batch_size": cfg.batch_size, "precision": "fp32"},
        "timings": {"train": 0.75, "record": 0.5, "waves": 0.25, "spelling": 1.25, "total": 2.875},
        "timings_history": [{"train": 2.5, "total": 2.625}]}))
    (run / "recordings").mkdir(exist_ok=True)
    (run / "recordings" / "iter_0000060.json").write_text(json.dumps({"samples": 2, "steps": 40, "prompt_len": 1}))
    (run / "spelling").mkdir(exist_ok=True)
    (run / "spelling" / "iter_0000060.json").write_text(json.dumps({"settings": {"samples": 4, "length": 8}}))
    return run


def test_budget_json_holds_the_rows_bench_budget_prints(trained_run, tmp_path, monkeypatch, capsys):
    """On a smoke run: budget.json has the publishing machine, every invocation's stage times, the
    peaks measured at publication (tiny sizes here), the FLOPs per stage; the rows `gptwaves bench
    budget` prints are exactly those of the published file, and claims.md's time table is rendered
    from it."""
    import gptwaves.bench.budget as budget
    from gptwaves import results_page
    from gptwaves.bench.common import matmul_peak, train_flops_per_token
    from gptwaves.model import GPT, GPTConfig

    monkeypatch.setattr(budget, "matmul_peak", matmul_peak)  # measured for real, 32-cubed
    run = _smoke_run(trained_run, tmp_path)
    dest = tmp_path / "docs" / "results" / "smoke"
    written = publish.publish_run(run, dest, peak_n=32, peak_repeats=2)
    assert dest / "budget.json" in written
    b = json.loads((dest / "budget.json").read_text())
    assert b["format"] == budget.BUDGET_FORMAT and b["format_version"] == budget.BUDGET_VERSION
    assert {"cpu", "cores", "torch", "threads", "date", "summary"} <= set(b["machine"])
    assert b["invocations"] == [{"train": 2.5, "total": 2.625},
                                {"train": 0.75, "record": 0.5, "waves": 0.25, "spelling": 1.25, "total": 2.875}]
    pk = b["peaks"]
    assert pk["status"] == "measured" and pk["n"] == 32 and pk["repeats"] == 2
    assert pk["fp32_gflops"] > 0 and pk["bf16_gflops"] > 0
    st = b["stages"]
    assert list(st) == ["train", "record", "spelling", "waves"]
    assert st["train"]["seconds"] == 3.25 and st["spelling"]["seconds"] == 1.25 and b["total"]["seconds"] == 5.25
    cfg = trained_run[1]
    model = GPT(GPTConfig(**{k: getattr(cfg, k) for k in ("block_size", "n_layer", "n_head", "n_embd", "dropout",
                                                           "bias", "tie_weights", "gelu")},
                          vocab_size=json.loads(sorted((run / "checkpoints").glob("iter_*.json"))[-1]
                                                .read_text())["config"]["vocab_size"]))
    tokens = cfg.max_iters * cfg.batch_size * cfg.block_size
    assert st["train"]["tokens"] == tokens
    assert st["train"]["flops"] == pytest.approx(train_flops_per_token(model) * tokens, rel=1e-12)
    assert st["train"]["seconds_at_peak"] == pytest.approx(st["train"]["flops"] / (pk["fp32_gflops"] * 1e9))
    assert st["train"]["wall_gap"] == pytest.approx(3.25 / st["train"]["seconds_at_peak"])
    assert st["record"]["gap"] == pytest.approx(0.5 / st["record"]["seconds_at_peak"])
    assert st["waves"]["flops"] is None and st["waves"]["seconds"] == 0.25
    assert b["run"]["preset"] == "quick"
    # the bench, at the same peaks, prints the published rows
    monkeypatch.setattr(budget, "matmul_peak", lambda dtype, n=2048, repeats=7:
                        pk["fp32_gflops"] if str(dtype) == "torch.float32" else pk["bf16_gflops"])
    keys = ("figure", "value", "baseline", "ratio", "notes")
    printed = [{k: r[k] for k in keys} for r in budget.run(run_dir=run)]
    assert printed == [{k: r[k] for k in keys} for r in budget.budget_rows(b)]
    md = (dest / "claims.md").read_text()
    assert results_page.budget_markdown(b) in md
    assert "| train | 2.5 | 0.8 | 3.2 |" in md  # invocation 1, 2, all (0.75 shown to one decimal)
    assert "measured at publication" in md


def test_publish_without_peaks_or_with_given_peaks(site, capsys):
    run, repo = site
    out = repo / "docs" / "results" / "q"
    assert _cli(capsys, "run", run, out, "--no-peaks")[0] == 0
    b = json.loads((out / "budget.json").read_text())
    assert b["peaks"]["status"] == "absent" and b["peaks"]["fp32_gflops"] is None
    assert all(st["seconds_at_peak"] is None and st["gap"] is None for st in b["stages"].values())
    assert b["stages"]["train"]["flops"] > 0  # the FLOP budget does not need the peaks
    md = (out / "claims.md").read_text()
    assert "not measured (published with `--no-peaks`)" in md and "None" not in md and "nan" not in md
    assert _cli(capsys, "run", run, out, "--peaks", "150", "300")[0] == 0
    b = json.loads((out / "budget.json").read_text())
    assert b["peaks"] == {"status": "given", "n": None, "repeats": None, "fp32_gflops": 150.0, "bf16_gflops": 300.0}
    assert b["stages"]["train"]["seconds_at_peak"] == pytest.approx(b["stages"]["train"]["flops"] / 150e9)
    assert "fp32 150 GFLOP/s, bf16 300 GFLOP/s (given" in (out / "claims.md").read_text()
    before = _snapshot(repo)
    for argv in (("--no-peaks", "--peaks", "1", "2"), ("--peaks", "0", "2"), ("--peaks", "nan", "2"),
                 ("--peaks", "1", "2", "--peak-n", "64"), ("--peak-n", "0")):
        code, err = _cli(capsys, "run", run, out, *argv)
        assert code != 0, argv
    assert _snapshot(repo) == before


REPRODUCE_DAMAGE = {
    "missing": lambda run: (run / "reproduce.json").unlink(),
    "truncated": lambda run: (run / "reproduce.json").write_text('{"train": {"max_iters": 2'),
    "a-list": lambda run: (run / "reproduce.json").write_text("[1, 2]"),
    "max_iters-huge": lambda run: (run / "reproduce.json").write_text(
        json.dumps({"train": {"max_iters": 10**40, "batch_size": 4}, "timings": {}})),
    "train-a-string": lambda run: (run / "reproduce.json").write_text(json.dumps({"train": "x", "timings": {}})),
    "no-checkpoints": lambda run: (run / "checkpoints" / "iter_0000100.json").unlink(),
    "recording-corrupt": lambda run: ((run / "recordings").mkdir(),
                                      (run / "recordings" / "iter_0000100.json").write_text("{")),
}


@pytest.mark.parametrize("damage", sorted(REPRODUCE_DAMAGE))
def test_a_run_without_a_sound_reproduce_record_publishes_nothing(site, capsys, damage):
    """No reproduce record, or a corrupt one (or what the budget reads besides): one line, and an
    existing publication and the README are left exactly as they were."""
    run, repo = site
    out = repo / "docs" / "results" / "q"
    assert _cli(capsys, "run", run, out, "--readme", repo / "README.md")[0] == 0
    before = _snapshot(repo)
    REPRODUCE_DAMAGE[damage](run)
    code, err = _cli(capsys, "run", run, out, "--readme", repo / "README.md")
    assert code != 0 and err.startswith("gptwaves: error:")
    assert _snapshot(repo) == before and not list(out.glob(".*.tmp"))


def test_a_hugging_face_suite_publishes_its_stage_times(site, capsys):
    """A suite (`reproduce --hf-model`) has no gptwaves checkpoints: its budget.json holds the stage
    times and the machine, and no FLOPs or gaps (its models are not counted)."""
    import shutil

    run, repo = site
    shutil.rmtree(run / "checkpoints")
    (run / "reproduce.json").write_text(json.dumps({
        "preset": None, "train": None, "hf": {"model": "EleutherAI/pythia-70m", "revisions": ["step0", "step1000"]},
        "timings": {"record": 12.5, "waves": 3.0, "spelling": 4.0}}))
    out = repo / "docs" / "results" / "hf"
    code, err = _cli(capsys, "run", run, out)
    assert code == 0, err
    b = json.loads((out / "budget.json").read_text())
    assert b["suite"] is True and b["stages"]["record"]["seconds"] == 12.5
    assert all(st["flops"] is None and st["gap"] is None for st in b["stages"].values())
    assert "| record | 12.5 |" in (out / "claims.md").read_text()
    from gptwaves.bench import budget as bb  # `gptwaves bench budget --run` prints the same stage times

    rows = bb.budget_rows(b)
    assert [r["value"] for r in rows] == [12.5, 3.0, 4.0, 19.5]
    code = __import__("gptwaves.cli", fromlist=["main"]).main(["bench", "budget", "--run", str(run), "--quick"])
    assert code == 0 and "budget record" in capsys.readouterr().out


def test_results_page_findings_block_is_the_claims_text_escaped(tmp_path):
    """``gen:findings:NAME`` renders each claim's sentences (and calibration) as the published claims.md
    does, escaped; the block is checked like every generated block."""
    from gptwaves import results_page as rp

    s = _summary(2)
    s["findings"]["claims"][0]["as_stated"]["text"] = "F 0.25 <b>x</b> | y"
    s["calibration"] = {"claims": {"1": {"as_stated": {"text": "calibrated 92%."}}}}
    (tmp_path / "results" / "r").mkdir(parents=True)
    (tmp_path / "results" / "r" / "summary.json").write_text(json.dumps(s))
    page = rp.render_page("<!-- gen:findings:r:begin -->\n<!-- gen:findings:r:end -->\n", tmp_path)
    body = page.split("begin -->\n")[1].split("<!-- gen:")[0]
    assert "**1. claim 1.** *As stated (supported):* F 0.25 &lt;b&gt;x&lt;/b&gt; \\| y *Calibration:* calibrated 92%." \
        in body
    assert "*Beyond the null (not supported):* null." in body and "iteration 50 (95% bootstrap CI 10 to 90)" in body
    assert body.strip() == publish.claims_text(s).strip()
    assert publish.claims_text(s) in publish.claims_markdown(s)
    assert rp.check_page(page, tmp_path) == []
    assert rp.check_page(page.replace("calibrated 92%", "calibrated 93%"), tmp_path)  # stale block
