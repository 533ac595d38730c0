"""Training presets (DESIGN 2). Every field can be overridden from the CLI or the API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from .model import GPTConfig

# Fields that do not change the trajectory of a run: they may differ when a run is resumed
# or extended (``max_iters`` may grow: training continues from the last state).
NON_IDENTITY_FIELDS = frozenset({"max_iters", "log_interval", "state_interval", "device", "progress"})

LOG_SCHEDULE = (0, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500,
                10000, 15000, 20000, 30000, 50000, 75000, 100000)


@dataclass
class TrainConfig:
    preset: str = "paper"
    # model
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 192
    block_size: int = 128
    dropout: float = 0.1
    bias: bool = True
    tie_weights: bool = False
    gelu: str = "tanh"
    # optimisation
    batch_size: int = 64
    learning_rate: float = 5e-4
    min_lr: float = 5e-4
    warmup_iters: int = 0
    lr_decay_iters: int = 0  # 0: constant learning rate after warm-up (minGPT)
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    max_iters: int = 5000
    # evaluation / bookkeeping
    eval_iters: int = 20  # fixed batches per split for train/val loss
    log_interval: int = 10
    state_interval: int = 100  # iterations between resumable training states
    seed: int = 1337
    precision: str = "fp32"  # fp32 | bf16 (autocast) | auto (bf16 where native, else fp32)
    device: str = "auto"  # auto | cpu | cuda
    checkpoints: tuple[int, ...] = field(default_factory=lambda: LOG_SCHEDULE)
    progress: bool = True

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(
            block_size=self.block_size, vocab_size=vocab_size, n_layer=self.n_layer,
            n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout, bias=self.bias,
            tie_weights=self.tie_weights, gelu=self.gelu,
        )

    def schedule(self) -> list[int]:
        """Checkpoint iterations: the log-spaced list up to max_iters, plus max_iters."""
        its = sorted({i for i in self.checkpoints if 0 <= i <= self.max_iters} | {0, self.max_iters})
        return its

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checkpoints"] = list(self.checkpoints)
        return d

    def identity(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in NON_IDENTITY_FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "checkpoints" in kw:
            kw["checkpoints"] = tuple(kw["checkpoints"])
        return cls(**kw)

    def override(self, **kw) -> "TrainConfig":
        kw = {k: v for k, v in kw.items() if v is not None}
        unknown = set(kw) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        return replace(self, **kw)


PRESETS: dict[str, TrainConfig] = {
    # minGPT gpt-mini as in its chargpt project: constant lr, 5000 iterations by default.
    # bf16 autocast where the hardware has native bf16 (1.3-1.5x faster here, same loss curve).
    "paper": TrainConfig(preset="paper", precision="auto"),
    # A small model that reaches validation loss <= 1.75 on Tiny Shakespeare in minutes on a CPU.
    "quick": TrainConfig(
        preset="quick", n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0,
        batch_size=32, learning_rate=2e-3, min_lr=2e-4, warmup_iters=50, lr_decay_iters=2500,
        beta2=0.99, max_iters=2500, eval_iters=20, state_interval=250,
    ),
    # Tiny: trains in seconds; for tests, CI and trying the pipeline.
    "smoke": TrainConfig(
        preset="smoke", n_layer=2, n_head=2, n_embd=32, block_size=32, dropout=0.0,
        batch_size=16, learning_rate=3e-3, min_lr=3e-3, max_iters=200, eval_iters=4,
        log_interval=10, state_interval=50,
    ),
    # nanoGPT's config/train_shakespeare_char.py.
    "shakespeare-char": TrainConfig(
        preset="shakespeare-char", n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2,
        bias=False, tie_weights=True, gelu="exact", batch_size=64, learning_rate=1e-3,
        min_lr=1e-4, warmup_iters=100, lr_decay_iters=5000, beta2=0.99, max_iters=5000,
        eval_iters=20, state_interval=250, precision="auto",
    ),
}


def preset(name: str) -> TrainConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
