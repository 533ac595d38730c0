"""Record stage: hidden-state waves of each checkpoint while it writes text -> ``DIR/recordings/``.

``recordings/<name>.h5`` (+ ``.h5.json`` sidecar with its sha256) per checkpoint, written by
:func:`gptwaves.record.record`; variants at the last checkpoint for repeatability (other seeds,
``<name>.seed<S>.h5``) and context plasticity (other prompts, ``<name>.prompt-<kind>.h5``).
A finished recording made with the same settings and weights is reused.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from .. import distributed as dd
from ..config import check_choice, check_int
from ..errors import SettingsError
from ..io import RunLock, check_run_dir
from ..names import ckpt_stem
from ..record import RecordSpec, record, recording_matches
from ..runtime import graceful_stop
from ..sample import SamplingConfig
from .common import ModelSource, load_selected, resolve_taps, run_checkpoints, select_checkpoints

__all__ = ["RecordSettings", "PLASTICITY_PROMPTS", "record_run", "record_variants"]

#: Steps recorded for a Hugging Face model when not given (its context is long).
HF_DEFAULT_STEPS = 256

# Prompts for context plasticity (docs/method.md, Coherence): verse, prose and a name list. Prompts with
# characters outside a model's vocabulary are skipped (other corpora).
PLASTICITY_PROMPTS = {
    "verse": "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n",
    "prose": "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "names": "ANTONIO\nSEBASTIAN\nGONZALO\nADRIAN\nFRANCISCO\nALONSO\n",
}


@dataclass(frozen=True)
class RecordSettings:
    """What to record (docs/method.md, Recording waves). ``steps=None``: 2 x block_size (crop beyond the context);
    ``taps=None``: every tap."""

    samples: int = 64
    steps: int | None = None
    prompt: str = "\n"
    taps: tuple[str, ...] | None = None
    dtype: str = "float32"
    batch_size: int = 64
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        check_int("samples", self.samples, 1, 10**7)
        if self.steps is not None:
            check_int("steps", self.steps, 1, 10**6)
        check_int("batch-size", self.batch_size, 1, 10**6)
        check_choice("dtype", self.dtype, ("float32", "float16"))
        if not isinstance(self.prompt, str) or not self.prompt:
            raise SettingsError("the prompt is empty; give at least one character")

    def spec(self, model) -> RecordSpec:
        """The complete recording specification for one model (defaults resolved, checked)."""
        hf = hasattr(model, "generate_batch")
        steps = self.steps if self.steps is not None else (HF_DEFAULT_STEPS if hf else 2 * model.config.block_size)
        return RecordSpec(samples=self.samples, steps=steps, prompt=self.prompt,
                          taps=tuple(resolve_taps(model, self.taps)), sampling=self.sampling,
                          batch_size=self.batch_size, dtype=self.dtype)

    def replace(self, **kw) -> "RecordSettings":
        return dataclasses.replace(self, **kw)


def record_run(run_dir: str | os.PathLike, checkpoint: str | int | None = "all",
               settings: RecordSettings = RecordSettings(), source: ModelSource = ModelSource(), *,
               name_suffix: str = "", progress: bool = True) -> list[Path]:
    """Record waves for the selected checkpoints; finished recordings with equal settings are reused.

    Under torchrun the samples' batches are sharded across ranks and rank 0 assembles the file.
    Returns the recording paths in checkpoint order.
    """
    run_dir = check_run_dir(run_dir)
    selected = select_checkpoints(run_dir, checkpoint, source)
    device, d = dd.setup(source.device)
    out = []
    with (RunLock(run_dir) if d.main else nullcontext()), graceful_stop() as stop:
        for name, ref in selected:
            model, meta = load_selected(ref, source, device)
            spec = settings.spec(model)
            path = run_dir / "recordings" / f"{name}{name_suffix}.h5"
            if not recording_matches(path, spec, meta.get("weights_sha256", "")):
                record(model, meta, list(meta["vocab"]), spec, path, progress=progress, stop=stop)
            out.append(path)
            del model  # one model in memory at a time (suites of large revisions)
    return out


def record_variants(run_dir: str | os.PathLike, settings: RecordSettings = RecordSettings(),
                    source: ModelSource = ModelSource(), *, n_seeds: int = 3, progress: bool = True) -> dict:
    """Extra recordings at the last checkpoint: other seeds (repeatability), other prompts (plasticity).

    Returns ``{"checkpoint": name, "seeds": {label: path}, "prompts": {kind: path}}``; the main
    recording (``settings.sampling.seed``) is the first seed.
    """
    run_dir = check_run_dir(run_dir)
    if source.hf_model:  # the last revision of a suite; a tokenizer encodes every prompt
        name, _ = select_checkpoints(run_dir, "last", source)[-1]
        which: str | int = "last"
        vocab = None
    else:
        last = run_checkpoints(run_dir)[-1]
        name, which = ckpt_stem(last.iteration), last.iteration
        vocab = set(last.meta["vocab"])
    seed = settings.sampling.seed
    out: dict = {"checkpoint": name, "seeds": {}, "prompts": {}}
    out["seeds"][f"seed {seed}"] = run_dir / "recordings" / f"{name}.h5"
    for s in range(seed + 1, seed + max(1, n_seeds)):
        other = settings.replace(sampling=dataclasses.replace(settings.sampling, seed=s))
        out["seeds"][f"seed {s}"] = record_run(run_dir, which, other, source, name_suffix=f".seed{s}",
                                               progress=progress)[0]
    for kind, text in PLASTICITY_PROMPTS.items():
        if vocab is None or set(text) <= vocab:
            out["prompts"][kind] = record_run(run_dir, which, settings.replace(prompt=text), source,
                                              name_suffix=f".prompt-{kind}", progress=progress)[0]
    return out
