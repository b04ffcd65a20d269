"""Every experiment file in ``configs/``: it loads, says how to run it, sets only what differs from the
defaults, and trains a few steps through ``train.py``.

A file with a top-level ``sweep:`` section is a sweep file for ``sweep.py`` (``mirror/sweep.py`` reads it): it
is checked here for loading and for naming its command; running sweeps is for the sweep's own tests.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from mirror import config as config_mod
from trainutil import ROOT, run_train, scalars

ALL_FILES = sorted((ROOT / "configs").glob("*.yaml"))


def _is_sweep(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return False  # then it is treated as a train config, and test_loads_and_validates says what is wrong
    return isinstance(data, dict) and "sweep" in data


CONFIGS = [p for p in ALL_FILES if not _is_sweep(p)]
SWEEPS = [p for p in ALL_FILES if _is_sweep(p)]
EXPECTED = {"mnist", "synth", "mnist_per_instance", "mnist_minibatch"}
DEFAULTS = config_mod.Config()


def ids(paths):
    return [p.stem for p in paths]


def test_expected_configs_exist():
    assert EXPECTED <= {p.stem for p in CONFIGS}
    assert not list((ROOT / "configs").glob("*.yml")), "use the .yaml extension"


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_loads_and_validates(path):
    cfg = config_mod.build(path, {})
    assert cfg.experiment == path.stem  # runs land in <log_dir>/<file name>/<impl>/version_N
    # The file alone must not depend on where it runs: no machine-specific paths.
    raw = config_mod.load_yaml(path)
    assert not {"data_dir", "log_dir", "device"} & set(raw), "leave paths and devices to the command line"


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_first_line_is_the_command(path):
    first = path.read_text().splitlines()[0]
    assert re.fullmatch(rf"# python train\.py --impl (manual|lightning) --config configs/{re.escape(path.name)}",
                        first), first


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_sets_only_what_differs_from_defaults(path):
    raw = yaml.safe_load(path.read_text()) or {}
    assert isinstance(raw, dict)
    for key, value in raw.items():
        assert key in config_mod.FIELDS, f"unknown key {key!r}"
        coerced = config_mod.from_dict({key: value}).to_dict()[key]
        assert coerced != DEFAULTS.to_dict()[key], f"{path.name}: {key}: {value!r} is the default; drop it"


def test_experiment_settings():
    """The settings the assignment's questions call for (defaults included, so a changed default shows)."""
    def cfg(name):
        return config_mod.build(ROOT / "configs" / f"{name}.yaml", {})

    mnist = cfg("mnist")
    assert (mnist.dataset, mnist.sizes, mnist.activation) == ("mnist", [784, 300, 10], "sigmoid")
    assert not mnist.final and mnist.val_size == 5000

    synth = cfg("synth")  # question 4
    assert (synth.dataset, synth.sizes, synth.activation) == ("synth", [2, 3, 2], "sigmoid")
    assert (synth.batch_size, synth.lr, synth.log_every, synth.epochs) == (1, 0.01, 150, 5)
    assert (synth.synth_train, synth.synth_val, synth.seed) == (60000, 10000, 0)

    per_instance = cfg("mnist_per_instance")
    assert (per_instance.dataset, per_instance.sizes) == ("mnist", [784, 300, 10])
    assert (per_instance.batch_size, per_instance.lr, per_instance.epochs, per_instance.log_every) == \
        (1, 0.1, 10, 500)

    minibatch = cfg("mnist_minibatch")
    assert (minibatch.dataset, minibatch.sizes) == ("mnist", [784, 300, 10])
    assert (minibatch.batch_size, minibatch.lr, minibatch.epochs) == (50, 1.0, 5)

    for c in (mnist, synth, per_instance, minibatch):
        assert (c.momentum, c.weight_decay, c.shuffle, c.dtype) == (0.0, 0.0, True, "float32")


def test_command_line_overrides_config():
    cfg = config_mod.build(ROOT / "configs" / "synth.yaml", {"lr": 0.03, "epochs": None})
    assert cfg.lr == 0.03 and cfg.epochs == 5 and cfg.batch_size == 1


def _train_args(path: Path, log_dir: Path, mnist_root) -> list:
    args = ["--impl", "manual", "--config", path.relative_to(ROOT), "--max-steps", 3, "--epochs", 1,
            "--log-dir", log_dir]
    if config_mod.build(path, {}).dataset == "mnist":
        args += ["--data-dir", mnist_root, "--val-size", 1000, "--no-download"]
    return args


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_runs_a_few_steps(path, tmp_path, request, capsys, monkeypatch):
    """In-process ``train.main`` (one interpreter for all configs keeps this fast); the subprocess path is
    covered by tests/test_train_e2e.py."""
    mnist_root = None
    if config_mod.build(path, {}).dataset == "mnist":
        mnist_root = request.getfixturevalue("mnist_root")
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    import train
    code = train.main([str(a) for a in _train_args(path, tmp_path, mnist_root)] + ["--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    run_dir = tmp_path / path.stem / "manual" / "version_0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "hparams.yaml").is_file()
    logged = scalars(run_dir)
    assert [s for s, _ in logged["val/acc"]] == [2]  # stopped after 3 steps: epoch tags at step index 2
    assert str(run_dir) in out.out


def test_config_runs_through_subprocess(tmp_path):
    proc = run_train(*_train_args(ROOT / "configs" / "synth.yaml", tmp_path, None),
                     env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0
    assert (tmp_path / "synth" / "manual" / "version_0" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("path", SWEEPS, ids=ids(SWEEPS))
def test_sweep_files(path):
    from mirror.sweep import base_config, split_sweep_file
    grid, train_config = split_sweep_file(path)
    assert grid and set(grid) <= {"seeds", "lrs", "impls"}
    cfg = base_config(train_config, {}, str(path))
    assert cfg.dataset in config_mod.DATASETS
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert any(re.search(rf"python sweep\.py --config configs/{re.escape(path.name)}\b", line) for line in header), \
        "the leading comment must give the sweep.py command that runs this file"


def test_unknown_key_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("# python train.py --impl manual --config bad.yaml\nlr: 0.1\nlearning_rate: 0.1\n")
    with pytest.raises(config_mod.ConfigError, match="learning_rate"):
        config_mod.build(bad, {})
    proc = run_train("--config", bad, "--log-dir", tmp_path / "runs", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "learning_rate" in lines[0]
    assert not (tmp_path / "runs").exists()  # refused before anything was written


@pytest.mark.parametrize("text, field", [("lr: fast\n", "lr"), ("hidden: [300, -1]\n", "hidden"),
                                         ("dataset: cifar\n", "dataset"), ("batch_size: 0\n", "batch_size")])
def test_bad_values_are_refused(tmp_path, text, field):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(config_mod.ConfigError, match=rf"^{field}:"):
        config_mod.build(bad, {})
