"""Bad input and faults, driven the way a user meets them: ``python train.py ...`` in a subprocess.

Each case asserts the one-line message (naming the field or file), the exit code, that no traceback was
printed, and what the run left on disk. The matching table is at the top of ``docs/faults.md``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from trainutil import ROOT, run_train

SYNTH_TINY = ["--dataset", "synth", "--synth-train", "40", "--synth-val", "20", "--hidden", "3",
              "--batch-size", "10", "--epochs", "1", "--log-every", "2"]


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The run's stderr must be exactly one ``error: ...`` line."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def version_dirs(log_dir: Path) -> list[Path]:
    return sorted(log_dir.glob("*/*/version_*"))


# ------------------------------------------------------------------------------------- 1. configuration

CONFIG_CASES = {
    # id: (command-line arguments, config file text or None, words the message must hold)
    "lr-negative": (["--lr", "-1"], None, ["lr", "-1", "positive finite"]),
    "lr-nan": (["--lr", "nan"], None, ["lr", "nan", "positive finite"]),
    "lr-inf": (["--lr", "inf"], None, ["lr", "inf", "positive finite"]),
    "lr-not-a-number": (["--lr", "abc"], None, ["--lr", "'abc'", "not a number"]),
    "batch-size-zero": (["--batch-size", "0"], None, ["batch_size", "0", "positive integer"]),
    "batch-size-float": (["--batch-size", "1.5"], None, ["--batch-size", "'1.5'", "not an integer"]),
    "epochs-zero": (["--epochs", "0"], None, ["epochs", "0", "positive integer"]),
    "hidden-negative": (["--hidden", "3", "-2"], None, ["hidden", "[3, -2]", "positive integers"]),
    "activation": (["--activation", "swish"], None, ["activation", "'swish'", "sigmoid, relu, tanh"]),
    "dataset": (["--dataset", "cifar"], None, ["dataset", "'cifar'", "mnist, synth"]),
    "device": (["--device", "tpu"], None, ["device", "'tpu'", "cpu, cuda, auto"]),
    "dtype": (["--dtype", "float16"], None, ["dtype", "'float16'", "float32, float64"]),
    "unknown-option": (["--learning-rate", "0.1"], None, ["unrecognized arguments", "--learning-rate"]),
    "config-missing": (["--config", "{tmp}/nope.yaml"], None, ["nope.yaml", "does not exist"]),
    "config-not-yaml": (["--config", "{cfg}"], "lr: [0.1\nepochs: 2\n", ["exp.yaml", "not valid YAML", "line"]),
    "config-not-mapping": (["--config", "{cfg}"], "- lr\n- 0.1\n", ["exp.yaml", "mapping"]),
    "config-unknown-key": (["--config", "{cfg}"], "learning_rate: 0.1\n", ["exp.yaml", "'learning_rate'",
                                                                            "known keys"]),
    "config-wrong-type": (["--config", "{cfg}"], "epochs: three\n", ["exp.yaml", "epochs", "'three'",
                                                                     "an integer"]),
    "config-bad-value": (["--config", "{cfg}"], "lr: -0.5\n", ["exp.yaml", "lr", "-0.5", "positive finite"]),
}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=list(CONFIG_CASES))
def test_config_error_is_one_line_exit_2(tmp_path, case):
    args, text, words = CONFIG_CASES[case]
    cfg = tmp_path / "exp.yaml"
    if text is not None:
        cfg.write_text(text)
    args = [a.format(tmp=tmp_path, cfg=cfg) for a in args]
    proc = run_train("--dataset", "synth", "--log-dir", tmp_path / "runs", *args, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    assert not (tmp_path / "runs").exists(), "a run that failed on its config created a log directory"


def test_val_size_not_smaller_than_training_set(tmp_path, mnist_root):
    proc = run_train("--data-dir", mnist_root, "--val-size", "100000", "--log-dir", tmp_path / "runs",
                     check=False, timeout=300)
    assert proc.returncode == 2
    line = error_line(proc)
    assert "val_size: 100000 is not valid" in line and "the training set has" in line
    assert not version_dirs(tmp_path / "runs")


# ---------------------------------------------------------------------------------------------- 2. data

TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


def _idx_labels(labels: bytes) -> bytes:
    return (2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels


def _break_copy(src_root: Path, dst_root: Path, case: str) -> Path:
    """A data dir whose training files are the real ones (linked) but for the one this case breaks."""
    raw = dst_root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    src = src_root / "MNIST" / "raw"
    for name in TRAIN_FILES:
        (raw / name).symlink_to(src / name)
    images, labels = raw / TRAIN_FILES[0], raw / TRAIN_FILES[1]
    if case == "truncated":
        data = images.read_bytes()
        images.unlink()
        images.write_bytes(data[: len(data) // 2])
        return images
    if case == "bad-magic":
        data = bytearray(labels.read_bytes())
        labels.unlink()
        data[2:4] = b"\x0d\x03"
        labels.write_bytes(bytes(data))
        return labels
    if case == "count-mismatch":
        data = labels.read_bytes()
        labels.unlink()
        labels.write_bytes(_idx_labels(data[8:-10]))  # a well-formed file with 10 labels too few
        return labels
    if case == "label-out-of-range":
        data = bytearray(labels.read_bytes())
        labels.unlink()
        data[8 + 17] = 12
        labels.write_bytes(bytes(data))
        return labels
    if case == "corrupt-gzip":
        images.unlink()
        gz = src / (TRAIN_FILES[0] + ".gz")
        broken = raw / (TRAIN_FILES[0] + ".gz")
        broken.write_bytes(gz.read_bytes()[:5000])
        return broken
    raise AssertionError(case)


DATA_CASES = {
    "truncated": "truncated",
    "bad-magic": "wrong magic number",
    "count-mismatch": "labels",
    "label-out-of-range": "outside 0-9",
    "corrupt-gzip": "cannot be read",
}


@pytest.mark.parametrize("case", DATA_CASES, ids=list(DATA_CASES))
def test_broken_mnist_file_is_named(tmp_path, mnist_root, case):
    bad_file = _break_copy(mnist_root, tmp_path / "data", case)
    proc = run_train("--data-dir", tmp_path / "data", "--no-download", "--epochs", "1",
                     "--log-dir", tmp_path / "runs", check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr
    line = error_line(proc)
    assert str(bad_file) in line, f"the message does not name {bad_file}: {line}"
    assert DATA_CASES[case] in line
    assert not version_dirs(tmp_path / "runs"), "a run that failed on its data left a version directory"


@pytest.mark.parametrize("download", [False, True], ids=["no-download", "no-network"])
def test_missing_mnist_says_where_to_put_the_files(tmp_path, download):
    env = dict(os.environ)
    if download:  # no network: every download URL fails at once against a closed local port
        env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
                   http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", NO_PROXY="", no_proxy="")
    flag = "--download" if download else "--no-download"
    proc = run_train("--data-dir", tmp_path / "empty", flag, "--log-dir", tmp_path / "runs", check=False,
                     timeout=300, env=env)
    assert proc.returncode == 1, proc.stderr
    line = error_line(proc)
    assert f"MNIST not found under {tmp_path / 'empty' / 'MNIST' / 'raw'}" in line
    assert "put the four files there" in line
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert name in line
    assert ("download failed" in line) == download
    assert not version_dirs(tmp_path / "runs")


# ----------------------------------------------------------------------------------------- 3. divergence

# One step per epoch, so every step before the blow-up ends an epoch and leaves a checkpoint; ReLU at
# lr 100 takes one good step, then its loss passes 100 x chance level, in both implementations.
DIVERGE = ["--dataset", "synth", "--synth-train", "20", "--synth-val", "50", "--hidden", "3",
           "--activation", "relu", "--batch-size", "20", "--lr", "100", "--epochs", "20", "--log-every", "1"]


def _check_divergence(tmp_path, impl):
    proc = run_train("--impl", impl, *DIVERGE, "--log-dir", tmp_path, check=False, timeout=600)
    assert proc.returncode == 3, proc.stderr
    line = error_line(proc)
    assert "training diverged" in line and "NaN or infinite" in line and "try a lower learning rate" in line
    step = int(line.split(" at step ")[1].split()[0])
    assert 0 < step < 20, line
    run_dir = tmp_path / "synth" / impl / "version_0"
    assert f"the last good checkpoint is kept: continue from it with --resume {run_dir} --lr 10" in line
    from mirror.runs import load_checkpoint
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["step"] <= step, "a checkpoint from after the blow-up replaced the last good one"
    assert all(torch.isfinite(w).all() for w in ckpt["weights"].values())
    assert all(torch.isfinite(torch.tensor(v)) for v in ckpt["metrics"].values())
    return step


def test_divergence_stops_manual(tmp_path):
    _check_divergence(tmp_path, "manual")


@pytest.mark.slow
def test_divergence_stops_lightning(tmp_path):
    _check_divergence(tmp_path, "lightning")


# A sigmoid network's loss stays finite however large the learning rate (bounded activations, a stable
# log-sum-exp), so divergence also means a loss past 100 x chance level: lr 1e4 is caught at once.
@pytest.mark.parametrize("impl", ["manual", "lightning"])
def test_sigmoid_with_lr_1e4_stops_as_diverged(tmp_path, impl):
    proc = run_train("--impl", impl, "--dataset", "synth", "--synth-train", "2000", "--synth-val", "100",
                     "--hidden", "3", "--batch-size", "20", "--lr", "1e4", "--epochs", "2", "--log-every", "5",
                     "--log-dir", tmp_path, check=False)
    assert proc.returncode == 3, proc.stderr
    line = error_line(proc)
    assert "training diverged" in line and "passed 69 (100 x chance level) at step 1 " in line, line
    assert "try a lower learning rate" in line and "--lr 1000" in line, line


# ------------------------------------------------------------------------------------------------ 5. files

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished small manual run; its checkpoint is the raw material for the checkpoint cases."""
    log_dir = tmp_path_factory.mktemp("finished")
    run_train("--impl", "manual", *SYNTH_TINY, "--log-dir", log_dir, timeout=300)
    return log_dir / "synth" / "manual" / "version_0"


def _make_bad_checkpoint(kind: str, good: Path, tmp: Path) -> tuple[Path, str]:
    path = tmp / "bad.ckpt"
    if kind == "garbage":
        path.write_bytes(os.urandom(4096))
        return path, "is corrupt or not a checkpoint"
    if kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, "is corrupt or not a checkpoint"
    if kind == "foreign-torch":
        torch.save({"state_dict": {"w": torch.zeros(3)}, "epoch": 3}, path)
        return path, "was not written by backprop-mirror"
    if kind == "foreign-pickle":
        torch.save({"format": "backprop-mirror-checkpoint", "payload": Path("/")}, path)
        return path, "was not written by backprop-mirror"
    if kind == "weights-only":
        ckpt = torch.load(good, weights_only=True)
        torch.save({k: ckpt[k] for k in ("format", "format_version", "impl", "config", "weights")}, path)
        return path, "holds weights but not the training state"
    if kind == "empty-run-dir":
        (tmp / "version_9").mkdir()
        return tmp / "version_9", "does not exist"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "foreign-torch", "foreign-pickle", "weights-only",
                                  "empty-run-dir"])
def test_bad_checkpoint_for_resume(tmp_path, finished_run, kind):
    bad, words = _make_bad_checkpoint(kind, finished_run / "checkpoints" / "last.ckpt", tmp_path)
    proc = run_train("--resume", bad, "--log-dir", tmp_path / "runs", check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr
    line = error_line(proc)
    assert words in line
    assert str(bad) in line
    assert not (tmp_path / "runs").exists()


def test_resume_with_the_other_impl_or_a_new_network(tmp_path, finished_run):
    proc = run_train("--impl", "lightning", "--resume", finished_run, check=False, timeout=300)
    assert proc.returncode == 2
    assert "written by --impl manual; resume it with --impl manual" in error_line(proc)
    proc = run_train("--resume", finished_run, "--hidden", "50", check=False, timeout=300)
    assert proc.returncode == 2
    assert "hidden cannot change when resuming ([3] in the checkpoint, [50] given)" in error_line(proc)
    proc = run_train("--resume", finished_run, check=False, timeout=300)
    assert proc.returncode == 2
    assert "has already taken 4 steps" in error_line(proc)
    assert version_dirs(finished_run.parent.parent.parent) == [finished_run]


def test_unwritable_log_dir_reported_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory\n")
    proc = run_train(*SYNTH_TINY, "--log-dir", blocker / "runs", check=False, timeout=120)
    assert proc.returncode == 1
    line = error_line(proc)
    assert f"log_dir: cannot write to {blocker / 'runs'}" in line and "choose a writable --log-dir" in line
    assert proc.stdout == "", "training started although the log directory is unusable"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_log_dir_reported_before_training(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        proc = run_train(*SYNTH_TINY, "--log-dir", ro, check=False, timeout=120)
    finally:
        ro.chmod(0o700)
    assert proc.returncode == 1
    assert "log_dir: cannot write to" in error_line(proc)
    assert proc.stdout == ""


# A writer that saves ever-new versions of one checkpoint as fast as it can, printing each version number.
WRITER = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, sys.argv[2])
    from mirror.runs import atomic_save
    i = 0
    while True:
        i += 1
        atomic_save({"version": i, "payload": torch.full((2_000_000,), float(i))}, sys.argv[1])
        print(i, flush=True)
""")


def test_kill_9_during_checkpoint_write_keeps_previous(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    for delay in (0.0, 0.023, 0.051):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(ROOT)], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout.readline().strip() == "1" or path.exists()  # one full write done
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        done = [int(n) for n in proc.stdout.read().split()]
        ckpt = torch.load(path, weights_only=True)
        v = ckpt["version"]
        assert ckpt["payload"].shape == (2_000_000,) and bool((ckpt["payload"] == v).all())
        assert v >= max(done, default=1), "a finished write was lost"
    # Temp files left by the killed writes are cleaned by the next successful save.
    from mirror.runs import atomic_save
    atomic_save({"version": 0}, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    from mirror import runs
    path = tmp_path / "last.ckpt"
    runs.atomic_save({"version": 1}, path)

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs.os, "replace", boom)
    with pytest.raises(OSError):
        runs.atomic_save({"version": 2, "payload": torch.zeros(1000)}, path)
    assert torch.load(path, weights_only=True) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
