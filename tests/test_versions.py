"""The one reuse rule (docs/method.md, Reuse of earlier results): an output is reused only when its
analysis version, settings and input checksums match; an output written by an older version (a
different number, or none at all, as every output before versions existed) is recomputed.

Each stage test plants a sentinel number in a finished output (one its validator accepts), then
shows that (a) with the current version the sentinel comes back (the output is reused, so the
sentinel would survive if versions were ignored), and (b) with no version, an older version, or
after the stage's version is bumped, the stage computes the real number again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gptwaves import versions
from gptwaves.versions import STAGE_VERSIONS, analysis_version, is_current, reusable, stamp

from conftest import torch_threads

pytestmark = pytest.mark.usefixtures("one_thread_module")

SENTINEL = 0.123456789


def _edit(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def _as_old(version):
    """An edit that makes an output look written by an older gptwaves (``None``: no version)."""
    def fn(obj):
        if version is None:
            obj.pop("analysis_version", None)
        else:
            obj["analysis_version"] = version
    return fn


OLD = [pytest.param(None, id="no-version"), pytest.param(0, id="older-version"),
       pytest.param("bumped", id="stage-version-bumped")]


def _apply_old(path: Path, old, stage: str, monkeypatch) -> None:
    if old == "bumped":  # the code moved on: the file keeps the number it was written with
        monkeypatch.setitem(STAGE_VERSIONS, stage, STAGE_VERSIONS[stage] + 1)
    else:
        _edit(path, _as_old(old))


# ------------------------------------------------------------------ the rule itself

def test_rule_on_files(tmp_path, monkeypatch):
    p = tmp_path / "out.json"
    assert reusable(p, "waves", {"a": 1}) is None  # missing
    p.write_text("{not json")
    assert reusable(p, "waves", {"a": 1}) is None  # unreadable
    p.write_text(json.dumps(stamp("waves", {"settings": {"a": 1}, "recording_sha256": "x", "v": 2})))
    assert reusable(p, "waves", {"a": 1}, recording_sha256="x")["v"] == 2
    assert json.loads(p.read_text())["analysis_version"] == analysis_version("waves")
    assert reusable(p, "waves", {"a": 2}, recording_sha256="x") is None  # other settings
    assert reusable(p, "waves", {"a": 1}, recording_sha256="y") is None  # other input

    def refuse(obj):
        from gptwaves.errors import CorruptArtefactError
        raise CorruptArtefactError("damaged")

    assert reusable(p, "waves", {"a": 1}, validate=refuse) is None
    monkeypatch.setitem(STAGE_VERSIONS, "waves", STAGE_VERSIONS["waves"] + 1)
    assert reusable(p, "waves", {"a": 1}, recording_sha256="x") is None  # older version
    _edit(p, _as_old(None))
    monkeypatch.undo()
    assert reusable(p, "waves", {"a": 1}, recording_sha256="x") is None  # no version
    assert not is_current({"analysis_version": True}, "waves") and not is_current([], "waves")


def test_every_stage_has_a_positive_integer_version():
    assert {"recordings", "texts", "waves", "spelling", "interventions", "calibration"} <= set(STAGE_VERSIONS)
    assert all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in STAGE_VERSIONS.values())
    with pytest.raises(KeyError, match="STAGE_VERSIONS"):
        versions.analysis_version("no such stage")


# ------------------------------------------------------------------ the stages

@pytest.fixture(scope="module")
def base_run(tmp_path_factory, corpus):
    from gptwaves.train import train

    from conftest import tiny_config

    run_dir = tmp_path_factory.mktemp("versions") / "run"
    with torch_threads(1):
        train(tiny_config(max_iters=20, checkpoints=(20,)), corpus, run_dir)
    return run_dir


@pytest.fixture
def run(base_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def _spelling(run):
    from gptwaves.api import SamplingConfig, SpellingSettings
    from gptwaves.stages.spelling import spelling_run

    s = SpellingSettings(samples=12, length=10, margin=4, n_boot=20, n_perm=10, batch_size=6,
                         sampling=SamplingConfig(seed=0))
    return spelling_run(run, "last", s, progress=False, figures=False)["checkpoints"][0]


@pytest.mark.parametrize("old", OLD)
def test_spelling_result_of_an_older_version_is_recomputed(run, old, monkeypatch):
    first = _spelling(run)
    assert first["analysis_version"] == analysis_version("spelling")
    path = run / "spelling" / "iter_0000020.json"
    # the planted number is one the loader does not cross-check (a p-value is recomputed from the
    # stored mean and variance on load, so a planted p would be refused, not reused)
    true_v = first["stats"]["cut_fraction"]
    assert true_v != SENTINEL
    _edit(path, lambda o: o["stats"].__setitem__("cut_fraction", SENTINEL))
    assert _spelling(run)["stats"]["cut_fraction"] == SENTINEL  # current version: reused
    _apply_old(path, old, "spelling", monkeypatch)
    again = _spelling(run)
    assert again["stats"]["cut_fraction"] == true_v  # recomputed, not the stale number
    assert json.loads(path.read_text())["analysis_version"] == analysis_version("spelling")


@pytest.mark.parametrize("old", OLD)
def test_generated_texts_of_an_older_version_are_generated_again(run, old, monkeypatch):
    _spelling(run)
    texts = run / "spelling" / "iter_0000020.samples.json"
    true_texts = json.loads(texts.read_text())["texts"]
    fake = ["\n" + "a" * (len(t) - 1) for t in true_texts]  # valid: prompt + length characters
    assert fake != true_texts
    _edit(texts, lambda o: o.__setitem__("texts", fake))
    (run / "spelling" / "iter_0000020.json").unlink()
    _spelling(run)
    assert json.loads(texts.read_text())["texts"] == fake  # current version: reused
    (run / "spelling" / "iter_0000020.json").unlink()
    _apply_old(texts, old, "texts", monkeypatch)
    _spelling(run)
    assert json.loads(texts.read_text())["texts"] == true_texts


def _waves(run):
    from gptwaves.api import RecordSettings, WavesSettings
    from gptwaves.stages.waves import waves_run

    return waves_run(run, "last", WavesSettings(n_surrogates=4, n_boot=10), record=RecordSettings(samples=4, steps=16),
                     progress=False, figures=False)["checkpoints"][0]


@pytest.mark.parametrize("old", OLD)
def test_waves_summary_of_an_older_version_is_recomputed(run, old, monkeypatch):
    first = _waves(run)
    tap = first["focus_tap"]
    true_v = first["taps"][tap]["mean_abs_corr"]
    path = run / "waves" / "iter_0000020" / "summary.json"
    _edit(path, lambda o: o["taps"][tap].__setitem__("mean_abs_corr", SENTINEL))
    assert _waves(run)["taps"][tap]["mean_abs_corr"] == SENTINEL  # current version: reused
    _apply_old(path, old, "waves", monkeypatch)
    assert _waves(run)["taps"][tap]["mean_abs_corr"] == true_v


@pytest.mark.parametrize("old", OLD)
def test_recording_of_an_older_version_is_recorded_again(run, old, monkeypatch):
    from gptwaves.api import RecordSettings
    from gptwaves.record import Recording
    from gptwaves.stages.recordings import record_run

    settings = RecordSettings(samples=3, steps=12, batch_size=2)
    path, = record_run(run, "last", settings, progress=False)
    side = path.with_suffix(".json")
    assert json.loads(side.read_text())["analysis_version"] == analysis_version("recordings")
    with Recording.open(path) as rec:
        tokens = rec.tokens()
    mtime = path.stat().st_mtime_ns
    record_run(run, "last", settings, progress=False)
    assert path.stat().st_mtime_ns == mtime  # current version: reused
    _apply_old(side, old, "recordings", monkeypatch)
    record_run(run, "last", settings, progress=False)
    assert path.stat().st_mtime_ns != mtime  # recorded again (same settings: same tokens)
    assert json.loads(side.read_text())["analysis_version"] == analysis_version("recordings")
    with Recording.open(path) as rec:
        assert (rec.tokens() == tokens).all()


def _intervene(run):
    from gptwaves.api import ModelSource, SamplingConfig, SpellingSettings
    from gptwaves.stages.interventions import intervene_run

    s = SpellingSettings(samples=10, length=10, margin=4, n_boot=20, n_perm=10, batch_size=5,
                         sampling=SamplingConfig(seed=0))
    return intervene_run(run, "last", "blocks.1.hook_resid_post", "0-3", "ablate", s, ModelSource(device="cpu"),
                         progress=False, figures=False)


@pytest.mark.parametrize("old", OLD)
def test_intervention_of_an_older_version_is_recomputed(run, old, monkeypatch):
    first = _intervene(run)
    path = first["path"]
    true_p = first["comparisons"]["edited_vs_baseline"]["error_rate"]["p_permutation"]
    _edit(path, lambda o: o["comparisons"]["edited_vs_baseline"]["error_rate"].__setitem__("p_permutation",
                                                                                              SENTINEL))
    again = _intervene(run)
    assert again["reused"] and again["comparisons"]["edited_vs_baseline"]["error_rate"]["p_permutation"] == SENTINEL
    _apply_old(path, old, "interventions", monkeypatch)
    fresh = _intervene(run)
    assert not fresh["reused"]
    assert fresh["comparisons"]["edited_vs_baseline"]["error_rate"]["p_permutation"] == true_p


@pytest.mark.parametrize("stage,rel", [("spelling", "spelling/iter_0000020.json"),
                                       ("waves", "waves/iter_0000020/summary.json")])
def test_summary_refuses_results_of_an_older_analysis(run, stage, rel):
    """A stage result left by an older version is never summarised: one line naming it and the
    command that recomputes it."""
    from gptwaves.errors import GptwavesError
    from gptwaves.stages.summary import build_summary

    _spelling(run) if stage == "spelling" else _waves(run)
    build_summary(run)  # current: fine
    _edit(run / rel, _as_old(None))
    with pytest.raises(GptwavesError, match=rf"without a version.*re-run `gptwaves {stage} --run") as e:
        build_summary(run)
    assert "\n" not in str(e.value)
    _edit(run / rel, _as_old(0))
    with pytest.raises(GptwavesError, match=rf"analysis version 0, the current is {analysis_version(stage)}"):
        build_summary(run)
