"""What the calibration simulates and how it judges (docs/method.md, "Calibration"): its settings,
the synthetic scenarios and which claim each calibrates, the fingerprint of the rules, and the
adapters that turn a synthetic run into the stage results the summary's verdict entry point
(`gptwaves.stages.summary.findings_from`) reads. Re-exported by `gptwaves.stages.calibration`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CalibrationSettings", "SPELLING_SCENARIOS", "COHERENCE_SCENARIOS", "SPACE_CHANNELS", "CLAIM_PLAN",
           "LEVELS", "rules_fingerprint", "spelling_findings", "waves_findings"]


@dataclass(frozen=True)
class CalibrationSettings:
    """Settings of the calibration (docs/method.md, "Calibration").

    ``replicates``: synthetic runs per spelling scenario; ``coherence_replicates``: per coherence
    scenario (each is a full wave analysis of every checkpoint, so they cost far more);
    ``engine``: ``"fast"`` (the spelling permutation nulls and the coherence surrogate laws and
    red-noise null shared across replicates, and only what the verdicts read computed; see the
    method page) or ``"exact"`` (every replicate analysed exactly as the spelling and waves stages do);
    ``chunk``: replicates per saved step; ``groups``: which claim groups to calibrate;
    ``scenarios``: only these scenarios (names of `SPELLING_SCENARIOS` / `COHERENCE_SCENARIOS`;
    None: all), e.g. to bound the cost of the coherence rules at large sizes.
    """

    replicates: int = 100
    coherence_replicates: int = 40
    engine: str = "fast"
    seed: int = 0
    chunk: int = 10
    groups: tuple[str, ...] = ("spelling", "coherence")
    scenarios: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        from ..config import check_choice, check_int

        check_int("replicates", self.replicates, 1, 10**6)
        check_int("coherence-replicates", self.coherence_replicates, 0, 10**6)
        check_choice("engine", self.engine, ("fast", "exact"))
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_int("chunk", self.chunk, 1, 10**6)
        for g in self.groups:
            check_choice("group", g, ("spelling", "coherence"))
        for name in self.scenarios or ():
            check_choice("scenario", name, (*SPELLING_SCENARIOS, *COHERENCE_SCENARIOS))

    def replace(self, **kw) -> "CalibrationSettings":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: name -> (kind, strength, shape across checkpoints) of `analysis.calibration.simulate_flags`.
SPELLING_SCENARIOS: dict[str, tuple[str, float, str]] = {
    "independent": ("independent", 0.0, "constant"),
    "propensity 0.3": ("propensity", 0.3, "constant"),
    "propensity 0.5": ("propensity", 0.5, "constant"),
    "markov 1 constant": ("markov", 1.0, "constant"),
    "markov 0.25 rise": ("markov", 0.25, "rise"),
    "markov 0.5 rise": ("markov", 0.5, "rise"),
    "markov 1 rise": ("markov", 1.0, "rise"),
    "markov 0.25 fall": ("markov", 0.25, "fall"),
    "markov 0.5 fall": ("markov", 0.5, "fall"),
    "markov 1 fall": ("markov", 1.0, "fall"),
    "refractory 0.8 rise": ("refractory", 0.8, "rise"),
    "refractory 0.65 rise": ("refractory", 0.65, "rise"),
    "refractory 0.5 rise": ("refractory", 0.5, "rise"),
}


#: name -> planted structure of the focus tap (and of the input tap when ``input`` is True):
#: ``excess`` of mean |R| from a common factor, shared ``gain`` SD, ``space`` Cohen's d of a
#: next-space response in `SPACE_CHANNELS` channels; ``shape`` across checkpoints.
COHERENCE_SCENARIOS: dict[str, dict] = {
    "independent": {"excess": 0.0, "gain": 0.0, "space": 0.0, "shape": "constant", "input": False},
    "shared gain": {"excess": 0.0, "gain": 0.5, "space": 0.0, "shape": "constant", "input": False},
    "factor 0.01 rise": {"excess": 0.01, "gain": 0.0, "space": 0.0, "shape": "rise", "input": False},
    "factor 0.02 rise": {"excess": 0.02, "gain": 0.0, "space": 0.0, "shape": "rise", "input": False},
    "factor 0.05 rise": {"excess": 0.05, "gain": 0.0, "space": 0.0, "shape": "rise", "input": False},
    "factor 0.05 equal to input": {"excess": 0.05, "gain": 0.0, "space": 0.0, "shape": "rise", "input": True},
    "space 1 rise": {"excess": 0.0, "gain": 0.0, "space": 1.0, "shape": "rise", "input": False},
    "space 2 rise": {"excess": 0.0, "gain": 0.0, "space": 2.0, "shape": "rise", "input": False},
    "space 2 equal to input": {"excess": 0.0, "gain": 0.0, "space": 2.0, "shape": "rise", "input": True},
}
SPACE_CHANNELS = 8


#: Per claim: its group, the no-effect scenarios (a "supported" there is a false one) and the
#: planted effect (a family of scenarios of increasing strength: power and minimum detectable effect).
CLAIM_PLAN: dict[int, dict] = {
    1: {"group": "coherence",
        "nulls": {"as_stated": ["independent", "shared gain"],
                  "beyond_null": ["independent", "shared gain", "factor 0.05 equal to input"]},
        "effect": {"what": "excess of mean |R| over independent channels",
                   "at": "at the last checkpoint, rising from 0",
                   "stronger": "larger",
                   "scenarios": [(0.01, "factor 0.01 rise"), (0.02, "factor 0.02 rise"), (0.05, "factor 0.05 rise")]}},
    4: {"group": "coherence",
        "nulls": {"as_stated": ["independent"], "beyond_null": ["independent", "space 2 equal to input"]},
        "effect": {"what": "next-space response (Cohen's d, 8 channels)", "at": "at the last checkpoint, rising from 0",
                   "stronger": "larger", "scenarios": [(1.0, "space 1 rise"), (2.0, "space 2 rise")]}},
    2: {"group": "spelling",
        "nulls": {lv: ["independent", "propensity 0.3", "propensity 0.5"] for lv in ("as_stated", "beyond_null")},
        "effect": {"what": "refractory relative risk", "at": "at the last checkpoint, falling from 1",
                   "stronger": "smaller",
                   "scenarios": [(0.8, "refractory 0.8 rise"), (0.65, "refractory 0.65 rise"),
                                 (0.5, "refractory 0.5 rise")]}},
    3: {"group": "spelling",
        "nulls": {lv: ["independent", "propensity 0.3", "propensity 0.5", "markov 1 constant"]
                  for lv in ("as_stated", "beyond_null")},
        "effect": {"what": "Markov cascade (log-odds step)", "at": "at the last checkpoint, rising from 0",
                   "stronger": "larger",
                   "scenarios": [(0.25, "markov 0.25 rise"), (0.5, "markov 0.5 rise"), (1.0, "markov 1 rise")]}},
    5: {"group": "spelling",
        "nulls": {lv: ["independent", "markov 1 constant"] for lv in ("as_stated", "beyond_null")},
        "effect": {"what": "Markov cascade (log-odds step)", "at": "at the first checkpoint, falling to 0",
                   "stronger": "larger",
                   "scenarios": [(0.25, "markov 0.25 fall"), (0.5, "markov 0.5 fall"), (1.0, "markov 1 fall")]}},
}
LEVELS = ("as_stated", "beyond_null")


def rules_fingerprint() -> str:
    """sha256 (16 hex) of what a verdict depends on: every module of `gptwaves.analysis` (statistics,
    nulls, rules, synthetic truth) and the summary's verdict entry point; a change to any of them
    invalidates stored replicates and marks an old calibration as such in summary.json."""
    from .. import analysis
    from .summary import findings_from

    h = hashlib.sha256()
    for f in sorted(Path(analysis.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(inspect.getsource(findings_from).encode())
    return h.hexdigest()[:16]


def _verdicts(findings: dict, ids) -> dict:
    return {str(c["id"]): {lv: c[lv]["verdict"] for lv in LEVELS} for c in findings["claims"] if c["id"] in ids}


def spelling_findings(checkpoints: list[dict], alpha: float, crossing: dict | None) -> dict:
    """Verdicts of claims 2, 3 and 5 on spelling results ``[{"iteration", "stats"}]`` (the
    summary's `findings_from`, no waves): ``{"2": {"as_stated": v, "beyond_null": v}, ...}``."""
    from .summary import findings_from

    res = [{"name": f"iter_{c['iteration']:07d}", "iteration": c["iteration"], "stats": c["stats"],
            "settings": {"alpha": alpha}} for c in checkpoints]
    return _verdicts(findings_from({"checkpoints": []}, {"checkpoints": res, "crossing": crossing}), (2, 3, 5))


def waves_findings(checkpoints: list[dict], focus: str) -> dict:
    """Verdicts of claims 1 and 4 on wave results ``[{"iteration", "taps": {tap: tap_summary}}]``."""
    from .summary import findings_from

    res = [{"name": f"iter_{c['iteration']:07d}", "iteration": c["iteration"], "taps": c["taps"],
            "focus_tap": focus} for c in checkpoints]
    return _verdicts(findings_from({"checkpoints": res}, {"checkpoints": []}), (1, 4))

