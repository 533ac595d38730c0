"""Channel interventions (docs/method.md, Interventions): spec/mode parsing, the edit itself, paired seeds, the
statistics against direct scipy computations, result.json, reuse, control channels, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from gptwaves.analysis import intervention as ia
from gptwaves.analysis.spelling import extract_words
from gptwaves.errors import GptwavesError

from conftest import tiny_config, torch_threads
from gptwaves.figures.common import figure_formats

TAP = "blocks.1.hook_resid_post"  # the last block of the tiny model
C = 16


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus_path):
    """A tiny trained run (checkpoints 0 and 60) with a waves analysis of the last checkpoint."""
    from gptwaves.api import ModelSource, RecordSettings, waves_run
    from gptwaves.corpus import Corpus
    from gptwaves.train import train

    run_dir = tmp_path_factory.mktemp("intervene") / "run"
    with torch_threads(1):
        train(tiny_config(max_iters=60, checkpoints=(0, 60)), Corpus.load(corpus_path), run_dir)
        waves_run(run_dir, "last", record=RecordSettings(samples=8, steps=32),
                  source=ModelSource(corpus=corpus_path), figures=False, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def model(run):
    from gptwaves.stages.common import load_selected, select_checkpoints

    (_, ref), = select_checkpoints(run, "last")
    return load_selected(ref, device="cpu")


def go(run, spec="0-3", mode="ablate", **kw):
    from gptwaves.api import ModelSource, SamplingConfig, SpellingSettings
    from gptwaves.stages.interventions import intervene_run

    checkpoint, tap = kw.pop("checkpoint", "last"), kw.pop("tap", TAP)
    run_kw = {k: kw.pop(k) for k in ("control_seed", "figures", "progress") if k in kw}
    run_kw = {"progress": False, "figures": False, **run_kw}
    source = ModelSource(device="cpu", **{k: kw.pop(k) for k in ("corpus", "n_head") if k in kw})
    sampling = SamplingConfig(**{k: kw.pop(k) for k in ("seed", "temperature", "top_k", "top_p", "context")
                                 if k in kw})
    base = dict(samples=40, length=16, n_boot=200)
    base.update(kw)
    with torch_threads(1):
        return intervene_run(run, checkpoint, tap, spec, mode, SpellingSettings(sampling=sampling, **base), source,
                             **run_kw)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


# ------------------------------------------------------------------ spec parsing

@pytest.mark.parametrize("spec,expected,canon", [
    ("3,17,40", [3, 17, 40], "3,17,40"),
    ("10-20", list(range(10, 21)), "10-20"),
    (" 5, 1-3 ,2,9-9", [1, 2, 3, 5, 9], "1-3,5,9"),
    ("all", list(range(64)), "all"),
    ("0", [0], "0"),
])
def test_parse_channel_list(spec, expected, canon):
    assert ia.parse_channel_spec(spec, 64).tolist() == expected
    assert ia.channel_spec_canonical(spec) == canon


def test_parse_cluster_and_label_specs():
    clusters = [0, 1, 1, 2, 0, 1]
    labels = ["space", "", "next:space", "space", "vowel", ""]
    assert ia.parse_channel_spec("cluster:1", 6, clusters=clusters).tolist() == [1, 2, 5]
    assert ia.parse_channel_spec("cluster:0,2", 6, clusters=clusters).tolist() == [0, 3, 4]
    assert ia.parse_channel_spec("label:space", 6, labels=labels).tolist() == [0, 3]
    assert ia.parse_channel_spec("label:next:space", 6, labels=labels).tolist() == [2]
    assert ia.channel_spec_canonical("label: next:space") == "label:next:space"


@pytest.mark.parametrize("spec,kw,needle", [
    ("", {}, "empty"),
    ("   ", {}, "empty"),
    ("abc", {}, "bad channel spec"),
    ("1,,2", {}, "bad channel spec"),
    ("-1", {}, "bad channel spec"),
    ("1.5", {}, "bad channel spec"),
    ("5-2", {}, "end is before the start"),
    ("16", {}, "out of range"),
    ("3,10-40", {}, "out of range"),
    ("cluster:1", {}, "not available"),
    ("cluster:x", {"clusters": [0] * C}, "bad cluster spec"),
    ("cluster:7", {"clusters": [0] * 8 + [1] * 8}, "no cluster 7"),
    ("label:space", {}, "not available"),
    ("label:", {"labels": [""] * C}, "bad label spec"),
    ("label:space", {"labels": ["vowel"] + [""] * (C - 1)}, "no channel is labelled 'space'"),
    ("label:space", {"labels": [""] * C}, "labels present: none"),
])
def test_parse_channel_spec_errors(spec, kw, needle):
    with pytest.raises(GptwavesError) as e:
        ia.parse_channel_spec(spec, C, **kw)
    assert needle in one_line(e)


# ------------------------------------------------------------------ mode parsing, names

@pytest.mark.parametrize("mode,kind,value,canon", [
    ("ablate", "ablate", None, "ablate"),
    (" mean ", "mean", None, "mean"),
    ("clamp=2", "clamp", 2.0, "clamp=2.0"),
    ("clamp=-1.5", "clamp", -1.5, "clamp=-1.5"),
    ("scale=0.5", "scale", 0.5, "scale=0.5"),
    ("scale=1e-1", "scale", 0.1, "scale=0.1"),
    ("scale = .5", "scale", 0.5, "scale=0.5"),
])
def test_parse_mode(mode, kind, value, canon):
    m = ia.parse_mode(mode)
    assert m == {"kind": kind, "value": value}
    assert ia.mode_canonical(m) == canon


@pytest.mark.parametrize("mode", ["", "zero", "ablate=0", "mean=1", "clamp", "clamp=", "scale=abc", "scale=nan",
                                  "clamp=inf", "scale=1,2", "Scale=2", "clamp=2=3"])
def test_parse_mode_errors(mode):
    with pytest.raises(GptwavesError) as e:
        ia.parse_mode(mode)
    one_line(e)


def test_slug_is_filesystem_safe():
    from gptwaves.stages.interventions import intervention_dir_name

    n = intervention_dir_name("iter_0000060", TAP, "label:next:space", "clamp=-1.5")
    assert n == "iter_0000060__blocks.1.hook_resid_post__label_next_space__clamp_-1.5"
    assert ia.slug("../../etc") == "_.._.._etc"
    assert ia.slug("-x").startswith("_")
    long1, long2 = ia.slug(",".join(map(str, range(0, 200, 2)))), ia.slug(",".join(map(str, range(1, 200, 2))))
    assert len(long1) <= 60 and long1 != long2


def test_control_channels_disjoint_same_size():
    t = np.array([1, 5, 7])
    c = ia.control_channels(t, C, seed=3)
    assert c.size == 3 and not set(c) & set(t) and np.all(np.diff(c) > 0)
    assert np.array_equal(c, ia.control_channels(t, C, seed=3))
    assert ia.control_channels(np.arange(10), C) is None  # 6 outside < 10 targets


# ------------------------------------------------------------------ statistics vs scipy

def test_word_lengths_match_extract_words():
    texts = ["\nThe king's men don", "\nO'er a  bb, c!\n", "\n"]
    per = ia.word_lengths_per_sample(texts, 1)
    assert [v.tolist() for v in per] == [[3, 6, 3], [4, 1, 2, 1], []]
    expected = [e - s for t in texts for _, s, e in extract_words(t, 1)]
    assert ia.word_lengths(texts, 1).tolist() == expected
    assert ia.length_histogram([1, 3, 3, 9], 4).tolist() == [1, 0, 2, 1]


def test_compare_rates_against_direct_computation():
    rng = np.random.default_rng(0)
    n = 200
    na, nb = rng.poisson(6, n), rng.poisson(5, n)
    ka, kb = rng.binomial(na, 0.3), rng.binomial(nb, 0.45)
    r = ia.compare_rates(ka, na, kb, nb, n_boot=500, seed=4)
    pa, pb = ka.sum() / na.sum(), kb.sum() / nb.sum()
    assert r["rate_a"] == pytest.approx(pa) and r["rate_b"] == pytest.approx(pb)
    assert r["diff"] == pytest.approx(pb - pa)
    p = (ka.sum() + kb.sum()) / (na.sum() + nb.sum())
    z = (pb - pa) / math.sqrt(p * (1 - p) * (1 / na.sum() + 1 / nb.sum()))
    assert r["z_test"]["z"] == pytest.approx(z)
    assert r["z_test"]["p"] == pytest.approx(2 * stats.norm.sf(abs(z)))
    # the statsmodels reference of the same test
    from statsmodels.stats.proportion import proportions_ztest
    zs, ps = proportions_ztest([kb.sum(), ka.sum()], [nb.sum(), na.sum()])
    assert r["z_test"]["z"] == pytest.approx(zs) and r["z_test"]["p"] == pytest.approx(ps)
    mw = stats.mannwhitneyu(kb, ka, alternative="two-sided")
    assert r["misspelled_per_sample"]["mannwhitney"]["U"] == pytest.approx(mw.statistic)
    assert r["misspelled_per_sample"]["mannwhitney"]["p"] == pytest.approx(mw.pvalue)
    mw = stats.mannwhitneyu(nb, na, alternative="two-sided")
    assert r["words_per_sample"]["mannwhitney"]["p"] == pytest.approx(mw.pvalue)
    # paired percentile bootstrap, recomputed directly
    idx = np.random.default_rng(4).integers(0, n, size=(500, n))
    d = kb[idx].sum(1) / nb[idx].sum(1) - ka[idx].sum(1) / na[idx].sum(1)
    assert r["ci"] == pytest.approx(np.quantile(d, [0.025, 0.975]).tolist())
    assert r["ci"][0] < r["diff"] < r["ci"][1]
    assert r["significant"] and r["p_permutation"] < 0.01
    # no difference at all: diff 0, nothing significant
    same = ia.compare_rates(ka, na, ka, na, n_boot=200)
    assert same["diff"] == 0 and same["p_permutation"] == 1.0 and not same["significant"]
    assert same["ci"] == [0.0, 0.0] and same["z_test"]["p"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ia.compare_rates(ka, na, kb[:-1], nb[:-1])
    unpaired = ia.compare_rates(ka, na, kb[:-1], nb[:-1], paired=False, n_boot=200)
    assert unpaired["p_permutation"] < 0.05


def test_paired_permutation_tests_match_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.poisson(3, 300), rng.poisson(3, 300)
    r = ia.compare_counts(a, b, n_boot=4000, seed=2)
    assert r["diff"] == pytest.approx(b.mean() - a.mean())
    assert r["mannwhitney"]["p"] == pytest.approx(stats.mannwhitneyu(b, a, alternative="two-sided").pvalue)
    ref = stats.permutation_test((b, a), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                                 permutation_type="samples", n_resamples=4000, vectorized=True, rng=0)
    assert abs(r["p_permutation"] - ref.pvalue) < 0.02  # both Monte Carlo, 4000 resamples
    # ratio of sums (error rate): paired sign flips via sample indices into lookup tables
    n = 200
    na, nb = rng.poisson(6, n), rng.poisson(6, n)
    ka, kb = rng.binomial(na, 0.3), rng.binomial(nb, 0.36)
    r = ia.compare_rates(ka, na, kb, nb, n_boot=4000, seed=3)
    K, N = np.concatenate([kb, ka]), np.concatenate([nb, na])
    ref = stats.permutation_test((np.arange(n), np.arange(n) + n),
                                 lambda x, y: K[x].sum() / N[x].sum() - K[y].sum() / N[y].sum(),
                                 permutation_type="samples", n_resamples=4000, vectorized=False, rng=0)
    assert r["diff"] == pytest.approx(ref.statistic)
    assert abs(r["p_permutation"] - ref.pvalue) < 0.02


def test_compare_distributions_against_chi2_contingency():
    rng = np.random.default_rng(2)
    per_a = [rng.integers(1, 8, rng.integers(0, 6)) for _ in range(150)]
    per_b = [rng.integers(1, 11, rng.integers(0, 6)) for _ in range(150)]
    r = ia.compare_distributions(per_a, per_b, n_boot=300, seed=1, min_tail=50)
    la, lb = np.concatenate(per_a), np.concatenate(per_b)
    assert r["hist_a"] == np.bincount(la, minlength=11)[1:].tolist()
    assert r["hist_b"] == np.bincount(lb, minlength=11)[1:].tolist()
    table = np.asarray(r["chi2"]["table"])
    assert table.sum() == la.size + lb.size and table.sum(0)[-1] >= 50 and table.shape[1] < 10
    ref = stats.chi2_contingency(table, correction=False)
    assert r["chi2"]["statistic"] == pytest.approx(ref.statistic)
    assert r["chi2"]["p"] == pytest.approx(ref.pvalue) and r["chi2"]["dof"] == ref.dof
    assert r["chi2"]["bins"][-1].startswith(">=") and r["chi2"]["p"] < 0.01
    assert r["mean_a"] == pytest.approx(la.mean()) and r["diff"] == pytest.approx(lb.mean() - la.mean())
    assert r["ci"][0] < r["diff"] < r["ci"][1]
    assert r["mannwhitney"]["p"] == pytest.approx(stats.mannwhitneyu(lb, la, alternative="two-sided").pvalue)
    small = ia.compare_distributions([[1] * 5 + [2] * 3 + [3]], [[1] * 4 + [2] * 2 + [4]], min_tail=3, n_boot=0)
    assert small["chi2"]["table"] == [[5, 4], [4, 3]] and small["chi2"]["bins"] == ["1", ">=2"]
    assert small["hist_a"] == [5, 3, 1, 0] and small["hist_b"] == [4, 2, 0, 1]
    same = ia.compare_distributions(per_a, per_a, n_boot=100)
    assert same["chi2"]["statistic"] == pytest.approx(0) and same["diff"] == 0 and not same["significant"]


# ------------------------------------------------------------------ the edit itself

def test_ablate_edit_zeroes_the_tap_channels_only(model, one_thread):
    from gptwaves.stages.interventions import make_edit
    from gptwaves.sample import batch_generator
    from gptwaves.sample import SamplingConfig, generate

    gpt, meta = model
    ch = [2, 5, 11]
    edit = make_edit(ch, ia.parse_mode("ablate"))
    others = [c for c in range(C) if c not in ch]
    # one forward on fixed tokens: edited channels are exactly 0, the others are untouched
    idx = torch.randint(0, gpt.config.vocab_size, (3, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, _, plain = gpt(idx, taps=[TAP])
        _, _, ed = gpt(idx, taps=[TAP], edits={TAP: edit})
    assert torch.all(ed[TAP][..., ch] == 0)
    assert torch.equal(ed[TAP][..., others], plain[TAP][..., others])
    assert not torch.equal(plain[TAP][..., ch], torch.zeros_like(plain[TAP][..., ch]))
    # during generation: the recorded tap has the channels at 0 at every position
    cfg = SamplingConfig(seed=5)
    base = generate(gpt, [0], 24, 4, cfg, taps=[TAP], generator=batch_generator(5, 0))
    res = generate(gpt, [0], 24, 4, cfg, taps=[TAP], generator=batch_generator(5, 0), edits={TAP: edit})
    x, x0 = res.taps[TAP], base.taps[TAP]
    assert np.all(x[..., ch] == 0) and np.any(x0[..., ch] != 0)
    assert np.array_equal(x[:, 0][:, others], x0[:, 0][:, others])  # same input at the first position
    # other modes
    h = torch.randn(2, 3, C)
    assert torch.all(make_edit(ch, ia.parse_mode("clamp=2.5"))(h)[..., ch] == 2.5)
    sc = make_edit(ch, ia.parse_mode("scale=-2"))(h)
    assert torch.equal(sc[..., ch], h[..., ch] * -2) and torch.equal(sc[..., others], h[..., others])
    mn = make_edit(ch, ia.parse_mode("mean"), means=[1.0, 2.0, 3.0])(h)
    assert torch.equal(mn[..., ch], torch.tensor([1.0, 2.0, 3.0]).expand(2, 3, 3))
    assert torch.equal(make_edit([], ia.parse_mode("ablate"))(h), h)


def test_scale_one_reproduces_the_baseline_exactly(run):
    r = go(run, "0-7", "scale=1")
    cmp = r["comparisons"]["edited_vs_baseline"]
    assert cmp["divergence"]["identical"] == 1.0
    assert cmp["error_rate"]["diff"] == 0 and cmp["word_length"]["diff"] == 0
    assert r["conditions"]["edited"]["spelling"]["counts"] == r["conditions"]["baseline"]["spelling"]["counts"]
    texts = json.loads((r["out_dir"] / "samples.json").read_text())
    assert texts["control"] is not None and len(texts["edited"]) == 40


def test_ablating_all_channels_of_the_last_block_changes_text_statistics(run):
    r = go(run, "all", "ablate", samples=60)
    cmp = r["comparisons"]["edited_vs_baseline"]
    assert r["settings"]["channels"] == list(range(C))
    assert r["channels"]["control"] is None and "no control" in r["channels"]["control_note"]
    assert "control" not in r["conditions"] and "control_vs_baseline" not in r["comparisons"]
    assert cmp["divergence"]["identical"] < 0.1
    # the whole residual stream is gone: the model emits characters from one fixed distribution
    assert cmp["error_rate"]["words_per_sample"]["mannwhitney"]["p"] < 0.01


# ------------------------------------------------------------------ the stage: result.json, reuse

def test_result_json_contents_and_reuse(run):
    r = go(run, "1,4-6", "clamp=2", control_seed=7, figures=True)
    d = r["out_dir"]
    assert d.name == "iter_0000060__blocks.1.hook_resid_post__1_4-6__clamp_2.0"
    assert d.parent == run / "interventions" and not r["reused"]
    saved = json.loads((d / "result.json").read_text())
    s = saved["settings"]
    assert s["channels"] == [1, 4, 5, 6] and s["spec"] == "1,4-6" and s["mode"] == "clamp=2.0"
    assert s["tap"] == TAP and s["samples"] == 40 and s["length"] == 16 and s["iteration"] == 60
    assert s["sampling"]["seed"] == 0 and s["control_seed"] == 7 and s["lexicon"] == "training split"
    ctrl = s["control_channels"]
    assert len(ctrl) == 4 and not set(ctrl) & {1, 4, 5, 6} and saved["channels"]["control"] == ctrl
    assert ctrl == ia.control_channels([1, 4, 5, 6], C, 7).tolist()
    assert {"gptwaves", "torch", "numpy", "scipy"} <= set(saved["packages"])
    for cond in ("baseline", "edited", "control"):
        c = saved["conditions"][cond]
        assert {"error_rate", "error_rate_ci", "words_per_sample", "word_length", "spelling"} <= set(c)
        assert c["spelling"]["n_samples"] == 40 and "fano" in c["spelling"]["misspelled"]
        assert sum(c["word_length"]["counts"]) == c["n_words"] == c["spelling"]["n_words_total"]
    for key in ("edited_vs_baseline", "control_vs_baseline"):
        cmp = saved["comparisons"][key]
        assert {"error_rate", "word_length", "divergence"} <= set(cmp)
        assert {"diff", "ci", "p_permutation", "z_test"} <= set(cmp["error_rate"])
        assert {"chi2", "diff", "ci", "mannwhitney"} <= set(cmp["word_length"])
    for f in ("error_rates", "word_lengths", "counts"):
        assert all((d / f"{f}.{e}").stat().st_size > 0 for e in figure_formats())
    assert sorted(saved["figures"]) == sorted(f"{f}.{e}" for f in ("error_rates", "word_lengths", "counts")
                                              for e in figure_formats())
    # baseline texts are cached and shared; the same settings reuse result.json
    assert saved["baseline_texts"].startswith("interventions/baseline/")
    mtime = (d / "result.json").stat().st_mtime_ns
    again = go(run, "6,5,4,1", "clamp=2.0", control_seed=7, figures=True)  # same set and mode, spelled differently
    assert again["reused"] and (d / "result.json").stat().st_mtime_ns == mtime
    changed = go(run, "1,4-6", "clamp=2", control_seed=8)
    assert not changed["reused"] and changed["settings"]["control_channels"] != ctrl


def test_label_and_cluster_specs_follow_the_waves_analysis(run):
    from gptwaves.analysis.waves import channel_function
    from gptwaves.stages.interventions import tap_labels
    from gptwaves.record import Recording

    focus = "blocks.1.hook_resid_post"
    info = tap_labels(run, "iter_0000060", focus)
    with Recording.open(run / "recordings" / "iter_0000060.h5") as rec:  # labels recomputed directly
        chars = rec.input_chars()
        fn = channel_function(rec.waves(focus), chars, rec.next_chars(),
                              mask=np.broadcast_to(~rec.is_prompt, chars.shape))
    assert info["labels"] == [str(v) for v in fn["label"].tolist()]
    summary = json.loads((run / "waves" / "iter_0000060" / "summary.json").read_text())
    counts = summary["taps"][focus]["label_counts"]
    assert counts == {k: info["labels"].count(k) for k in set(info["labels"]) if k}
    lab = max(counts, key=counts.get)
    r = go(run, f"label:{lab}", "ablate", samples=20)
    assert r["settings"]["channels"] == [c for c in range(C) if info["labels"][c] == lab]
    assert set(r["channels"]["target_labels"]) == {lab}
    info0 = tap_labels(run, "iter_0000060", "blocks.0.hook_resid_post")
    k = int(info0["clusters"][0])
    r = go(run, f"cluster:{k}", "scale=0.5", samples=20, tap="blocks.0.hook_resid_post")
    assert r["settings"]["channels"] == np.flatnonzero(info0["clusters"] == k).tolist()
    assert "cluster_" in r["out_dir"].name


def test_mean_mode_uses_the_recording_or_generation(run):
    from gptwaves.record import Recording

    r = go(run, "0,3", "mean", samples=20)
    assert r["settings"]["mean_source"]["kind"] == "recording"
    with Recording.open(run / "recordings" / "iter_0000060.h5") as rec:
        x = rec.waves(TAP)[:, ~rec.is_prompt].astype(np.float64)
    assert r["channels"]["means"]["target"] == pytest.approx(x.mean(axis=(0, 1))[[0, 3]].tolist())
    assert len(r["channels"]["means"]["control"]) == 2
    r0 = go(run, "0,3", "mean", samples=20, checkpoint="0")  # no recording at iteration 0
    assert r0["settings"]["mean_source"]["kind"] == "generation"
    assert all(math.isfinite(v) for v in r0["channels"]["means"]["target"])


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("kw,needle", [
    (dict(spec="label:space", checkpoint="0"), "gptwaves waves --run"),
    (dict(spec="cluster:0", checkpoint="0"), "--checkpoint 0` first"),
    (dict(spec="0-99"), "out of range"),
    (dict(spec=""), "empty"),
    (dict(spec="label:nosuchlabel"), "no channel is labelled"),
    (dict(mode="zap"), "unknown edit mode"),
    (dict(mode="clamp"), "needs a value"),
    (dict(tap="blocks.9.hook_resid_post"), "unknown tap"),
    (dict(checkpoint="all"), "give one checkpoint"),
    (dict(checkpoint="12345"), "no checkpoint at iteration 12345"),
    (dict(samples=1), "--samples must be in [2"),
])
def test_errors_are_one_line_gptwaves_errors(run, kw, needle):
    args = dict(spec="0-3", mode="ablate")
    args.update({k: kw.pop(k) for k in ("spec", "mode") if k in kw})
    with pytest.raises(GptwavesError) as e:
        go(run, args["spec"], args["mode"], **kw)
    assert needle in one_line(e)
