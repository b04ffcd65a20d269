"""``train.py`` end to end, as a user runs it: a subprocess per run, then what it left on disk.

Both implementations, on the synthetic data (SYNTH_SMALL) and on real digits (mnist-mini via MNIST_ROOT):
exit code, run directory layout, TensorBoard tags on the optimizer-step axis, ``hparams.yaml``, checkpoints
that load into the other implementation, and the same trajectory from ``--impl manual`` and ``--impl lightning``.

The runs are started once per module and in parallel (each is its own process); the tests read their output.
"""
from __future__ import annotations

import math
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from mirror.tb import TAGS
from trainutil import ROOT, SYNTH_SMALL, run_train, scalars

EPOCH_TAGS = ("train/loss_epoch", "val/loss", "val/acc")
WORKERS = max(2, min(4, os.cpu_count() or 2))
# Several runs share the machine: one intra-op thread each. (Two threads per tiny step on a busy machine
# are many times slower than one; the results do not depend on it.)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
F64 = [*SYNTH_SMALL, "--dtype", "float64"]
# SYNTH_SMALL: 600 points in batches of 10 for 2 epochs, train/loss every 5 steps.
SYNTH_STEPS_PER_EPOCH, SYNTH_EPOCHS, SYNTH_LOG_EVERY = 60, 2, 5
MNIST_SHORT = ["--hidden", "32", "--epochs", "1", "--batch-size", "50", "--val-size", "1000", "--no-download"]
# mnist-mini in development mode: 7,000 training images, batches of 50, train/loss every 50 steps (default).
MNIST_STEPS_PER_EPOCH, MNIST_LOG_EVERY = 140, 50


def run_parallel(pipelines: list[list[tuple[str, list]]]) -> dict:
    """Run each pipeline's (key, args) in order, pipelines side by side; key -> CompletedProcess."""
    results = {}

    def go(pipeline):
        for key, args in pipeline:
            results[key] = run_train(*args, env=ENV)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for future in [pool.submit(go, p) for p in pipelines]:
            future.result()
    return results


def run_dir(log_dir: Path, impl: str, version: int = 0, experiment: str = "synth") -> Path:
    return Path(log_dir) / experiment / impl / f"version_{version}"


def ckpt(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def check_layout(run: Path, steps_per_epoch: int, epochs: int, log_every: int) -> dict:
    """The run directory's files, and every tag at the optimizer steps Lightning would use."""
    assert run.is_dir(), f"{run} missing; the parent holds {sorted(p.name for p in run.parent.iterdir())}"
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert (run / "hparams.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    logged = scalars(run)
    missing = set(TAGS) - set(logged)
    assert not missing, f"tags missing: {missing}"
    total = steps_per_epoch * epochs
    assert [s for s, _ in logged["train/loss"]] == list(range(log_every - 1, total, log_every))
    for tag in EPOCH_TAGS:
        assert [s for s, _ in logged[tag]] == [steps_per_epoch * (e + 1) - 1 for e in range(epochs)], tag
    for tag in TAGS:
        assert all(math.isfinite(v) for _, v in logged[tag]), tag
    return logged


def summary_acc(stdout: str) -> float:
    m = re.search(r"\| (?:val|test) acc (\S+) \|", stdout)
    assert m, f"no summary line in:\n{stdout}"
    return float(m.group(1))


def assert_same_scalars(a: dict, b: dict, rel: float = 1e-6) -> None:
    """Every shared tag at the same steps with values equal at float32 precision (event files hold float32)."""
    for tag in TAGS:
        steps_a, steps_b = [s for s, _ in a[tag]], [s for s, _ in b[tag]]
        assert steps_a == steps_b, tag
        for (step, va), (_, vb) in zip(a[tag], b[tag]):
            assert math.isclose(va, vb, rel_tol=rel, abs_tol=1e-7), f"{tag} at step {step}: {va} != {vb}"


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape, name
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=lambda m: f"{name}: {m}")


def evaluate_weights(impl: str, checkpoint: dict) -> tuple[float, float]:
    """Load a checkpoint's weights into ``impl``'s network and evaluate it on the run's own validation split."""
    from mirror import config as config_mod
    from mirror.data import load_data

    cfg = config_mod.from_dict(checkpoint["config"])
    _, val = load_data(cfg)
    dtype = getattr(torch, cfg.dtype)
    if impl == "manual":
        import manual
        from manual.train import evaluate
        model = manual.MLP(cfg.sizes, cfg.activation, dtype=dtype)
    else:
        import lightning_ref
        from lightning_ref.module import evaluate
        model = lightning_ref.MLP(cfg.sizes, cfg.activation, dtype=dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(checkpoint["weights"])
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), "weights did not load"
    return evaluate(model, val, cfg.eval_batch_size)


# ------------------------------------------------------------------------- synthetic data, manual only

@pytest.fixture(scope="module")
def manual_synth(tmp_path_factory):
    """The same SYNTH_SMALL float64 run twice into one log dir: version_0, then version_1."""
    log = tmp_path_factory.mktemp("manual_synth")
    args = ["--impl", "manual", *F64, "--log-dir", log]
    first = run_train(*args, env=ENV)
    second = run_train(*args, env=ENV)
    return log, first, second


def test_manual_run_layout(manual_synth):
    log, first, _ = manual_synth
    assert first.returncode == 0
    run = run_dir(log, "manual")
    logged = check_layout(run, SYNTH_STEPS_PER_EPOCH, SYNTH_EPOCHS, SYNTH_LOG_EVERY)
    assert str(run) in first.stdout
    assert summary_acc(first.stdout) == pytest.approx(logged["val/acc"][-1][1], abs=5e-5)
    c = ckpt(run)
    assert c["impl"] == "manual" and c["step"] == SYNTH_STEPS_PER_EPOCH * SYNTH_EPOCHS
    assert c["config"] == yaml.safe_load((run / "hparams.yaml").read_text())
    assert c["config"]["dtype"] == "float64" and c["weights"]["layers.0.weight"].dtype == torch.float64
    assert {k: tuple(v.shape) for k, v in c["weights"].items()} == {
        "layers.0.weight": (3, 2), "layers.0.bias": (3,), "layers.1.weight": (2, 3), "layers.1.bias": (2,)}
    # The loss must have moved: the run trained.
    losses = [v for _, v in logged["train/loss"]]
    assert losses[-1] < losses[0]


def test_second_run_gets_a_new_version(manual_synth):
    log, first, second = manual_synth
    assert second.returncode == 0
    v0, v1 = run_dir(log, "manual", 0), run_dir(log, "manual", 1)
    assert sorted(p.name for p in v0.parent.iterdir() if not p.name.startswith(".")) == ["version_0", "version_1"]
    assert str(v1) in second.stdout and str(v0) in first.stdout
    check_layout(v1, SYNTH_STEPS_PER_EPOCH, SYNTH_EPOCHS, SYNTH_LOG_EVERY)
    # version_0 was left alone: still one event file, its checkpoint unchanged (runs are deterministic).
    assert len(list(v0.glob("events.out.tfevents.*"))) == 1
    assert_same_weights(ckpt(v0)["weights"], ckpt(v1)["weights"], atol=0)


# ----------------------------------------------------------------- synthetic data, both implementations

@pytest.fixture(scope="module")
def synth_pairs(manual_synth, tmp_path_factory):
    """Lightning twice beside manual's runs, and both implementations with momentum 0.9."""
    log, _, _ = manual_synth
    mom = tmp_path_factory.mktemp("momentum")
    lightning = ["--impl", "lightning", *F64, "--log-dir", log]
    results = run_parallel([
        [("lightning", lightning), ("lightning_again", lightning)],
        [("manual_momentum", ["--impl", "manual", *F64, "--momentum", "0.9", "--log-dir", mom])],
        [("lightning_momentum", ["--impl", "lightning", *F64, "--momentum", "0.9", "--log-dir", mom])],
    ])
    return log, mom, results


@pytest.mark.slow
def test_lightning_run_layout(synth_pairs):
    log, mom, results = synth_pairs
    for key in ("lightning", "lightning_again", "lightning_momentum"):
        assert results[key].returncode == 0, key
    for run in (run_dir(log, "lightning", 0), run_dir(log, "lightning", 1), run_dir(mom, "lightning", 0)):
        check_layout(run, SYNTH_STEPS_PER_EPOCH, SYNTH_EPOCHS, SYNTH_LOG_EVERY)
        c = ckpt(run)
        assert c["impl"] == "lightning" and c["step"] == SYNTH_STEPS_PER_EPOCH * SYNTH_EPOCHS
        assert c["config"] == yaml.safe_load((run / "hparams.yaml").read_text())
    assert str(run_dir(log, "lightning", 1)) in results["lightning_again"].stdout
    assert not run_dir(log, "lightning", 2).exists()
    # Both implementations record the same settings.
    assert (run_dir(log, "lightning") / "hparams.yaml").read_text() == \
        (run_dir(log, "manual") / "hparams.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("momentum", [False, True], ids=["sgd", "momentum0.9"])
def test_trajectory_parity_float64(synth_pairs, momentum):
    """Same config and seed, float64: final weights within 1e-9 and the same logged curves."""
    log, mom, _ = synth_pairs
    root = mom if momentum else log
    man, light = run_dir(root, "manual"), run_dir(root, "lightning")
    cm, cl = ckpt(man), ckpt(light)
    assert cm["config"]["momentum"] == cl["config"]["momentum"] == (0.9 if momentum else 0.0)
    assert_same_weights(cm["weights"], cl["weights"], atol=1e-9)
    assert_same_scalars(scalars(man), scalars(light))
    for tag in EPOCH_TAGS:  # the checkpoints' metrics are float64: compare them tighter
        assert math.isclose(cm["metrics"][tag], cl["metrics"][tag], rel_tol=1e-9, abs_tol=1e-12), tag


@pytest.mark.slow
def test_momentum_changes_the_trajectory(synth_pairs):
    """Guards the parity test above: with and without momentum must differ, or it compares nothing."""
    log, mom, _ = synth_pairs
    a, b = ckpt(run_dir(log, "manual"))["weights"], ckpt(run_dir(mom, "manual"))["weights"]
    assert max(float((a[k] - b[k]).abs().max()) for k in a) > 1e-3


@pytest.mark.slow
def test_synth_checkpoints_load_into_the_other_implementation(synth_pairs):
    log, _, _ = synth_pairs
    for trained_by in ("manual", "lightning"):
        c = ckpt(run_dir(log, trained_by))
        results = {impl: evaluate_weights(impl, c) for impl in ("manual", "lightning")}
        logged_acc = c["metrics"]["val/acc"]
        for impl, (loss, acc) in results.items():
            assert acc == pytest.approx(logged_acc, abs=1e-12), (trained_by, impl)
            assert loss == pytest.approx(c["metrics"]["val/loss"], rel=1e-9), (trained_by, impl)


# ----------------------------------------------------------------------------------------- mnist-mini

_MNIST_CACHE: dict = {}


@pytest.fixture
def mnist_runs(mnist_root, tmp_path_factory):
    """A short float32 run of each implementation on mnist-mini (started once, side by side)."""
    if "runs" not in _MNIST_CACHE:
        log = tmp_path_factory.mktemp("mnist")
        data = ["--data-dir", Path(mnist_root).resolve(), *MNIST_SHORT, "--log-dir", log]
        results = run_parallel([[(impl, ["--impl", impl, *data])] for impl in ("manual", "lightning")])
        _MNIST_CACHE["runs"] = (log, results)
    return _MNIST_CACHE["runs"]


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["manual", "lightning"])
def test_mnist_run_layout(mnist_runs, impl):
    log, results = mnist_runs
    assert results[impl].returncode == 0
    run = run_dir(log, impl, experiment="mnist")
    logged = check_layout(run, MNIST_STEPS_PER_EPOCH, 1, MNIST_LOG_EVERY)
    c = ckpt(run)
    assert c["config"]["hidden"] == [32] and c["weights"]["layers.0.weight"].shape == (32, 784)
    assert c["weights"]["layers.0.weight"].dtype == torch.float32
    acc = logged["val/acc"][-1][1]
    assert acc > 0.8, f"one epoch on 7,000 digits should pass 80% validation accuracy, got {acc}"
    assert summary_acc(results[impl].stdout) == pytest.approx(acc, abs=5e-5)


@pytest.mark.slow
def test_mnist_implementations_agree_float32(mnist_runs):
    log, _ = mnist_runs
    man, light = ckpt(run_dir(log, "manual", experiment="mnist")), ckpt(run_dir(log, "lightning", experiment="mnist"))
    assert abs(man["metrics"]["val/acc"] - light["metrics"]["val/acc"]) <= 0.002  # 0.2 percentage points
    # float32 rounding differs between the two, but after 140 steps the weights are still close.
    assert_same_weights(man["weights"], light["weights"], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("trained_by", ["manual", "lightning"])
def test_mnist_checkpoint_loads_into_the_other_implementation(mnist_runs, trained_by):
    log, _ = mnist_runs
    c = ckpt(run_dir(log, trained_by, experiment="mnist"))
    n_val = 1000
    for impl in ("manual", "lightning"):
        loss, acc = evaluate_weights(impl, c)
        # float32: a matmul in another order could flip one borderline digit, never more.
        assert abs(acc - c["metrics"]["val/acc"]) <= 1 / n_val + 1e-9, (trained_by, impl, acc)
        assert loss == pytest.approx(c["metrics"]["val/loss"], rel=1e-4)


@pytest.mark.slow
def test_evaluate_py_gives_the_same_accuracy(mnist_runs):
    if not (ROOT / "evaluate.py").is_file():
        pytest.skip("evaluate.py is not there yet")
    import subprocess
    log, _ = mnist_runs

    def evaluate(checkpoint: Path, impl: str) -> float:
        proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), str(checkpoint), "--impl", impl],
                              cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
        assert proc.returncode == 0, proc.stderr
        m = re.search(r"(?:val|test) acc ([0-9.]+)", proc.stdout)
        assert m, proc.stdout
        return float(m.group(1))

    # The Lightning-trained checkpoint, read by both implementations (two processes, side by side).
    checkpoint = run_dir(log, "lightning", experiment="mnist") / "checkpoints" / "last.ckpt"
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {impl: pool.submit(evaluate, checkpoint, impl) for impl in ("manual", "lightning")}
    accs = {impl: f.result() for impl, f in futures.items()}
    assert accs["manual"] == accs["lightning"], accs
    logged = ckpt(checkpoint.parent.parent)["metrics"]["val/acc"]
    assert accs["manual"] == pytest.approx(logged, abs=1.5e-3), (accs, logged)
