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
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import CheckpointError, UserError

FORMAT = "backprop-mirror-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "last.ckpt"


def check_log_dir(log_dir: str | Path) -> None:
    """Fail early, before any data is loaded, when ``log_dir`` cannot hold run directories.

    Creates nothing: the nearest existing folder on the path must be a writable directory. ``new_run_dir``
    still makes the definitive check (it writes a probe file) before training starts.
    """
    path = Path(log_dir).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"log_dir: cannot write to {log_dir} ({existing} is a file, not a directory); "
                        "choose a writable --log-dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"log_dir: cannot write to {log_dir} ({existing} is not writable); "
                        "choose a writable --log-dir")


def new_run_dir(log_dir: str | Path, experiment: str, impl: str) -> Path:
    """Create and return the next free ``version_N`` directory."""
    parent = Path(log_dir) / experiment / impl
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".write-test-")
        probe.close()
    except OSError as e:
        raise UserError(f"log_dir: cannot write to {parent} ({e.strerror or e}); "
                        "choose a writable --log-dir") from None
    taken = [int(m.group(1)) for p in parent.iterdir() if (m := re.fullmatch(r"version_(\d+)", p.name))]
    n = max(taken, default=-1) + 1
    while True:
        run = parent / f"version_{n}"
        try:
            run.mkdir()
            return run
        except FileExistsError:  # another run started at the same moment
            n += 1


def discard_run_dir(run_dir: str | Path) -> bool:
    """Remove a run directory that a run failed to use (no checkpoint in it); True if removed.

    A run that fails before its first step (a checkpoint of the wrong kind, a device that is not there)
    leaves nothing worth keeping; a run with a checkpoint is never touched.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or checkpoint_path(run_dir).exists():
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` so that readers see the old file or the new one, never a partial one."""
    import torch

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
    # Temp files of writes killed mid-way (kill -9, power loss) are garbage: one run writes one path.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


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
    """Load and check a checkpoint written by either implementation.

    Loaded with ``weights_only=True``: a checkpoint is tensors, numbers, strings, lists and dicts, so a file
    that needs arbitrary Python objects to unpickle is refused rather than run.
    """
    import pickle
    import warnings

    import torch

    path = resolve_checkpoint(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickles it was not made for: one line is ours
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            raise CheckpointError(f"checkpoint {path} was not written by backprop-mirror (it holds Python "
                                  "objects other than tensors); pass a checkpoints/last.ckpt from a train.py "
                                  "run") from None
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint (UnpicklingError); "
                              "use another one or start a new run") from None
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint ({type(e).__name__}); "
                              "use another one or start a new run") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} was not written by backprop-mirror; "
                              "pass a checkpoints/last.ckpt from a train.py run")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {ckpt.get('format_version')}, "
                              f"this code reads version {FORMAT_VERSION}")
    missing = [k for k in ("impl", "config", "weights") if k not in ckpt]
    if missing or not isinstance(ckpt["config"], dict) or not isinstance(ckpt["weights"], dict):
        raise CheckpointError(f"checkpoint {path} is incomplete (missing {', '.join(missing) or 'config/weights'}); "
                              "use another one or start a new run")
    return ckpt


# What ``--resume`` needs beyond the portable keys, per implementation.
RESUME_KEYS = {
    "manual": ("optimizer", "step", "epoch", "data", "epoch_loss_sum", "epoch_seen"),
    "lightning": ("state_dict", "loops", "optimizer_states", "step", "epoch"),
}


def check_resumable(ckpt: dict, path: str | Path, impl: str) -> None:
    """Raise CheckpointError unless ``ckpt`` (from :func:`load_checkpoint`, written by ``impl``) holds the
    training state that ``--resume`` needs, not just the weights."""
    missing = [k for k in RESUME_KEYS.get(impl, ()) if k not in ckpt]
    if missing:
        raise CheckpointError(f"--resume: {path} holds weights but not the training state to continue "
                              f"({', '.join(missing)} missing); evaluate it with evaluate.py or start a new run")


def portable_state(impl: str, config: dict, weights: dict, **extra) -> dict:
    """The keys every checkpoint carries; ``weights`` uses ``torch.nn.Linear`` names (``layers.0.weight``)."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "impl": impl, "config": config,
            "weights": {k: v.detach().to("cpu").clone() for k, v in weights.items()}, **extra}
