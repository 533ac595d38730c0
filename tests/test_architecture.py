"""How the code is put together: checkpoint names defined once, no import cycle between the stages'
helpers, progress in logs as plain lines, one error policy for figures, a caption for every figure,
modules and functions a reader can hold, a pure analysis layer."""

from __future__ import annotations

import ast
import io
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import gptwaves
from gptwaves.names import (CHECKPOINT_FILE, ckpt_stem, figure_stem, is_main_name, iteration_in, iteration_of_name,
                            iteration_of_stem)
from gptwaves.runtime import LineProgress, progress_bar
from gptwaves.stages.common import guarded

SRC = Path(gptwaves.__file__).parent


def test_checkpoint_names():
    assert ckpt_stem(500) == "iter_0000500"
    assert is_main_name("iter_0000500") and iteration_of_name("iter_0000500") == 500
    for variant in ("iter_0000500.seed1", "iter_0000500.prompt-verse", "iter_500", "x_iter_0000500"):
        assert not is_main_name(variant) and iteration_of_name(variant) is None
    assert iteration_of_stem("iter_0000500.seed1") == 500 and iteration_of_stem("iter_00005000") is None
    assert iteration_in("waves/figures/iter_0000500_acf.png") == 500 and iteration_in("order_parameters") is None
    assert figure_stem("iter_0000500_acf") == (500, "acf") and figure_stem("fano") == (None, "fano")
    assert CHECKPOINT_FILE.match("iter_0000500.json").group(1) == "0000500"
    assert not CHECKPOINT_FILE.match("iter_0000500.seed1.json")


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, inside a function) of every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text())
    pkg = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    out = []

    def visit(node, in_fn):
        for child in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                base = pkg.split(".")
                mod = ".".join(base[: len(base) - child.level + 1] + ([child.module] if child.module else [])) \
                    if child.level else child.module
                out.append((mod, child.lineno, in_fn))
            elif isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_fn) for a in child.names)
            visit(child, fn)

    visit(tree, False)
    return out


def test_stage_helpers_have_no_import_cycle():
    """checks.py (validators) and common.py (shared stage helpers) do not import each other, at
    module level or inside a function; both take checkpoint names from gptwaves.names."""
    checks = [m for m, _, _ in _imports(SRC / "stages" / "checks.py")]
    common = [m for m, _, _ in _imports(SRC / "stages" / "common.py")]
    assert "gptwaves.stages.common" not in checks and "gptwaves.stages.checks" not in common
    assert "gptwaves.names" in checks and "gptwaves.names" in common


def test_one_checkpoint_name_pattern():
    """The pattern of a checkpoint name is written in gptwaves/names.py only."""
    offenders = []
    for p in SRC.rglob("*.py"):
        if p.name == "names.py":
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if re.search(r"""r["'][^"']*iter[_\[][^"']*\\d""", line):
                offenders.append(f"{p.relative_to(SRC)}:{i}")
    assert offenders == []


OWNED = ["stages/common.py", "stages/checks.py", "stages/recordings.py", "record.py", "recording.py", "sample.py", "runtime.py",
         "figures/common.py", "model.py", "names.py"]


@pytest.mark.parametrize("rel", OWNED)
def test_imports_at_module_level(rel):
    """These modules import at module level (versions.package_versions keeps its heavy imports local
    on purpose: the reuse rule must not pay for scipy and h5py)."""
    assert [(m, line) for m, line, in_fn in _imports(SRC / rel) if in_fn] == []


# ------------------------------------------------------------------ progress

def test_progress_to_a_file_is_plain_lines():
    buf = io.StringIO()  # not a terminal
    bar = progress_bar(range(4), desc="waves", unit="ckpt", file=buf)
    assert isinstance(bar, LineProgress)
    for i in bar:
        bar.set_postfix_str(f"iter_{i:07d}")
    inner = progress_bar(total=10, desc="record x", unit="sample", file=buf, leave=False)
    inner.update(4)
    inner.set_postfix(loss=1.5)
    inner.update(6)
    inner.close()
    inner.close()  # closing twice writes one final line
    text = buf.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert text.splitlines() == ["waves: 0/4 ckpt", "waves: 4/4 ckpt, iter_0000003, 0 s (done)",
                                 "record x: 0/10 sample", "record x: 10/10 sample, loss=1.5, 0 s (done)"]
    assert progress_bar(range(2), desc="x", disable=True, file=buf).disable
    assert buf.getvalue() == text


def test_stage_progress_in_a_log_has_no_cursor_control(tmp_path, corpus, capfd):
    """A stage whose stderr is a file or pipe (pytest captures it through one) writes lines only."""
    from gptwaves.api import RecordSettings
    from gptwaves.stages.recordings import record_run
    from gptwaves.train import train

    from conftest import tiny_config, torch_threads

    with torch_threads(1):
        run = tmp_path / "run"
        train(tiny_config(max_iters=10, checkpoints=(10,), progress=True), corpus, run)
        record_run(run, "last", RecordSettings(samples=4, steps=8, batch_size=2), progress=True)
    err = capfd.readouterr().err
    assert "record iter_0000010: 4/4 sample" in err and "train test" in err
    assert "\x1b[" not in err and "\r" not in err


# ------------------------------------------------------------------ figures

def test_a_failing_figure_is_a_warning_naming_it(tmp_path):
    def broken_figure(data, stem):
        raise OSError(28, "No space left on device")

    def fine_figure(data, stem):
        return [stem.with_suffix(".png")]

    out: list = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        guarded(out, broken_figure, [1], tmp_path / "fano")
        guarded(out, fine_figure, [1], tmp_path / "rates")
    assert out == [tmp_path / "rates.png"]
    assert len(w) == 1 and "broken_figure (fano)" in str(w[0].message) and "No space left" in str(w[0].message)


def _guarded_figure_stems() -> set[str]:
    """The file name (checkpoint prefix removed) of every figure a stage draws through ``guarded``."""
    stems = set()
    for p in (SRC / "stages").glob("*.py"):
        text = p.read_text()
        for m in re.finditer(r"\bguarded\(", text):
            depth, k = 1, m.end()
            while depth:  # the call's text, to its closing parenthesis
                depth += {"(": 1, ")": -1}.get(text[k], 0)
                k += 1
            parts = re.findall(r"""/ f?["']([^"']+)["']""", text[m.end():k])
            if parts:
                stems.add(parts[-1].replace("{name}_", ""))
    return stems


def test_every_figure_has_a_caption():
    """Each figure the stages draw has its caption in the report, and no caption is for a figure
    nothing draws."""
    from gptwaves.stages import report

    stems = _guarded_figure_stems()
    assert {"fano", "acf", "event_triggered", "error_rates", "training_curves", "coherence_nulls"} <= stems
    assert sorted(stems - set(report._PHRASES)) == []
    assert sorted(set(report._PHRASES) - stems) == []


def test_event_triggered_figure(tmp_path, monkeypatch):
    monkeypatch.delenv("GPTWAVES_FIGURES", raising=False)  # the default formats
    from gptwaves.figures.waves import event_triggered_figure

    rng = np.random.default_rng(0)
    E, W, C = 4, 3, 6
    eta = rng.normal(size=(E, 2 * W + 1, C))
    eta[2] = np.nan
    d = rng.normal(size=(E, C))
    paths = event_triggered_figure(eta, [10, 5, 0, 7], ["space", "newline", "punctuation", "vowel"],
                                   np.arange(-W, W + 1), d, tmp_path / "iter_0000010_event_triggered")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 0 for p in paths)


# ------------------------------------------------------------------ citations of the method page

def test_code_cites_method_sections_that_exist():
    """Comments and docstrings cite ``docs/method.md, <section>`` by a heading that exists, and never
    a file the repository does not hold ("DESIGN n") or an issue number."""
    method = SRC.parent.parent / "docs" / "method.md"
    if not method.is_file():
        pytest.skip("docs/method.md is not next to this source tree (installed package)")
    heads = [line[3:].strip() for line in method.read_text().splitlines() if line.startswith("## ")]
    bad, stale = [], []
    for p in sorted(SRC.rglob("*.py")):
        text = p.read_text()
        for m in re.finditer(r"docs/method\.md, \"?([^\n\"]+)", text):
            cited = m.group(1).rstrip()
            if not any(cited.startswith(h) or h.startswith(cited) for h in heads):
                bad.append(f"{p.relative_to(SRC)}: {cited[:50]}")
        stale += [f"{p.relative_to(SRC)}: {m.group(0)}"
                  for m in re.finditer(r"DESIGN [0-9]|DESIGN\.md|[Ii]ssue [0-9]+", text)]
    assert bad == [] and stale == []


# ------------------------------------------------------------------ modules a reader can hold

#: Modules allowed over MAX_MODULE_LINES, each with the reason it still is. The list only shrinks.
OVER_SIZE = {
}
MAX_MODULE_LINES = 650
MAX_FUNCTION_LINES = 80


def test_no_module_too_long_to_hold():
    """No source module is over 650 lines, except those listed in OVER_SIZE with their reason."""
    long = {str(p.relative_to(SRC)): n for p in sorted(SRC.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert sorted(set(long) - set(OVER_SIZE)) == [], long


def test_long_functions_say_why():
    """A function over 80 lines (``end_lineno - lineno``, docstring included) carries a one-line
    ``# long: <reason>`` on the line above its ``def`` (or above its first decorator); a module in
    OVER_SIZE is exempt until it is split."""
    bad = []
    for p in sorted(SRC.rglob("*.py")):
        text = p.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.end_lineno - node.lineno <= MAX_FUNCTION_LINES:
                continue
            top = min([d.lineno for d in node.decorator_list] + [node.lineno])
            above = lines[top - 2].strip() if top >= 2 else ""
            if not re.match(r"# long: \S", above) and str(p.relative_to(SRC)) not in OVER_SIZE:
                bad.append(f"{p.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno} lines)")
    assert bad == []


def test_analysis_is_pure():
    """gptwaves.analysis imports numpy, scipy, scikit-learn, ruptures and the standard library only,
    besides its own modules, gptwaves.jsonable, gptwaves.errors and the declarations of gptwaves.schema:
    no torch, no files, no CLI."""
    allowed_top = {"numpy", "scipy", "sklearn", "ruptures"}
    allowed_own = {"gptwaves.jsonable", "gptwaves.errors", "gptwaves.schema"}  # schema: declarations only
    bad = []
    for p in sorted((SRC / "analysis").glob("*.py")):
        for mod, line, _ in _imports(p):
            top = mod.split(".")[0]
            if mod.startswith("gptwaves."):
                ok = mod.startswith("gptwaves.analysis") or mod in allowed_own
            else:
                ok = top in allowed_top or top in sys.stdlib_module_names
            if not ok:
                bad.append(f"analysis/{p.name}:{line} {mod}")
    assert bad == []


@pytest.mark.parametrize("composer, parts", [
    ("gptwaves.analysis.waves", ("wave_arrays", "correlation", "oscillation", "clustering", "channel_labels",
                                 "coherence", "repeatability", "waves_summary")),
    ("gptwaves.analysis.spelling", ("spelling_words", "spelling_dispersion", "spelling_nulls", "spelling_windows",
                                    "spelling_cascade", "spelling_crossing")),
])
def test_split_modules_keep_their_names_importable(composer, parts):
    """Every public name of the modules a composer was split into is importable from the composer
    (and is the same object), and no part imports its composer back."""
    import importlib

    comp = importlib.import_module(composer)
    for part in parts:
        mod = importlib.import_module(f"gptwaves.analysis.{part}")
        for name in mod.__all__:
            assert getattr(comp, name) is getattr(mod, name), f"{part}.{name}"
        assert composer not in [m for m, _, _ in _imports(Path(mod.__file__))], part
