"""Figure functions of gptwaves.figures.waves write non-empty PNG and SVG files."""

import csv
import warnings

import numpy as np
import pytest

from gptwaves.analysis import waves as W
from gptwaves.figures import waves as F


@pytest.fixture(scope="module", autouse=True)
def _default_figure_formats(all_figure_formats):
    """This module checks both default formats (the suite otherwise writes PNG only)."""


@pytest.fixture(scope="module")
def tap():
    rng = np.random.default_rng(0)
    S, T, C = 6, 180, 24
    t = np.arange(T)
    chars = rng.choice(np.array(list("the quick brown fox, A.\n") + [" "] * 4), size=(S, T + 1)).astype("<U1")
    chars[0, 5] = "$"
    cur, nxt = chars[:, :-1], chars[:, 1:]
    x = rng.standard_normal((S, T, C))
    for s in range(S):
        for g, p in enumerate((5, 7, 11)):
            x[s, :, 8 * g : 8 * g + 4] += 2 * np.sin(2 * np.pi * t / p + rng.uniform(0, 6.3))[:, None]
    x[..., 20] += 3 * (cur == " ")
    mask = np.ones((S, T), bool)
    mask[:, :10] = False
    return x, cur, nxt, mask, W.analyze_tap(x, cur, nxt, mask, nlags=30, window=4)


def check(paths):
    assert [p.suffix for p in paths] == [".png", ".svg"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in paths[1].read_bytes()[:2000]


def test_wave_figures(tap, tmp_path):
    x, cur, nxt, mask, res = tap
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. missing glyphs for ␣ and ⏎
        check(F.wave_heatmap(x[0], cur[0], tmp_path / "heat", mask_sample=mask[0]))
        check(F.wave_heatmap(x[0], cur[0], tmp_path / "sub" / "heat_ordered", mask_sample=mask[0],
                             channel_order=res["clustering"]["order"], max_steps=None))
        d_space = res["function"]["d_current"][res["function"]["classes"].index("space")]
        check(F.selective_waves(x[0], cur[0], d_space, tmp_path / "sel", n=5, mask_sample=mask[0]))
    assert int(np.nanargmax(np.abs(d_space))) == 20


def test_correlation_figures(tap, tmp_path):
    x, cur, nxt, mask, res = tap
    check(F.correlation_figure(res["R"], res["clustering"], tmp_path / "corr"))
    R0 = W.correlation_matrix(np.random.default_rng(1).standard_normal(x.shape))
    check(F.correlation_comparison(R0, res["R"], tmp_path / "cmp"))
    check(F.correlation_comparison(R0, res["R"], tmp_path / "cmp2", order=res["clustering"]["order"],
                                   names=("iter 0", "iter 5000")))


def test_acf_and_period_figures(tap, tmp_path):
    x, cur, nxt, mask, res = tap
    check(F.acf_figure(res["acf"], res["space_acf"], tmp_path / "acf", strength=res["strength"],
                       periods=res["period_acf"]))
    check(F.acf_figure(res["acf"], res["space_acf"], tmp_path / "acf2", channels=[0, 20]))
    check(F.period_histogram(res["period_acf"], tmp_path / "hist", periods_psd=res["period_psd"]))


def test_channel_table(tap, tmp_path):
    x, cur, nxt, mask, res = tap
    rows = F.channel_function_rows(res["function"], res["clustering"]["labels"], top_n=10,
                                   periods=res["period_acf"])
    assert len(rows) == 10
    assert rows[0]["channel"] == 20 and rows[0]["label"] == "space" and rows[0]["d"] > 1
    assert all(abs(a["d"]) >= abs(b["d"]) for a, b in zip(rows, rows[1:]))
    with open(tmp_path / "rows.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    check(F.channel_table_figure(rows, tmp_path / "table"))


def test_order_parameter_and_similarity_figures(tmp_path):
    its = [0, 10, 100, 1000, 5000]
    per_tap = {
        "hook_embed": {"mean_abs_corr": [0.05, 0.06, 0.1, 0.2, 0.25], "lambda_max_share": [0.02, 0.03, 0.1, 0.2, 0.3],
                       "participation_ratio": [150, 120, 60, 20, 10]},
        "blocks.0.hook_resid_post": [
            {"mean_abs_corr": 0.1 * i, "lambda_max_share": 0.05 * i, "participation_ratio": 100 / (i + 1)}
            for i in range(5)
        ],
    }
    check(F.order_parameters_figure(its, per_tap, tmp_path / "order"))
    rng = np.random.default_rng(2)
    recs = [(np.corrcoef(rng.standard_normal((8, 40))), rng.standard_normal((8, 11))) for _ in range(3)]
    comp = W.compare_recordings(recs, ["seed 0", "seed 1", "seed 2"])
    check(F.similarity_figure(comp, tmp_path / "rep", title="Repeatability across seeds"))
    comp2 = W.compare_recordings(recs[:2], ["verse", "prose"])
    check(F.repeatability_plasticity_figure(comp, comp2, tmp_path / "repplast"))


def test_display_char():
    assert F.display_char(" ") == "␣" and F.display_char("\n") == "⏎" and F.display_char("a") == "a"


def _summary_checkpoints():
    """Per-checkpoint tap summaries as tap_summary writes them (with None for undefined numbers)."""
    cks = []
    for i, it in enumerate([0, 10, 100, 1000]):
        def tap(scale, with_ci=True):
            sur = {k: {"observed": v * scale, "surrogate_mean": v, "surrogate_q95": v * 1.1,
                       "excess": v * (scale - 1), "ci": [v * (scale - 1.2), v * (scale - 0.8)] if with_ci else None}
                   for k, v in (("mean_abs_corr", 0.02), ("lambda_max_share", 0.05), ("participation_ratio", 150.0))}
            sur["participation_ratio"]["ci"] = [-10.0 * scale, -5.0 * scale] if with_ci else None
            return {"mean_abs_corr": 0.1 * scale, "lambda_max_share": 0.05 * scale, "participation_ratio": 100 / scale,
                    "induced": {"mean_abs_corr": 0.02 * scale, "lambda_max_share": 0.05 * scale,
                                "participation_ratio": None if i == 2 else 150 / scale},
                    "surrogate": sur}
        cks.append({"iteration": it, "taps": {"hook_embed": tap(1.2, with_ci=i != 1),
                                              "blocks.5.hook_resid_post": tap(1 + i)}})
    return cks


def test_coherence_null_figure(tmp_path):
    check(F.coherence_null_figure(_summary_checkpoints(), "blocks.5.hook_resid_post", tmp_path / "nulls"))
    # tap summaries also feed the plain order-parameter figure (None -> gap)
    cks = _summary_checkpoints()
    per_tap = {t: [c["taps"][t] for c in cks] for t in cks[0]["taps"]}
    check(F.order_parameters_figure([c["iteration"] for c in cks], per_tap, tmp_path / "order"))


def test_gated_clustering_and_baselines_in_figures(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 120, 12))
    cur = rng.choice(np.array(list("ab c")), size=(8, 120)).astype("<U1")
    res = W.analyze_tap(x, cur, cur, nlags=10, n_surrogates=5, n_boot=20)
    assert res["clustering"]["k"] == 1 and not res["clustering"]["structure"]
    check(F.correlation_figure(res["R_induced"], res["clustering"], tmp_path / "corr_gated"))
    recs = [(np.corrcoef(rng.standard_normal((8, 40))), rng.standard_normal((8, 11))) for _ in range(3)]
    comp = W.compare_recordings(recs, ["seed 0", "seed 1", "seed 2"])
    check(F.similarity_figure(comp, tmp_path / "rep"))
    check(F.repeatability_plasticity_figure(comp, comp, tmp_path / "repplast"))


@pytest.mark.parametrize("value,formats", [("png", ("png",)), ("svg", ("svg",)), ("SVG, png", ("png", "svg")),
                                           ("none", ())])
def test_figure_formats_from_the_environment(monkeypatch, tmp_path, value, formats):
    from gptwaves.figures.common import new_figure, save_figure

    monkeypatch.setenv("GPTWAVES_FIGURES", value)
    fig = new_figure(2, 2)
    fig.add_subplot().plot([0, 1])
    paths = save_figure(fig, tmp_path / "f")
    assert [p.suffix[1:] for p in paths] == list(formats)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"f.{e}" for e in formats)


def test_bad_figure_formats_are_one_line_errors(monkeypatch, capsys):
    from gptwaves.cli import main

    monkeypatch.setenv("GPTWAVES_FIGURES", "jpg")
    assert main(["summary", "--run", "nowhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gptwaves: error: GPTWAVES_FIGURES") and len(err) == 1


def test_a_suites_wave_figures_say_step(tmp_path, monkeypatch):
    """A Hugging Face suite's checkpoints are training steps: the figures across them say so."""
    from matplotlib.axes import Axes

    seen: list[str] = []
    orig = Axes.set_xlabel
    monkeypatch.setattr(Axes, "set_xlabel", lambda self, text, *a, **k: (seen.append(str(text)),
                                                                          orig(self, text, *a, **k))[1])
    cks = _summary_checkpoints()
    F.coherence_null_figure(cks, "blocks.5.hook_resid_post", tmp_path / "nulls", axis="step")
    per_tap = {t: [c["taps"][t] for c in cks] for t in cks[0]["taps"]}
    F.order_parameters_figure([c["iteration"] for c in cks], per_tap, tmp_path / "order", axis="step")
    assert seen and all("step" in t and "iteration" not in t for t in seen)
