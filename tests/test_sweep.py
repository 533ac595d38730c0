"""``gptwaves sweep`` end to end on tiny members: settings, resume, --member, --collect, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptwaves.cli import main
from gptwaves.config import preset
from gptwaves.errors import GptwavesError
from gptwaves.reproduce import AnalysisSettings
from gptwaves.stages.waves import WavesSettings
from gptwaves.sweep import SweepSettings, collect, parse_vary, run_sweep

from conftest import make_text

# the smallest analysis that runs every stage: two taps, a few samples and surrogates
TINY = AnalysisSettings(record_samples=6, record_steps=24, spelling_samples=24, repeat_seeds=1,
                        record_taps=("hook_embed", "blocks.1.hook_resid_post"),
                        waves=WavesSettings(n_surrogates=3, nlags=8))


def settings(**kw) -> SweepSettings:
    base = dict(preset="smoke", vary="n_embd", values=(8, 16, 32), train_overrides={"max_iters": 5},
                analysis=TINY, n_boot=20)
    return SweepSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("corpus") / "c.txt"
    p.write_text(make_text(30000, seed=5))
    return p


@pytest.fixture(scope="module")
def swept(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("sweep") / "s"
    # the members' own figures are drawn and tested with every run elsewhere; here they would be
    # two thirds of the fixture's time. Collecting again draws the sweep's figures.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTWAVES_FIGURES", "none")
        run_sweep(settings(), out, corpus, progress=False, device="cpu")
    entry = collect(settings(), out, progress=False)
    return out, entry


def test_parse_vary():
    base = preset("quick")
    assert parse_vary("n_embd=32,64", base) == ("n_embd", (32, 64))
    assert parse_vary("learning-rate=1e-3,2e-3", base) == ("learning_rate", (1e-3, 2e-3))
    for bad in ("n_embd", "n_embd=32", "n_embd=32,32", "n_embd=32,x", "learning_rate=1,nan",
                "checkpoints=1,2", "colour=1,2", "n_embd=,4", "log_interval=1,2"):
        with pytest.raises(GptwavesError):
            parse_vary(bad, base)


def test_every_member_is_checked_before_any_work(tmp_path):
    with pytest.raises(GptwavesError, match="not divisible"):
        settings(values=(8, 9))  # smoke has 2 heads: n_embd 9 is refused up front
    assert not (tmp_path / "s").exists()


def test_sweep_outputs(swept):
    out, entry = swept
    assert [m["name"] for m in entry["members"]] == ["n_embd=8", "n_embd=16", "n_embd=32"]
    for m in entry["members"]:
        assert (out / m["report"]).is_file()  # each member is a normal run with its own report
        assert m["iterations"] == [0, 1, 2, 3, 5]  # the dense early schedule
        c = m["curves"]["coherence_excess"]
        assert len(c["curve"]) == 5 and len(c["susceptibility"]) == 5
        assert set(c) >= {"change_point", "location", "width", "height", "chi_peak_coincides"}
        assert "replicates" not in c
    summ = json.loads((out / "summary.json").read_text())
    assert summ["format"] == "gptwaves-sweep" and summ["sweep"]["verdict"]["verdict"] in (
        "sharpens with size (transition-like)", "does not sharpen (crossover)", "inconclusive")
    assert set(summ["sweep"]["scaling"]["coherence_excess"]) == {"location", "width", "height"}
    page = (out / "sweep" / "index.html").read_text()
    assert "Is it a phase transition?" in page
    for m in entry["members"]:
        assert f'href="../{m["report"]}"' in page
    assert (out / "sweep" / "curves.png").stat().st_size > 1000


def test_rerun_reuses_members_and_collect_is_repeatable(swept, corpus):
    out, entry = swept
    before = {m["name"]: (out / m["run"] / "summary.json").stat().st_mtime_ns for m in entry["members"]}
    again = collect(settings(), out, progress=False)
    assert again["scaling"] == json.loads(json.dumps(entry["scaling"]))
    rc = main(["sweep", "--preset", "smoke", "--vary", "n_embd=8,16,32", "--max-iters", "5",
               "--out", str(out), "--member", "1", "--quiet", "--corpus", str(corpus),
               "--record-samples", "6", "--record-steps", "24", "--spelling-samples", "24"])
    # the CLI's analysis sizes differ from the fixture's (surrogates, lags), so it is another sweep
    assert rc != 0
    after = {m["name"]: (out / m["run"] / "summary.json").stat().st_mtime_ns for m in entry["members"]}
    assert after == before  # nothing was touched by the refused call


def test_a_different_sweep_in_the_same_folder_is_refused(swept):
    out, _ = swept
    with pytest.raises(GptwavesError, match="different sweep"):
        collect(settings(values=(8, 16)), out, progress=False)


def test_collect_before_members_finish_says_which(tmp_path):
    with pytest.raises(GptwavesError, match="n_embd=8 is not finished"):
        collect(settings(), tmp_path / "empty", progress=False)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["sweep", "--vary", "n_embd=32", "--out", str(tmp_path / "x")]) != 0
    assert main(["sweep", "--vary", "n_embd=32,64", "--member", "0", "--collect", "--out", str(tmp_path / "x")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("gptwaves: error:") for e in err)


def test_parallel_members_start_as_soon_as_a_slot_frees(capsys):
    """With ``--jobs``, the next member starts in the first slot that frees: a long member does not
    hold back the short ones behind it; failed members are reported, the others still run."""
    import subprocess
    import sys

    from gptwaves.sweep import _run_each

    sleep = {0: 5.0, 1: 0.1, 2: 0.1, 3: 0.1}
    procs, slots, long_running = {}, {}, {}

    def start(k, slot):
        slots[k] = slot
        if k:  # is the long member still running when this one starts?
            long_running[k] = procs[0].poll() is None
        code = 1 if k == 2 else 0
        procs[k] = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({sleep[k]}); raise SystemExit({code})"])
        return procs[k]

    failed = _run_each(4, 2, start, progress=True, poll=0.05)
    assert failed == [2]
    assert long_running == {1: True, 2: True, 3: True}  # all short ones ran beside the long one
    assert slots[0] == 0 and {slots[k] for k in (1, 2, 3)} == {1}
    err = capsys.readouterr().err
    assert "sweep: member 3/4 failed" in err and "sweep: member 1/4 finished" in err


def test_parallel_members_log_their_progress_and_the_sweep_repeats_it(tmp_path, capsys, monkeypatch):
    """``sweep --jobs``: each member's progress and errors go to OUT/members/NAME.log, the sweep
    repeats the last line of every running member's log, and a failure names the log to read."""
    import subprocess
    import sys

    from gptwaves import sweep as sw
    from gptwaves.errors import GptwavesError

    s = settings()
    names = [n for n, _ in s.members()]
    script = ("import sys, time\n"
              "k = int(sys.argv[sys.argv.index('--member') + 1])\n"
              "for i in range(3):\n"
              "    print(f'train: {i}/3 it', file=sys.stderr, flush=True); time.sleep(0.3)\n"
              "if k == 1:\n"
              "    print('gptwaves: error: planted failure', file=sys.stderr); raise SystemExit(1)\n")
    real = subprocess.Popen

    def fake(cmd, **kw):  # the member's command line, run by a stand-in that logs like a member
        return real([sys.executable, "-c", script, *cmd[cmd.index("--member"):]], **kw)

    monkeypatch.setattr(sw.subprocess, "Popen", fake)
    monkeypatch.setattr(sw, "REPORT_EVERY", 0.2)
    with pytest.raises(GptwavesError, match="planted|log") as e:
        sw._run_parallel(s, tmp_path, 2, [], True)
    assert str(sw.member_log(tmp_path, names[1])) in str(e.value)
    assert "planted failure" in sw.member_log(tmp_path, names[1]).read_text()
    assert "train: 2/3 it" in sw.member_log(tmp_path, names[0]).read_text()
    err = capsys.readouterr().err
    assert f"sweep: {names[0]} (member 1/{len(names)}): train: " in err  # the repeated progress line
    assert f"progress in {sw.member_log(tmp_path, names[0])}" in err
