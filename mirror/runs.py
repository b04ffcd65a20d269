"""Run directories and checkpoints, the same for both implementations.

A run lives in ``<log_dir>/<experiment>/<impl>/version_N``: TensorBoard events, ``hparams.yaml`` and
``checkpoints/last.ckpt``. A new run always takes a fresh N (``os.mkdir`` fails rather than reuse one), so
no run overwrites another. Checkpoints are written to a temporary file, flushed to disk and renamed over
the old one, so a crash mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, UserError

FORMAT = "backprop-mirror-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "last.ckpt"


def new_run_dir(log_dir: str | Path, experiment: str, impl: str) -> Path:
    """Create and return the next free ``version_N`` directory."""
    parent = Path(log_dir) / experiment / impl
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".write-test-")
        probe.close()
    except OSError as e:
        raise UserError(f"log_dir: cannot write to {parent} ({e.strerror}); choose a writable --log-dir") from None
    taken = [int(m.group(1)) for p in parent.iterdir() if (m := re.fullmatch(r"version_(\d+)", p.name))]
    n = max(taken, default=-1) + 1
    while True:
        run = parent / f"version_{n}"
        try:
            run.mkdir()
            return run
        except FileExistsError:  # another run started at the same moment
            n += 1


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` so that readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / CHECKPOINT_NAME


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint file or a run directory holding ``checkpoints/last.ckpt``."""
    path = Path(path)
    if path.is_dir():
        path = checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a run directory "
                              f"(runs/<experiment>/<impl>/version_N) or its checkpoints/{CHECKPOINT_NAME}")
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Load and check a checkpoint written by either implementation."""
    path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint ({type(e).__name__}); "
                              "use another one or start a new run") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} was not written by backprop-mirror; "
                              "pass a checkpoints/last.ckpt from a train.py run")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {ckpt.get('format_version')}, "
                              f"this code reads version {FORMAT_VERSION}")
    return ckpt


def portable_state(impl: str, config: dict, weights: dict, **extra) -> dict:
    """The keys every checkpoint carries; ``weights`` uses ``torch.nn.Linear`` names (``layers.0.weight``)."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "impl": impl, "config": config,
            "weights": {k: v.detach().to("cpu").clone() for k, v in weights.items()}, **extra}
