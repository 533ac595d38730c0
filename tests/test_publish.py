"""Published results (docs/results/*) stay readable by the current code, and the README's results
block is exactly what `python -m gptwaves.publish` generates from them (never typed by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptwaves import publish
from gptwaves.stages.summary import SUMMARY_FORMAT, SUMMARY_VERSION

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = sorted((ROOT / "docs" / "results").glob("*/summary.json"))


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
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{publish.BEGIN}\nold\n{publish.END}\n\nrest\n")
    written = publish.publish_run(run, tmp_path / "docs" / "results" / "q", readme)
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


def test_publish_refuses_an_old_summary(tmp_path):
    from gptwaves.errors import GptwavesError

    (tmp_path / "summary.json").write_text(json.dumps({"format": SUMMARY_FORMAT, "findings": {}}))
    with pytest.raises(GptwavesError, match="format version"):
        publish.publish_run(tmp_path, tmp_path / "out")


def test_results_page_seed_block_is_the_generated_table():
    """docs/results.md quotes the seed table exactly as `python -m gptwaves.publish seeds` wrote it."""
    table = ROOT / "docs" / "results" / "quick-seeds.md"
    page = (ROOT / "docs" / "results.md").read_text()
    if not table.is_file():
        pytest.skip("no seed table published")
    a, b = page.index("<!-- seeds:begin -->"), page.index("<!-- seeds:end -->")
    assert table.read_text().strip() in page[a:b]
