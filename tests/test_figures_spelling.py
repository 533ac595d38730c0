"""Tests of gptwaves.figures.spelling: files are written and HTML is escaped."""

import numpy as np
import pytest

from gptwaves.analysis import spelling as sp
from gptwaves.figures import spelling as fs


@pytest.fixture(scope="module", autouse=True)
def _default_figure_formats(all_figure_formats):
    """This module checks both default formats (the suite otherwise writes PNG only)."""

LEXICON = frozenset({"the", "king", "good", "night", "sweet", "lord"})
WORDS = sorted(LEXICON)


def _texts(rng, n, p):
    out = []
    for _ in range(n):
        ws = [WORDS[i] for i in rng.integers(0, len(WORDS), 12)]
        ws = ["z" + w[1:] if rng.random() < p else w for w in ws]
        out.append(("\n" + " ".join(ws) + " ")[:81])
    return out


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(0)
    iters = [0, 10, 100, 1000]
    results = [sp.analyze(_texts(rng, 60, p), LEXICON, 1, 64, n_boot=100, n_perm=50)
               for p in (0.9, 0.6, 0.3, 0.05)]
    return iters, results, [4.2, 3.0, 2.0, 1.6]


def _check(paths):
    assert len(paths) == 2
    png, svg = paths
    assert png.suffix == ".png" and svg.suffix == ".svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 1000
    assert b"<svg" in svg.read_bytes()[:2000]


def test_count_histograms(tmp_path, series):
    iters, results, _ = series
    cps = [(it, r["counts"]["correct"], r["counts"]["misspelled"])
           for it, r in zip(iters, results)]
    _check(fs.plot_count_histograms(cps, tmp_path / "sub" / "hist"))


def test_fano_plot(tmp_path, series):
    iters, results, vl = series
    _check(fs.plot_fano(iters, results, tmp_path / "fano", val_losses=vl))
    _check(fs.plot_fano(iters, results, tmp_path / "fano_only"))
    cr = {"reported": True, "iteration": 50.0, "ci": [12.0, None]}
    _check(fs.plot_fano(iters, results, tmp_path / "fano_cross", crossing=cr))


def test_decomposition_and_cascade(tmp_path, series):
    iters, results, _ = series
    _check(fs.plot_decomposition(iters, results, tmp_path / "dec"))
    _check(fs.plot_cascade(iters, results, tmp_path / "cas"))


def test_q_and_rates(tmp_path, series):
    iters, results, _ = series
    _check(fs.plot_q_curves(iters, results, tmp_path / "q"))
    _check(fs.plot_rates(iters, results, tmp_path / "rates"))


def test_fano_plot_handles_undefined(tmp_path):
    texts = ["\nzz qq x", "\nqq zz zq x", "\nzz x"]
    r = sp.analyze(texts, LEXICON, 1, 8, n_boot=20, n_perm=20)
    _check(fs.plot_fano([0, 5], [r, r], tmp_path / "undef", val_losses=[4.0, 3.9]))
    _check(fs.plot_rates([0, 5], [r, r], tmp_path / "undef_rates"))
    _check(fs.plot_decomposition([0, 5], [r, r], tmp_path / "undef_dec"))
    _check(fs.plot_cascade([0, 5], [r, r], tmp_path / "undef_cas"))


def test_text_page_html_escapes_and_marks():
    texts = ["\n<script>alert('x')</script> the zing & good night x",
             "\nsweet \"lord\" kong "]
    out = fs.text_page_html(texts, LEXICON, 1, iteration=500, max_samples=20)
    assert "<script>" not in out
    assert '&lt;<mark class="miss">script</mark>&gt;' in out
    assert "&lt;/" in out and "&#x27;" in out
    assert "&amp;" in out
    assert '<mark class="miss">zing</mark>' in out
    assert '<mark class="miss">kong</mark>' in out
    assert '<mark class="miss">script</mark>' in out
    assert '<mark class="miss">good</mark>' not in out
    assert "&quot;lord&quot;" in out
    # cut final word is shown but not scored
    assert '<span class="unscored">x</span>' in out
    assert 'data-iteration="500"' in out
    assert out.count('<pre class="sample">') == 2
    margin = fs.text_page_html(["\nthe good night sweet x"], LEXICON, 1, iteration=2, length=9)
    assert '<span class="unscored">night</span>' in margin
    one = fs.text_page_html(texts, LEXICON, 1, iteration=1, max_samples=1)
    assert one.count('<pre class="sample">') == 1


def _texts_drawn(monkeypatch):
    """Every axis label, title and legend label the figures set, recorded."""
    from matplotlib.axes import Axes

    seen: list[str] = []
    for name in ("set_xlabel", "set_title"):
        orig = getattr(Axes, name)
        monkeypatch.setattr(Axes, name, lambda self, text, *a, _o=orig, **k: (seen.append(str(text)),
                                                                               _o(self, text, *a, **k))[1])
    orig_plot = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, *a, _o=orig_plot, **k: (seen.append(str(k.get("label", ""))),
                                                                            _o(self, *a, **k))[1])
    return seen


def test_a_suites_figures_say_step(tmp_path, series, monkeypatch):
    """A Hugging Face suite's checkpoints are training steps: its figures say so (axis="step")."""
    iters, results, vl = series
    seen = _texts_drawn(monkeypatch)
    cps = [(it, r["counts"]["correct"], r["counts"]["misspelled"]) for it, r in zip(iters, results)]
    fs.plot_count_histograms(cps, tmp_path / "h", axis="step")
    fs.plot_fano(iters, results, tmp_path / "f", val_losses=vl, axis="step")
    fs.plot_decomposition(iters, results, tmp_path / "d", axis="step")
    fs.plot_cascade(iters, results, tmp_path / "c", axis="step")
    fs.plot_q_curves(iters, results, tmp_path / "q", axis="step")
    fs.plot_rates(iters, results, tmp_path / "r", axis="step")
    assert any("step" in t for t in seen)
    assert not [t for t in seen if "iteration" in t]
