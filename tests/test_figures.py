"""figures.py on the small sweep of test_sweep.py: every figure as a PNG, and a summary whose numbers are the
mean and standard deviation of the runs' final values in their event files."""
from __future__ import annotations

import json
import re
import shutil
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mirror import figures as fig_mod
from test_sweep import swept  # noqa: F401  (the session's small sweep, run once for both files)
from trainutil import ROOT, scalars


@pytest.fixture(scope="module")
def drawn(swept, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("figures") / "small"
    proc = subprocess.run([sys.executable, str(ROOT / "figures.py"), str(swept["sweep_dir"]), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("name", sorted(fig_mod.FIGURES.values()))
def test_every_figure_is_a_png_of_sensible_size(drawn, name):
    out, _ = drawn
    path = out / name
    assert path.is_file(), f"{name} was not written"
    width, height = png_size(path)
    assert 600 <= width <= 3000 and 400 <= height <= 3000, (width, height)
    assert path.stat().st_size > 20_000          # drawn curves, not an empty canvas
    assert f"]({name})" in (out / "summary.md").read_text()


def expected_rows(swept) -> dict:  # noqa: F811
    """(impl, lr) -> final val loss and acc per seed, read from the event files of the sweep's finished runs."""
    rows: dict = {}
    for p in swept["manifest"]["points"]:
        if p["status"] != "ok":
            continue
        logged = scalars(p["run_dir"])
        rows.setdefault((p["impl"], p["lr"]), []).append((p["seed"], logged["val/loss"][-1][1],
                                                          logged["val/acc"][-1][1]))
    return rows


def test_summary_is_mean_and_std_over_seeds_of_the_event_files(drawn, swept):  # noqa: F811
    out, _ = drawn
    expected = expected_rows(swept)
    table = re.findall(r"^\| (\S+) \| (manual|lightning) \| ([\d, ]+) \| (\S+) ± (\S+) \| (\S+) ± (\S+) \|$",
                       (out / "summary.md").read_text(), flags=re.M)
    assert len(table) == len(expected) == 4
    for lr, impl, seeds, loss_mean, loss_std, acc_mean, acc_std in table:
        runs = expected[(impl, float(lr))]
        assert [int(s) for s in seeds.split(", ")] == [seed for seed, _, _ in runs]
        losses, accs = [loss for _, loss, _ in runs], [acc for _, _, acc in runs]
        assert loss_mean == f"{statistics.mean(losses):.4f}" and loss_std == f"{statistics.stdev(losses):.4f}"
        assert acc_mean == f"{statistics.mean(accs):.4f}" and acc_std == f"{statistics.stdev(accs):.4f}"
    data = json.loads((out / "summary.json").read_text())
    for row in data["groups"]:
        runs = expected[(row["impl"], row["lr"])]
        losses, accs = [loss for _, loss, _ in runs], [acc for _, _, acc in runs]
        assert row["val_loss_mean"] == pytest.approx(statistics.mean(losses), rel=1e-12)
        assert row["val_loss_std"] == pytest.approx(statistics.stdev(losses), rel=1e-12)
        assert row["val_acc_mean"] == pytest.approx(statistics.mean(accs), rel=1e-12)
        assert row["val_acc_std"] == pytest.approx(statistics.stdev(accs), rel=1e-12)


def test_summary_compares_the_implementations_and_names_the_failed_points(drawn, swept):  # noqa: F811
    out, proc = drawn
    data = json.loads((out / "summary.json").read_text())
    assert {(p["lr"], p["seed"]) for p in data["manual_vs_lightning"]} == {(1.0, 0), (1.0, 1), (3.0, 0), (3.0, 1)}
    assert all(p["points"] == 80 and p["train_loss"] < 1e-4 for p in data["manual_vs_lightning"])
    text = (out / "summary.md").read_text()
    for seed in (0, 1):
        for impl in ("manual", "lightning"):
            line = (f"- lr-1_seed{seed} {impl}: failed, exit 2: error: lr: -1.0 is not valid; "
                    "expected a positive finite number")
            assert line in text
            assert line[2:] in proc.stdout


def test_smoothing_window_is_in_instances():
    # Batch size 5, train/loss logged every 5 steps: a window of 150 instances is 150 / 25 = 6 points.
    steps = np.arange(4, 400, 5)
    values = np.random.default_rng(0).random(len(steps))
    run = fig_mod.Run(Path("."), "manual", {"lr": 0.1, "seed": 0, "batch_size": 5},
                      {"train/loss": (steps, values)})
    assert fig_mod.window_points(run, 150) == 6
    s_steps, s_values = fig_mod.smoothed(run, 150)
    assert list(s_steps) == list(steps[5:])
    assert np.allclose(s_values, [values[i - 5:i + 1].mean() for i in range(5, len(values))])
    run.config["batch_size"] = 1000                      # a window shorter than one logged step: no smoothing
    assert fig_mod.window_points(run, 150) == 1


def test_plain_folder_of_runs_counts_a_repeated_run_once(swept, tmp_path):  # noqa: F811
    """Without a sweep.json every run below the folder is read; a rerun of the same settings replaces the
    older one rather than counting as another seed."""
    folder = tmp_path / "runs"
    shutil.copytree(swept["sweep_dir"] / "lr1_seed0", folder / "lr1_seed0")
    shutil.copytree(folder / "lr1_seed0" / "manual" / "version_0", folder / "lr1_seed0" / "manual" / "version_1")
    runs, notes = fig_mod.find_runs([folder])
    assert [(r.impl, r.path.name) for r in runs] == [("manual", "version_1"), ("lightning", "version_0")]
    assert len(notes) == 1 and "only the newer is shown" in notes[0]


@pytest.mark.parametrize("args, code, message", [
    (["--window", "0"], 2, "--window: 0 is not valid"),
    ([], 1, "no finished runs under"),
])
def test_figures_cli_errors_are_one_line(tmp_path, args, code, message):
    proc = subprocess.run([sys.executable, str(ROOT / "figures.py"), str(tmp_path), "--out", str(tmp_path / "f"),
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == code and proc.stderr.startswith("error: ") and message in proc.stderr
    assert proc.stderr.count("\n") == 1
