"""When a run has diverged, and the message that says so; the same rule for both loops.

A loss counts as diverged when it is NaN or infinite, or when it passes 100 times the loss of a uniform guess
(ln C for C classes: 230 for MNIST). A sigmoid network trained with a huge learning rate rarely reaches NaN —
its activations are bounded and the loss is computed stably — but a cross-entropy of hundreds means the
network puts probability e^-230 on the right class: it has blown up, and no run recovers from there.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from .errors import DivergenceError

LIMIT_TIMES_CHANCE = 100


def loss_limit(n_classes: int) -> float:
    return LIMIT_TIMES_CHANCE * math.log(n_classes)


def first_diverged(losses: torch.Tensor, limit: float) -> int | None:
    """Index of the first loss that is NaN, infinite or above ``limit``; None if there is none."""
    bad = (~torch.isfinite(losses) | (losses > limit)).nonzero()
    return None if bad.numel() == 0 else int(bad[0])


def diverged_error(step: int, cfg, ckpt_file: Path, limit: float, what: str = "loss") -> DivergenceError:
    lower = f"--lr {cfg.lr / 10:g}"
    kept = (f"the last good checkpoint is kept: continue from it with --resume {ckpt_file.parent.parent} {lower}"
            if ckpt_file.exists() else f"no checkpoint was written: start again with {lower}")
    return DivergenceError(f"training diverged: the {what} became NaN or infinite or passed {limit:.0f} "
                           f"({LIMIT_TIMES_CHANCE} x chance level) at step {step} with lr {cfg.lr:g}; "
                           f"try a lower learning rate ({kept})")
