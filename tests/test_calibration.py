"""Calibration (docs/method.md, "Calibration"): the synthetic truths, the Monte Carlo summaries,
the fast spelling engine against the exact one, a rule of known size, a planted effect against its
simulated power, a broken rule caught, and the stage end to end on a tiny run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import special, stats

from gptwaves.analysis import calibration as ca
from gptwaves.analysis import spelling as sp
from gptwaves.stages import calibration as cs

from sizecheck import plan


def tables(n_samples=150, length=60, iterations=(0, 100, 1000), rate=0.3, seed=0, const=True):
    """Synthetic word tables: words of length 1..8 separated by spaces; error rate ``rate`` for every
    word (``const``) or rising with length."""
    rng = np.random.default_rng(seed)
    out = []
    for it in iterations:
        S, St, Ln = [], [], []
        for s in range(n_samples):
            pos = int(rng.integers(0, 3))
            while pos < length:
                n = int(rng.integers(1, 9))
                S.append(s)
                St.append(pos)
                Ln.append(n)
                pos += n + 1
        Ln = np.array(Ln)
        p = np.full(Ln.size, rate) if const else np.clip(rate * Ln / 4, 0.01, 0.9)
        out.append({"iteration": it, "word_sample": np.array(S), "word_start": np.array(St), "word_len": Ln,
                    "word_mis": rng.random(Ln.size) < p, "n_samples": n_samples, "length": length})
    return out


def template(n_perm=200, n_boot=100, **kw):
    return cs.make_spelling_template(tables(**kw), alpha=0.05, n_boot=n_boot, n_perm=n_perm, seed=0)


def run_scenario(tpl, scenario, R, engine="fast", seed=0):
    settings = cs.CalibrationSettings(replicates=R, engine=engine, seed=seed)
    shared = cs._shared_nulls(tpl, settings) if engine == "fast" else None
    return cs.spelling_chunk(tpl, scenario, 0, R, settings, shared)


def count(verdicts, cid, level, want="supported"):
    return sum(v[str(cid)][level] == want for v in verdicts)


# --------------------------------------------------------------------------- Monte Carlo summaries

def test_mc_rate_intervals():
    r = ca.mc_rate(0, 20)
    assert r["rate"] == 0 and r["ci"][0] == 0
    assert r["ci"][1] == pytest.approx(1 - 0.025 ** (1 / 20), rel=1e-9)  # exact Clopper-Pearson upper bound
    w = ca.mc_rate(92, 100, method="wilson")
    z = stats.norm.ppf(0.975)
    centre = (0.92 + z * z / 200) / (1 + z * z / 100)
    half = z / (1 + z * z / 100) * np.sqrt(0.92 * 0.08 / 100 + z * z / 40000)
    assert w["ci"] == pytest.approx([centre - half, centre + half], rel=1e-9)
    assert ca.mc_rate(0, 0)["rate"] is None


def test_min_detectable_interpolates_and_says_why():
    m = ca.min_detectable([0.25, 0.5, 1.0], [0.2, 0.6, 1.0])
    assert m["effect"] == pytest.approx(0.5 + 0.2 / 0.4 * 0.5) and m["reason"] is None
    m = ca.min_detectable([0.8, 0.65, 0.5], [0.3, 0.7, 0.9], stronger="smaller")  # RR: smaller is stronger
    assert m["effect"] == pytest.approx(0.65 - 0.1 / 0.2 * 0.15)
    assert ca.min_detectable([0.25, 0.5], [0.1, 0.3])["effect"] is None
    assert "not reached" in ca.min_detectable([0.25, 0.5], [0.1, 0.3])["reason"]


def test_calibration_text_has_no_python_words():
    lv = {"power": [{"strength": 0.5, "rate": 0.92, "ci": [0.85, 0.96], "n": 100}],
          "worst_false_supported": {"scenario": "independent", "rate": 0.03, "ci": [0.01, 0.08], "n": 100},
          "min_detectable": {"effect": 0.62, "reason": None}}
    t = ca.calibration_text(lv, "refractory relative risk", "at the last checkpoint")
    assert "92% of 100 runs" in t and "3% of 100 runs" in t and "0.62" in t
    assert not any(w in t for w in ("None", "nan", "True", "False"))
    lv["power"][0]["ci"] = [0.00001, 0.2]
    lv["min_detectable"] = {"effect": 0.8, "reason": "already reached at the weakest simulated effect"}
    t = ca.calibration_text(lv, "refractory relative risk", "at the last checkpoint")
    assert "95% CI under 0.1% to 20%" in t and "80% power already at the weakest simulated effect, 0.8" in t


# --------------------------------------------------------------------------- synthetic truth

def test_spelling_truths_have_their_planted_strength():
    tb = tables(n_samples=400, rate=0.3)[0]
    base = ca.base_logits(tb["word_start"], tb["word_len"], tb["word_mis"], tb["length"])
    samp, N, rng = tb["word_sample"], tb["n_samples"], np.random.default_rng(1)
    ind = ca.simulate_flags(samp, base, N, 50, rng)
    assert ind.mean() == pytest.approx(special.expit(base).mean(), abs=0.005)

    def pooled_rr(flags):
        t = np.array([sum(a.sum() for a in sp._pair_counts(samp, f, N)[k:k + 1]) for f in flags for k in range(4)])
        t = t.reshape(len(flags), 4).sum(axis=0)
        return (t[0] / t[1]) / (t[2] / t[3])

    assert pooled_rr(ind) == pytest.approx(1.0, abs=0.04)
    # refractory RR 0.5 (relative to the base probability; the base rate is constant here)
    assert pooled_rr(ca.simulate_flags(samp, base, N, 50, rng, kind="refractory", strength=0.5)) == \
        pytest.approx(0.5, abs=0.04)
    # Markov +1 on the log-odds: RR = expit(b + 1) / expit(b) at a constant base
    b = base[0]
    assert pooled_rr(ca.simulate_flags(samp, base, N, 50, rng, kind="markov", strength=1.0)) == \
        pytest.approx(special.expit(b + 1) / special.expit(b), abs=0.05)
    # propensity: the misspelled counts are overdispersed against independence
    prop = ca.simulate_flags(samp, base, N, 20, rng, kind="propensity", strength=0.5)
    f_prop = np.mean([sp.dispersion(np.bincount(samp[f], minlength=N), n_boot=0)["fano"] for f in prop])
    f_ind = np.mean([sp.dispersion(np.bincount(samp[f], minlength=N), n_boot=0)["fano"] for f in ind[:20]])
    assert f_prop > f_ind + 0.1


def _chained_word_by_word(samp, base, R, rng, kind, strength):
    """The sequential truths drawn word by word (the reference of the vectorised draw): one block of
    uniforms per rank of a word within its sample, word k from word k - 1's outcome."""
    rank = np.arange(samp.size) - np.searchsorted(samp, samp, side="left")
    out = np.zeros((R, samp.size), dtype=bool)
    for k in range(int(rank.max(initial=-1)) + 1):
        idx = np.flatnonzero(rank == k)
        u = rng.random((R, idx.size))
        prev = out[:, idx - 1] if k else np.zeros((R, idx.size), bool)
        if kind == "markov":
            p = special.expit(base[idx][None, :] + strength * prev)
        else:
            p = special.expit(base[idx])[None, :] * np.where(prev, strength, 1.0)
        out[:, idx] = u < p
    return out


@pytest.mark.parametrize("kind, strength", [("markov", 1.0), ("markov", -0.7), ("refractory", 0.5),
                                            ("refractory", 1.6)])
def test_sequential_truths_equal_their_word_by_word_draw(kind, strength):
    g = np.random.default_rng(3)
    for trial in range(40):
        N = int(g.integers(1, 30))
        samp = np.repeat(np.arange(N), g.integers(0, 25, N))
        base = g.normal(-1.0, 1.5, samp.size)
        R = int(g.integers(1, 4))
        got = ca.simulate_flags(samp, base, N, R, np.random.default_rng(trial), kind=kind, strength=strength)
        ref = _chained_word_by_word(samp, base, R, np.random.default_rng(trial), kind, strength)
        assert got.shape == ref.shape and (got == ref).all()


def test_planted_factor_gives_its_excess():
    from gptwaves.analysis import waves as wv

    rng = np.random.default_rng(0)
    S, T, C = 16, 200, 24
    phi = rng.uniform(0.3, 0.8, C)
    sigma = ca.floor_sigma(phi, S * T)
    target = 0.05
    ex = []
    for _ in range(4):
        x0 = ca.ar1_waves(S, T, phi, rng)
        x1 = ca.add_factor(ca.ar1_waves(S, T, phi, rng), ca.rho_for_excess(target, sigma), rng)
        m = [wv.order_parameters(wv.correlation_matrix(x))["mean_abs_corr"] for x in (x0, x1)]
        ex.append(m[1] - m[0])
    assert np.mean(ex) == pytest.approx(target, rel=0.3)


# --------------------------------------------------------------------------- engines and rules

def test_known_size_fast_engine_and_broken_rule(monkeypatch):
    """iid flags (one error rate for every word): the stratified and within-sample permutation
    tests are exact, so claims 2 and 3 "beyond the null" (one direction of a two-sided test at
    0.05) have size about 0.025. With plan()'s 181 replicates a size-0.05 rule fails the bound
    below with p < 0.01 (sizecheck); measured: 5 and 4 of 181 at seed 0 (seeds 1, 2: 3/6, 4/5)."""
    tpl = template(n_perm=300)
    p = plan()
    v = run_scenario(tpl, "independent", p.n)
    for cid in (2, 3):
        k = count(v, cid, "beyond_null")
        assert p.ok(k), p.describe(k)
        assert k <= stats.binom.ppf(0.995, p.n, 0.025)
    # a broken rule (always "supported") is caught: its size comes out 100%
    from gptwaves.stages import summary as summ

    def broken(waves, spelling):
        part = {"verdict": "supported", "text": ""}
        from gptwaves.analysis import claims as cl
        return {"claims": [cl.claim(i, "broken", part, part) for i in (1, 2, 3, 4, 5)]}

    monkeypatch.setattr(summ, "findings_from", broken)
    vb = run_scenario(tpl, "independent", 20)
    res = cs.summarise({"spelling:independent": {"verdicts": vb, "seconds": 0}},
                       cs.CalibrationSettings(replicates=20), {"spelling": tpl})
    for cid in ("2", "3", "5"):
        w = res["claims"][cid]["beyond_null"]["false_supported"][0]
        assert w["scenario"] == "independent" and w["rate"] == 1.0 and w["k"] == 20


def test_fast_engine_matches_exact_engine():
    """The fast engine (permutation nulls shared across replicates, moved by the closed-form
    centre) gives the same per-checkpoint p-values as the exact engine within Monte Carlo noise,
    on a planted cascade and on independent errors with a length-dependent rate."""
    tpl = template(n_perm=400, n_boot=0, const=False, n_samples=120)
    settings = cs.CalibrationSettings(seed=3)
    shared = cs._shared_nulls(tpl, settings)
    rng = np.random.default_rng(5)
    diffs, agree = [], []
    for kind, s in (("independent", 0.0), ("markov", 0.7)):
        for i, ck in enumerate(tpl["checkpoints"]):
            flags = ca.simulate_flags(ck["word_sample"], ck["base_logit"], ck["n_samples"], 6, rng, kind=kind,
                                      strength=s)
            for mis in flags:
                args = (ck["word_sample"], ck["word_start"], ck["word_len"], mis, ck["n_samples"], ck["length"])
                ex = sp.analyze_words(*args, n_boot=0, n_perm=400, seed=0, windows=[])
                with shared[i].injected():
                    fa = sp.analyze_words(*args, n_boot=0, n_perm=400, seed=0, windows=[])
                pairs = [(ex["decomposition"][w]["p_value"], fa["decomposition"][w]["p_value"])
                         for w in ("correct", "misspelled")] + [(ex["cascade"]["p_value"], fa["cascade"]["p_value"])]
                for a, b in pairs:
                    if a is not None and b is not None:
                        diffs.append(abs(a - b))
                        agree.append((a < 0.05) == (b < 0.05))
    assert len(diffs) > 80
    assert np.median(diffs) < 0.05
    assert np.mean(agree) > 0.9


def test_planted_effect_power_matches_exact_simulation():
    """Power of claim 2 "beyond the null" (correct counts more regular than the reference) against
    refractory errors (RR 0.5 at the last checkpoint): the fast engine's calibration against the
    same rule simulated with the exact per-replicate analysis (the stage's own statistics)."""
    tpl = template(n_perm=200, n_boot=0, n_samples=150, rate=0.35)
    fast = run_scenario(tpl, "refractory 0.5 rise", 60)
    exact = run_scenario(tpl, "refractory 0.5 rise", 30, engine="exact", seed=7)
    kf, ke = count(fast, 2, "beyond_null"), count(exact, 2, "beyond_null")
    lo, hi = ca.mc_rate(ke, 30)["ci"]
    assert lo - 0.1 <= kf / 60 <= hi + 0.1, (kf, ke)
    assert kf / 60 > 0.2  # found far more often than the rule's size (about 0.025); measured 25/60 and 14/30


# --------------------------------------------------------------------------- the stage on a tiny run

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synthetic_text):
    import torch

    from gptwaves.api import RecordSettings, SamplingConfig, SpellingSettings, WavesSettings
    from gptwaves.config import TrainConfig
    from gptwaves.corpus import Corpus
    from gptwaves.stages.common import ModelSource
    from gptwaves.stages.spelling import spelling_run
    from gptwaves.stages.waves import waves_run
    from gptwaves.train import train

    root = tmp_path_factory.mktemp("calib")
    cp = root / "corpus.txt"
    cp.write_text(synthetic_text, encoding="utf-8")
    run_dir = root / "run"
    cfg = TrainConfig(preset="test", n_layer=1, n_head=2, n_embd=16, block_size=24, dropout=0.0, batch_size=8,
                      learning_rate=1e-2, min_lr=1e-2, max_iters=20, eval_iters=2, log_interval=5,
                      state_interval=10, progress=False, device="cpu", checkpoints=(0, 10, 20))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, Corpus.load(cp), run_dir)
        spelling_run(run_dir, "all", SpellingSettings(samples=40, n_boot=20, n_perm=50, margin=4, batch_size=20,
                                                      sampling=SamplingConfig(seed=1)),
                     ModelSource(corpus=cp), progress=False, figures=False)
        waves_run(run_dir, "all", WavesSettings(nlags=8, window=3, n_surrogates=19, min_events=5),
                  record=RecordSettings(samples=4, steps=40, batch_size=4), progress=False, figures=False)
    finally:
        torch.set_num_threads(n)
    return run_dir


def test_calibrate_command_writes_resumes_and_reports(tiny_run, tmp_path, capsys):
    from gptwaves.cli import main
    from gptwaves.stages.report import build_report
    from gptwaves.stages.summary import write_summary

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns(".lock"))
    args = ["calibrate", "--run", str(run_dir), "--replicates", "3", "--coherence-replicates", "1", "--quiet"]
    args += [x for name in [*cs.SPELLING_SCENARIOS, "independent", "factor 0.05 rise", "space 2 rise"]
             for x in ("--scenario", name)]  # coherence: three scenarios (each replicate is a full wave analysis)
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "claim 2, beyond the null:" in out and "claim 1, as stated:" in out
    cal = json.loads((run_dir / "calibration" / "calibration.json").read_text())
    assert set(cal["claims"]) == {"1", "2", "3", "4", "5"}
    reps = sorted((run_dir / "calibration" / "replicates").glob("*.json"))
    assert len(reps) == len(cs.SPELLING_SCENARIOS) + 3
    first = json.loads(reps[0].read_text())
    assert first["done"] == len(first["verdicts"]) and first["settings"]["seed"] == 0
    stamps = {p: p.stat().st_mtime_ns for p in reps}
    sp_file = run_dir / "calibration" / "replicates" / "spelling.independent.json"
    before = json.loads(sp_file.read_text())
    # a re-run reuses every replicate file; more replicates extend them
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in reps} == stamps
    assert main(args[:4] + ["5"] + args[5:] + ["--only", "spelling"]) == 0
    assert main(args[:-1] + ["no such scenario"]) != 0  # one line, nothing written
    again = json.loads(sp_file.read_text())
    assert again["done"] == 5 and again["verdicts"][:3] == before["verdicts"]
    capsys.readouterr()
    # summary.json and the report carry it next to each verdict
    write_summary(run_dir)
    summ = json.loads((run_dir / "summary.json").read_text())
    assert summ["calibration"]["current"] is True
    assert "runs" in summ["calibration"]["claims"]["2"]["beyond_null"]["text"]
    html = (build_report(run_dir)).read_text()
    assert 'class="calibration"' in html


def test_calibrate_without_results_is_one_line(tmp_path, capsys):
    from gptwaves.cli import main

    (tmp_path / "empty").mkdir()
    code = main(["calibrate", "--run", str(tmp_path / "empty"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("gptwaves: error:") and len(err.strip().splitlines()) == 1


def test_calibrate_bench_tiny():
    from gptwaves import bench

    rows = bench.run("calibrate", n_samples=30, steps=30, channels=6, spelling_replicates=2, iterations=(0, 100),
                     raise_errors=True)
    assert len(rows) == 3
    for r in rows:
        assert r["value"] > 0 and r["unit"] == "s" and r["bench"] == "calibrate"
    assert rows[0]["baseline"] > 0 and rows[0]["ratio"] == pytest.approx(rows[0]["value"] / rows[0]["baseline"])


def _stop_after(n: int):
    """A `runtime.graceful_stop` stand-in whose stop flag turns true at its (n + 1)-th reading."""
    import contextlib

    class StopAfter:
        def __init__(self, n):
            self.n = n

        def __bool__(self):
            self.n -= 1
            return self.n < 0

    @contextlib.contextmanager
    def stop():
        yield StopAfter(n)

    return stop


def _resumed_equals_fresh(tiny_run, tmp_path, run_dir, settings) -> None:
    """Resume the interrupted calibration of ``run_dir``; it equals one run from scratch on a fresh copy."""
    resumed = cs.calibrate_run(run_dir, settings, progress=False)
    fresh_dir = tmp_path / "fresh"
    shutil.copytree(tiny_run, fresh_dir, ignore=shutil.ignore_patterns(".lock"))
    assert resumed["claims"] == cs.calibrate_run(fresh_dir, settings, progress=False)["claims"]


def test_interrupted_calibration_resumes_with_the_same_numbers(tiny_run, tmp_path, monkeypatch):
    from gptwaves import runtime

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns(".lock"))
    settings = cs.CalibrationSettings(replicates=4, chunk=2, groups=("spelling",),
                                      scenarios=("independent", "propensity 0.3", "markov 1 rise"))
    monkeypatch.setattr(runtime, "graceful_stop", _stop_after(3))  # three chunks
    with pytest.raises(runtime.Interrupted):
        cs.calibrate_run(run_dir, settings, progress=False)
    files = sorted((run_dir / "calibration" / "replicates").glob("*.json"))
    assert [json.loads(p.read_text())["done"] for p in files] == [4, 2]  # two chunks, then one of the next
    assert not (run_dir / "calibration" / "calibration.json").exists()
    monkeypatch.undo()
    _resumed_equals_fresh(tiny_run, tmp_path, run_dir, settings)


def test_interrupted_coherence_calibration_resumes_with_the_same_numbers(tiny_run, tmp_path, monkeypatch):
    """The coherence scenarios run a replicate at a time, all of them on the same base draws; a stop in
    the middle of a chunk keeps every scenario at its last finished chunk, and the resumed calibration
    equals an uninterrupted one."""
    from gptwaves import runtime

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns(".lock"))
    settings = cs.CalibrationSettings(coherence_replicates=3, chunk=2, groups=("coherence",),
                                      scenarios=("independent", "factor 0.05 rise"))
    # the first chunk (2 replicates x 2 scenarios), then one scenario of replicate 2
    monkeypatch.setattr(runtime, "graceful_stop", _stop_after(5))
    with pytest.raises(runtime.Interrupted):
        cs.calibrate_run(run_dir, settings, progress=False)
    files = sorted((run_dir / "calibration" / "replicates").glob("*.json"))
    assert [json.loads(p.read_text())["done"] for p in files] == [2, 2]
    assert "shared by every scenario" in json.loads(files[0].read_text())["seeds"]["rule"]
    monkeypatch.undo()
    _resumed_equals_fresh(tiny_run, tmp_path, run_dir, settings)
    assert [json.loads(p.read_text())["done"] for p in files] == [3, 3]


@pytest.mark.parametrize("group, threshold, stops, done", [
    ("coherence", "PROCESS_MIN_ELEMENTS", 2, [2, 2]),  # after the shared nulls and replicate 1 no stop; after 2
    ("spelling", "SPELLING_PROCESS_MIN", 3, [4, 2]),  # three chunks stored, then stop
])
def test_replicates_in_worker_processes_equal_the_sequential_ones(tiny_run, tmp_path, monkeypatch, group, threshold,
                                                                 stops, done):
    """Replicates side by side in worker processes (`gptwaves.workers`, used on large runs with more
    than one core; forced here on the tiny run): whole coherence replicates, or spelling chunks
    stored in their order, give the verdicts of one after another; a stop keeps every finished
    chunk, and the resumed calibration equals the uninterrupted sequential one."""
    from gptwaves import runtime

    settings = cs.CalibrationSettings(replicates=4, coherence_replicates=3, chunk=2, groups=(group,),
                                      scenarios=("independent", "factor 0.05 rise" if group == "coherence"
                                                 else "markov 1 rise"))
    seq_dir = tmp_path / "seq"
    shutil.copytree(tiny_run, seq_dir, ignore=shutil.ignore_patterns(".lock"))
    sequential = cs.calibrate_run(seq_dir, settings, progress=False)
    monkeypatch.setattr(cs, threshold, 0)
    monkeypatch.setattr(cs, "cores", lambda: 2)
    pools = []
    monkeypatch.setattr(cs, "WorkerPool", lambda *a, _pool=cs.WorkerPool: pools.append(a[-1]) or _pool(*a))
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns(".lock"))
    with monkeypatch.context() as m:
        m.setattr(runtime, "graceful_stop", _stop_after(stops))
        with pytest.raises(runtime.Interrupted):
            cs.calibrate_run(run_dir, settings, progress=False)
    files = sorted((run_dir / "calibration" / "replicates").glob("*.json"))
    assert [json.loads(p.read_text())["done"] for p in files] == done and pools == [2]
    pooled = cs.calibrate_run(run_dir, settings, progress=False)  # one chunk or replicate left: here
    assert pooled["claims"] == sequential["claims"]
    for p in files:
        assert json.loads(p.read_text())["verdicts"] == \
            json.loads((seq_dir / "calibration" / "replicates" / p.name).read_text())["verdicts"]


def test_worker_processes_that_fail_leave_the_work_to_this_process(tiny_run, tmp_path, monkeypatch):
    """Worker processes that cannot start (e.g. a script without the ``if __name__ == "__main__":``
    guard spawned processes need) cost a warning, not the calibration: it goes on in this process
    with the same numbers."""
    from concurrent.futures.process import BrokenProcessPool

    class Broken:
        workers = 2

        def __init__(self, *a):
            pass

        def submit(self, *a):
            raise BrokenProcessPool("a child process terminated abruptly")

        def map(self, *a):
            raise BrokenProcessPool("a child process terminated abruptly")

        def close(self, abort=False):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    settings = cs.CalibrationSettings(replicates=4, coherence_replicates=2, chunk=2,
                                      scenarios=("independent", "factor 0.05 rise"))
    seq_dir = tmp_path / "seq"
    shutil.copytree(tiny_run, seq_dir, ignore=shutil.ignore_patterns(".lock"))
    sequential = cs.calibrate_run(seq_dir, settings, progress=False)
    for name in ("SPELLING_PROCESS_MIN", "PROCESS_MIN_ELEMENTS"):
        monkeypatch.setattr(cs, name, 0)
    monkeypatch.setattr(cs, "cores", lambda: 2)
    monkeypatch.setattr(cs, "WorkerPool", Broken)
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns(".lock"))
    with pytest.warns(UserWarning, match="worker processes failed.*continuing in this process") as rec:
        got = cs.calibrate_run(run_dir, settings, progress=False)
    assert len([w for w in rec if "worker processes failed" in str(w.message)]) == 2  # spelling, coherence
    assert got["claims"] == sequential["claims"]


def test_coherence_scenarios_share_taps_of_equal_truth():
    from gptwaves.bench.calibrate import waves_checkpoints
    from gptwaves.stages.waves import WavesSettings

    tpl = cs.make_waves_template(waves_checkpoints(4, 40, 6, iterations=(0, 100)), "blocks.5.hook_resid_post",
                                 "hook_embed", WavesSettings(nlags=8, window=3, min_events=5).to_dict())
    settings = cs.CalibrationSettings()
    cache: dict = {}
    a = cs.coherence_chunk(tpl, "independent", 0, 1, settings, cache)
    assert len(cache) == 4  # 2 checkpoints x (focus, input)
    cs.coherence_chunk(tpl, "factor 0.05 rise", 0, 1, settings, cache)
    assert len(cache) == 5  # only the focus tap after the first checkpoint differs
    assert cs.coherence_chunk(tpl, "independent", 0, 1, settings) == a  # the same draws without the cache


@pytest.mark.parametrize("preset, args, groups, coherence", [
    ("quick", [], ("spelling", "coherence"), 40),  # every rule where verdicts are read
    ("paper", [], ("spelling", "coherence"), 40),
    ("paper", ["--calibrate-coherence", "0"], ("spelling", "coherence"), 0),  # the stage then skips coherence
    ("quick", ["--no-calibrate"], None, None),
    ("smoke", [], None, None),
    ("smoke", ["--calibrate"], ("spelling",), 40),
    ("smoke", ["--calibrate-coherence", "5"], ("spelling", "coherence"), 5),
])
def test_reproduce_calibration_defaults_and_flags(preset, args, groups, coherence, monkeypatch, tmp_path):
    """What `reproduce` calibrates by default (docs/method.md, Calibration, "Where it runs") and what
    its flags change: the settings handed to the pipeline (no run)."""
    from click.testing import CliRunner

    from gptwaves import reproduce as rp
    from gptwaves.cli import cli

    seen = {}

    def fake(preset_name, corpus, out, train_overrides=None, analysis=None, **kw):
        seen["cal"] = analysis.calibration
        return {"findings": {"claims": []}}

    monkeypatch.setattr(rp, "reproduce", fake)
    res = CliRunner().invoke(cli, ["reproduce", "--preset", preset, "--out", str(tmp_path / "r"), "--quiet", *args])
    assert res.exit_code == 0, res.output
    cal = seen["cal"]
    if groups is None:
        assert cal is None
    else:
        assert cal.groups == groups and cal.coherence_replicates == coherence


def test_a_kept_call_is_reused_only_for_the_same_arrays():
    from gptwaves.stages.calibration_truth import _last_call_kept

    calls = []
    kept = _last_call_kept(lambda a, n, start=None: calls.append(1) or float(a.sum()) + n)
    a = np.arange(5.0)
    assert kept(a, 2, start=a) == kept(a, 2, start=a) == 12.0 and len(calls) == 1
    assert kept(a.copy(), 2, start=a) == 12.0 and len(calls) == 2  # equal values, another array
    assert kept(a, 3, start=a) == 13.0 and len(calls) == 3
    assert kept(a, 3) == 13.0 and len(calls) == 4  # another set of keywords
