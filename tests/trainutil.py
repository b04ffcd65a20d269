"""Drive train.py the way a user does: a subprocess, its exit code, its output and what it left on disk."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent


def run_train(*args, timeout: float = 600, check: bool = True, **popen) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` from the repo root; progress bars off unless the test says otherwise."""
    argv = [sys.executable, str(ROOT / "train.py"), *map(str, args)]
    if "--progress" not in args:
        argv.append("--no-progress")
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **popen)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from a run directory's event files, via TensorBoard's own reader."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


SYNTH_SMALL = ["--dataset", "synth", "--synth-train", "600", "--synth-val", "200", "--hidden", "3",
               "--batch-size", "10", "--lr", "0.1", "--epochs", "2", "--log-every", "5"]
