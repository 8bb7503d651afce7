"""The model's configuration: one frozen dataclass that travels with the weights, plus presets.

A saved model stores ``config.to_dict()`` beside its parameters and is rebuilt with
``ModelConfig(**saved["config"])`` (nanoGPT style). Every field is checked in
``__post_init__``, so a bad value fails where it is made, with a one-line ValueError.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from numbers import Integral, Real
from typing import Any

LR_SCHEDULES = ("constant", "exponential", "cosine")
INITS = ("he", "uniform")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and training settings of a fully connected ReLU network with softmax output.

    The defaults are the ``default`` preset: the notebook's 784-10-10 network, trained well.
    """

    n_inputs: int = 784  # 28x28 pixels, flattened row by row
    hidden: tuple[int, ...] = (10,)  # ReLU layer widths; (10,) is the notebook's network
    n_classes: int = 10
    epochs: int = 10  # passes over the training split (with full batch: gradient steps)
    # Rows per SGD step; None = full-batch gradient descent (the notebook's algorithm).
    # 64: OpenBLAS's small-matrix kernel covers up to ~120 rows of a 784x10 layer (128+
    # rows cost 2x more per row), fewer rows pay more per-step overhead, and in 10 epochs
    # 64 was as accurate as 32-48 and better than 96-120. See benchmarks/README.md.
    batch_size: int | None = 64
    learning_rate: float = 0.1  # at epoch 0; the schedule takes it from there
    momentum: float = 0.5  # classical (heavy-ball) momentum; 0 = plain SGD
    # Per-epoch learning-rate schedule: "constant"; "exponential" multiplies by lr_decay
    # each epoch; "cosine" anneals from learning_rate towards 0 over `epochs`.
    lr_schedule: str = "cosine"
    lr_decay: float = 1.0  # used by "exponential" only
    init: str = "he"  # "he": N(0, 2/fan_in) weights, zero biases; "uniform": U(-0.5, 0.5) all
    seed: int = 0  # one seed drives the init, the validation split and the shuffling
    # Carved from the training rows, deterministically by seed; 1/12 of MNIST's 60k is
    # the classic 55k/5k split.
    validation_fraction: float = 1 / 12
    early_stopping_patience: int | None = None  # epochs without val-loss gain; None = off

    def __post_init__(self) -> None:
        # JSON round-trips turn tuples into lists: normalize back so equality and
        # hashing work on a config rebuilt from a saved dict.
        hidden = self.hidden
        if isinstance(hidden, (list, tuple)):
            object.__setattr__(self, "hidden", tuple(_as_int(h, "hidden", 1) for h in hidden))
        else:
            raise ValueError(f"hidden must be a tuple of layer widths, got {hidden!r}")
        _set(self, "n_inputs", _as_int(self.n_inputs, "n_inputs", 1))
        _set(self, "n_classes", _as_int(self.n_classes, "n_classes", 2))
        _set(self, "epochs", _as_int(self.epochs, "epochs", 1))
        if self.batch_size is not None:
            _set(self, "batch_size", _as_int(self.batch_size, "batch_size", 1))
        _set(self, "learning_rate", _as_float(self.learning_rate, "learning_rate"))
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        _set(self, "momentum", _as_float(self.momentum, "momentum"))
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        _set(self, "lr_decay", _as_float(self.lr_decay, "lr_decay"))
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        _set(self, "seed", _as_int(self.seed, "seed", 0))
        _set(
            self, "validation_fraction", _as_float(self.validation_fraction, "validation_fraction")
        )
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction}"
            )
        if self.early_stopping_patience is not None:
            patience = _as_int(self.early_stopping_patience, "early_stopping_patience", 1)
            _set(self, "early_stopping_patience", patience)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Widths from input to output, e.g. (784, 10, 10)."""
        return (self.n_inputs, *self.hidden, self.n_classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists); ``ModelConfig(**d)`` rebuilds it."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Rebuild from ``to_dict()`` output; unknown keys raise a ValueError naming them."""
        _refuse_unknown(d)
        return cls(**d)


def _refuse_unknown(keys: Any) -> None:
    unknown = sorted(set(keys) - {f.name for f in fields(ModelConfig)})
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s): {', '.join(unknown)}")


def _set(cfg: ModelConfig, name: str, value: Any) -> None:
    object.__setattr__(cfg, name, value)


def _as_int(value: Any, name: str, minimum: int) -> int:
    # bool is an Integral; True as a layer width or epoch count is always a mistake.
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


PRESETS: dict[str, ModelConfig] = {
    # The notebook's setup with its bugs fixed: U(-0.5, 0.5) init, alpha = 0.1,
    # 500 full-batch gradient-descent iterations, no momentum, constant rate.
    "seed": ModelConfig(
        batch_size=None,
        epochs=500,
        learning_rate=0.1,
        momentum=0.0,
        lr_schedule="constant",
        init="uniform",
    ),
    # Best validation accuracy found for 784-10-10 in 10 epochs (the benchmark's budget):
    # batch 64, lr 0.1, momentum 0.5, cosine. See benchmarks/README.md for the search.
    "default": ModelConfig(),
    # Best accuracy for the time among the shapes tried (benchmarks/README.md): 784-512-10,
    # 15 epochs in ~15 s on 2 cores. Batch 256 keeps BLAS efficient at this width; lr
    # scales with it. Wider (1024) or deeper (512, 256) gained < 0.1 point for 2-5x time.
    "wide": ModelConfig(
        hidden=(512,),
        epochs=15,
        batch_size=256,
        learning_rate=0.2,
        momentum=0.9,
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """Return preset ``name`` ("seed", "default", "wide") with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    _refuse_unknown(overrides)
    return replace(PRESETS[name], **overrides)


__all__ = ["INITS", "LR_SCHEDULES", "PRESETS", "ModelConfig", "preset"]
