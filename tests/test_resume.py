"""Interruption, resume, run directories and determinism, driven the way a user meets them.

Runs are subprocesses of ``train.py``; a run is interrupted by sending it SIGINT (what Ctrl-C sends) or
SIGTERM once its TensorBoard event file holds a ``train/loss`` point, i.e. while it is training.
"""
from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainutil import ROOT, SYNTH_SMALL, run_train, scalars

# Per-instance SGD on 3000 points for 2 epochs: long enough (several seconds) to be interrupted mid-epoch.
LONG_MANUAL = ["--dataset", "synth", "--synth-train", "3000", "--synth-val", "200", "--hidden", "4",
               "--batch-size", "1", "--lr", "0.05", "--momentum", "0.5", "--epochs", "2", "--log-every", "10",
               "--experiment", "long"]
# The same shape for Lightning, whose steps cost more.
LONG_LIGHTNING = ["--dataset", "synth", "--synth-train", "600", "--synth-val", "200", "--hidden", "4",
                  "--batch-size", "1", "--lr", "0.05", "--momentum", "0.5", "--epochs", "2", "--log-every", "10",
                  "--experiment", "long"]


def start_train(*args) -> subprocess.Popen:
    argv = [sys.executable, str(ROOT / "train.py"), *map(str, args), "--no-progress"]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt_when_training(proc: subprocess.Popen, log_dir: Path, sig: int, timeout: float = 300):
    """Send ``sig`` once an event file under ``log_dir`` holds a train/loss point; return (rc, out, err)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before it could be interrupted\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no train/loss point appeared in the event file")
        if any(b"train/loss" in f.read_bytes() for f in log_dir.glob("*/*/version_*/events.out.tfevents.*")):
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def merged(*runs) -> dict[str, dict[int, float]]:
    """tag -> {step: value} over several run directories; a step logged twice must agree."""
    out: dict[str, dict[int, float]] = {}
    for run in runs:
        for tag, points in scalars(run).items():
            into = out.setdefault(tag, {})
            for step, value in points:
                assert into.get(step, value) == value, f"{tag} at step {step} logged twice, differently"
                into[step] = value
    return out


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["weights"]


def _interrupt_and_resume(tmp_path, impl, args, sig):
    """Uninterrupted run, interrupted run, resumed run: the three run directories and the checkpoint."""
    full_log, log = tmp_path / "full", tmp_path / "cut"
    reference = start_train("--impl", impl, *args, "--log-dir", full_log)  # runs alongside the other two
    rc, out, err = interrupt_when_training(start_train("--impl", impl, *args, "--log-dir", log), log, sig)
    assert rc == 128 + sig, err
    assert "Traceback" not in err, err
    cut = log / "long" / impl / "version_0"
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted: stopped at step ") and f"--resume {cut}" in line, err
    ckpt = torch.load(cut / "checkpoints" / "last.ckpt", weights_only=True)
    step = int(line.split("stopped at step ")[1].split()[0])
    assert ckpt["step"] == step
    total = 2 * int(args[args.index("--synth-train") + 1])
    assert 0 < step < total, "the interrupt did not land inside the run"
    # TensorBoard was flushed: the interrupted run's curve reaches the step it stopped at.
    logged = [s for s, _ in scalars(cut)["train/loss"]]
    assert max(logged) >= step - 10
    # --resume continues into a new version directory; the interrupted one is left as it was.
    before = (cut / "checkpoints" / "last.ckpt").read_bytes()
    proc = run_train("--impl", impl, "--resume", cut, "--log-dir", log, timeout=600)
    resumed = log / "long" / impl / "version_1"
    assert str(resumed) in proc.stdout
    assert (cut / "checkpoints" / "last.ckpt").read_bytes() == before
    ref_out, ref_err = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_err
    return full_log / "long" / impl / "version_0", cut, resumed, ckpt


@pytest.mark.slow
def test_manual_ctrl_c_then_resume_is_bit_identical(tmp_path):
    full, cut, resumed, ckpt = _interrupt_and_resume(tmp_path, "manual", LONG_MANUAL, signal.SIGINT)
    assert 0 < ckpt["data"]["position"] < 3000, "expected a stop mid-epoch"
    for name, w in weights(full).items():
        assert torch.equal(weights(resumed)[name], w), f"{name} differs after interrupt and resume"
    # Every logged value (per-step train/loss, epoch metrics) of interrupted + resumed equals the full run's.
    assert merged(cut, resumed) == merged(full)


def test_manual_sigterm_saves_and_exits_143(tmp_path):
    log = tmp_path / "runs"
    rc, out, err = interrupt_when_training(start_train("--impl", "manual", *LONG_MANUAL, "--log-dir", log),
                                           log, signal.SIGTERM)
    assert rc == 143, err
    assert "interrupted: stopped at step" in err and "Traceback" not in err
    ckpt = torch.load(log / "long" / "manual" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["step"] > 0 and ckpt["impl"] == "manual"


@pytest.mark.slow
def test_lightning_sigterm_then_resume_matches(tmp_path):
    """What Lightning 2.x guarantees on a mid-epoch resume with our stateful loader (docs/faults.md)."""
    full, cut, resumed, ckpt = _interrupt_and_resume(tmp_path, "lightning", LONG_LIGHTNING, signal.SIGTERM)
    assert ckpt["global_step"] == ckpt["step"] and "loops" in ckpt
    # Weights continue the same trajectory (bit-identical on the CPU in practice; asserted to float tolerance).
    for name, w in weights(full).items():
        torch.testing.assert_close(weights(resumed)[name], w, rtol=1e-6, atol=1e-7)
    a, b = merged(cut, resumed), merged(full)
    assert a["train/loss"].keys() == b["train/loss"].keys()
    torch.testing.assert_close(torch.tensor(list(a["train/loss"].values())),
                               torch.tensor(list(b["train/loss"].values())), rtol=1e-6, atol=1e-7)
    assert a["val/loss"].keys() == b["val/loss"].keys()
    torch.testing.assert_close(torch.tensor(list(a["val/loss"].values())),
                               torch.tensor(list(b["val/loss"].values())), rtol=1e-6, atol=1e-7)
    # Not guaranteed: Lightning does not checkpoint its running epoch aggregates, so the interrupted epoch's
    # train/loss_epoch averages only the batches after the resume. Later epochs agree again.
    per_epoch = int(LONG_LIGHTNING[LONG_LIGHTNING.index("--synth-train") + 1])
    cut_epoch_end = (ckpt["epoch"] + 1) * per_epoch - 1
    assert a["train/loss_epoch"].keys() == b["train/loss_epoch"].keys()
    for step, value in b["train/loss_epoch"].items():
        if step != cut_epoch_end:
            torch.testing.assert_close(a["train/loss_epoch"][step], value, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_lightning_ctrl_c_saves_and_exits_130(tmp_path):
    log = tmp_path / "runs"
    rc, out, err = interrupt_when_training(start_train("--impl", "lightning", *LONG_LIGHTNING, "--log-dir", log),
                                           log, signal.SIGINT)
    assert rc == 130, err
    assert "interrupted: stopped at step" in err and "Traceback" not in err
    ckpt = torch.load(log / "long" / "lightning" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["step"] > 0 and "loops" in ckpt


# ------------------------------------------------------------------------- 5. and 6.: two identical runs

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same config and seed run twice into one log directory; version_0's files hashed in between."""
    log = tmp_path_factory.mktemp("twice")
    run_train("--impl", "manual", *SYNTH_SMALL, "--log-dir", log, timeout=300)
    first = log / "synth" / "manual" / "version_0"
    hashes = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in first.rglob("*") if p.is_file()}
    run_train("--impl", "manual", *SYNTH_SMALL, "--log-dir", log, timeout=300)
    return log, hashes


def test_second_run_never_overwrites_the_first(two_runs):
    log, hashes = two_runs
    assert [p.name for p in sorted((log / "synth" / "manual").iterdir())] == ["version_0", "version_1"]
    for path, digest in hashes.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} changed"
    assert len(list((log / "synth" / "manual" / "version_0").rglob("*"))) == len(
        list((log / "synth" / "manual" / "version_1").rglob("*")))


def test_manual_runs_are_bit_identical(two_runs):
    log, _ = two_runs
    a, b = (log / "synth" / "manual" / f"version_{i}" for i in (0, 1))
    for name, w in weights(a).items():
        assert torch.equal(weights(b)[name], w), name
    sa, sb = scalars(a), scalars(b)
    assert sa.keys() == sb.keys() and "train/loss" in sa
    for tag in sa:
        assert sa[tag] == sb[tag], f"{tag} differs between two runs of one config and seed"
