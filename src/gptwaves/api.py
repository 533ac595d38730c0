"""The stable Python API: the pipeline stages over a run directory and the readers of their outputs.

    from gptwaves import api
    api.train(api.preset("quick"), api.Corpus.load(path), "runs/quick")
    api.record_run("runs/quick", "all", api.RecordSettings(samples=64))
    api.waves_run("runs/quick")
    api.spelling_run("runs/quick", "all", api.SpellingSettings(samples=1000))
    api.write_summary("runs/quick"); api.build_report("runs/quick")

The analysis itself is pure numpy/scipy in :mod:`gptwaves.analysis` (``waves``, ``spelling``,
``intervention``, ``claims``); recordings are read lazily with :func:`open_recording`.
"""

from __future__ import annotations

from .config import TrainConfig, preset
from .corpus import Corpus
from .recording import Recording, open_recording
from .reproduce import ANALYSIS_PRESETS, AnalysisSettings, reproduce
from .sample import SamplingConfig
from .stages.common import ModelSource, focus_tap, select_checkpoints
from .stages.interventions import intervene_run
from .stages.recordings import RecordSettings, record_run, record_variants
from .stages.report import build_report
from .stages.spelling import SpellingSettings, spelling_run
from .stages.summary import build_summary, write_summary
from .stages.waves import WavesSettings, waves_run
from .train import train

__all__ = [
    "TrainConfig", "preset", "Corpus", "train",
    "SamplingConfig", "ModelSource", "RecordSettings", "WavesSettings", "SpellingSettings",
    "AnalysisSettings", "ANALYSIS_PRESETS",
    "select_checkpoints", "focus_tap",
    "record_run", "record_variants", "waves_run", "spelling_run", "intervene_run",
    "build_summary", "write_summary", "build_report", "reproduce",
    "Recording", "open_recording",
]
