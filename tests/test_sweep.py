"""sweep.py: one train.py run per grid point, each in its own TensorBoard run; a failing point fails alone."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import sweep as sweep_cli
from mirror import sweep as sweep_mod
from trainutil import ROOT, scalars

SEEDS = (0, 1)
GOOD_LRS = (1.0, 3.0)
BAD_LR = -1.0            # train.py refuses it: every point with it must fail, and only those
IMPLS = ("manual", "lightning")
# 200 points of synthetic data in batches of 5, two epochs: 400 optimizer steps per run, logged every 5.
SWEEP_FILE = {
    "sweep": {"seeds": list(SEEDS), "lrs": [*GOOD_LRS, BAD_LR], "impls": list(IMPLS)},
    "dataset": "synth", "synth_train": 1000, "synth_val": 300, "hidden": [8], "batch_size": 5, "epochs": 2,
}
_CACHE: dict = {}


def small_sweep(tmp_root: Path) -> dict:
    """Run the small sweep once per test session (test_figures.py draws from it too)."""
    if "result" not in _CACHE:
        sweep_file = tmp_root / "small.yaml"
        sweep_file.write_text(yaml.safe_dump(SWEEP_FILE, sort_keys=False))
        log_dir = tmp_root / "runs"
        proc = subprocess.run(
            [sys.executable, str(ROOT / "sweep.py"), "--config", str(sweep_file), "--log-dir", str(log_dir),
             "--jobs", "2", "--", "--log-every", "5"],
            cwd=ROOT, capture_output=True, text=True, timeout=600)
        sweep_dir = log_dir / "small"
        _CACHE["result"] = {"proc": proc, "sweep_dir": sweep_dir,
                            "manifest": json.loads((sweep_dir / "sweep.json").read_text())}
    return _CACHE["result"]


@pytest.fixture(scope="session")
def swept(tmp_path_factory) -> dict:
    return small_sweep(tmp_path_factory.mktemp("sweep"))


def test_one_run_per_point_named_by_lr_and_seed(swept):
    points = swept["manifest"]["points"]
    ok = [p for p in points if p["status"] == "ok"]
    assert len(points) == len(SEEDS) * (len(GOOD_LRS) + 1) * len(IMPLS)
    assert {(p["lr"], p["seed"], p["impl"]) for p in ok} == {
        (lr, s, i) for lr in GOOD_LRS for s in SEEDS for i in IMPLS}
    for p in ok:
        run = Path(p["run_dir"])
        # The TensorBoard run name under --logdir <log-dir> reads small/lr1_seed0/manual/version_0.
        assert run == swept["sweep_dir"] / f"lr{p['lr']:g}_seed{p['seed']}" / p["impl"] / "version_0"
        hp = yaml.safe_load((run / "hparams.yaml").read_text())
        assert (hp["lr"], hp["seed"], hp["batch_size"], hp["hidden"]) == (p["lr"], p["seed"], 5, [8])
        logged = scalars(run)
        assert [s for s, _ in logged["train/loss"]] == list(range(4, 400, 5))   # 400 steps, every 5th
        assert len(logged["val/acc"]) == 2
        assert p["val_acc"] == pytest.approx(logged["val/acc"][-1][1], abs=5e-5)
        assert p["exit_code"] == 0 and p["error"] is None
        assert (run / "checkpoints" / "last.ckpt").is_file()
    # One run per point, nothing else: no extra versions, no runs for the refused learning rate.
    runs = sorted(str(p.relative_to(swept["sweep_dir"])) for p in swept["sweep_dir"].glob("*/*/version_*"))
    assert runs == sorted(str(Path(p["run_dir"]).relative_to(swept["sweep_dir"])) for p in ok)


def test_a_point_with_an_invalid_value_fails_alone_and_is_reported(swept):
    proc, points = swept["proc"], swept["manifest"]["points"]
    failed = [p for p in points if p["status"] != "ok"]
    assert {(p["lr"], p["seed"], p["impl"]) for p in failed} == {(BAD_LR, s, i) for s in SEEDS for i in IMPLS}
    for p in failed:
        assert p["status"] == "failed" and p["exit_code"] == 2 and p["run_dir"] is None
        assert p["error"] == "error: lr: -1.0 is not valid; expected a positive finite number"
        assert Path(p["log"]).is_file()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = proc.stdout[proc.stdout.index("sweep small: 8 of 12 points ok"):]
    for p in failed:
        assert f"{p['experiment']} {p['impl']}: failed (exit 2): {p['error']}" in summary
    assert swept["manifest"]["counts"] == {"ok": 8, "failed": 4}


def test_points_get_the_sweep_file_without_its_sweep_section(swept):
    written = yaml.safe_load((swept["sweep_dir"] / sweep_mod.TRAIN_CONFIG).read_text())
    assert written == {k: v for k, v in SWEEP_FILE.items() if k != "sweep"}
    # train.py reads it as a plain config: the sweep section is not passed on.
    assert all("--config" in p["argv"] for p in swept["manifest"]["points"])


def run_main(capsys, *argv) -> tuple[int, str, str]:
    code = sweep_cli.main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_dry_run_lists_the_grid_with_command_line_overrides(tmp_path, capsys):
    sweep_file = tmp_path / "grid.yaml"
    sweep_file.write_text(yaml.safe_dump(SWEEP_FILE))
    code, out, _ = run_main(capsys, "--config", sweep_file, "--lrs", "0.5", "0.25", "--impl", "manual",
                            "--log-dir", tmp_path / "runs", "--dry-run", "--", "--epochs", "3")
    assert code == 0
    commands = out.strip().splitlines()
    assert len(commands) == 2 * 2 * 1                                  # lrs from the command line, seeds from the file
    first = commands[0].split()
    assert first[first.index("--experiment") + 1] == "lr0.5_seed0"
    assert first[first.index("--log-dir") + 1] == str(tmp_path / "runs" / "grid")
    assert first[first.index("--epochs") + 1] == "3"
    assert not (tmp_path / "runs").exists()                            # a dry run starts nothing


@pytest.mark.parametrize("sweep_section, extra, message", [
    ({"lrs": [0.1], "steps": [1]}, [], "sweep: unknown key 'steps'"),
    ({"lrs": "fast"}, [], "sweep.lrs: ['fast'] is not valid; expected a list of numbers"),
    ({"impls": ["manual", "keras"]}, [], "sweep.impls"),
    ({"seeds": [0, 0]}, [], "lists a value twice"),
    ({}, ["--lr", "0.1"], "--lr after -- is set by the sweep for each point; use sweep.py's --lrs"),
    ({}, ["--batchsize", "3"], "train.py options after --: unrecognized arguments: --batchsize 3"),
    ({}, ["--batch-size", "0"], "batch_size: 0 is not valid"),
])
def test_a_bad_sweep_stops_before_any_run(tmp_path, capsys, sweep_section, extra, message):
    sweep_file = tmp_path / "bad.yaml"
    sweep_file.write_text(yaml.safe_dump({"sweep": sweep_section, "dataset": "synth"}))
    code, out, err = run_main(capsys, "--config", sweep_file, "--log-dir", tmp_path / "runs", "--", *extra)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_error_line_says_why_in_one_line():
    assert sweep_mod.error_line("loading\nerror: data: missing\n", 1) == "error: data: missing"
    assert sweep_mod.error_line("Traceback (most recent call last):\n  ...\nValueError: boom\n", 1) == \
        "crashed: ValueError: boom"
    assert sweep_mod.error_line("", -signal.SIGKILL) == "killed by SIGKILL"


def test_ctrl_c_stops_the_running_point_cleanly_and_skip_done_runs_only_the_rest(tmp_path):
    """A SIGINT reaches the sweep, which passes it to the running train.py (it saves a checkpoint and exits
    130) and starts no more points; the manifest says so, the sweep exits 130, and the same command with
    --skip-done would run exactly the points not yet ok."""
    log_dir = tmp_path / "runs"
    own = [sys.executable, str(ROOT / "sweep.py"), "--name", "stop", "--log-dir", str(log_dir),
           "--lrs", "0.1", "0.2"]
    train = ["--", "--dataset", "synth", "--hidden", "3", "--batch-size", "1", "--log-every", "1000"]
    proc = subprocess.Popen(own + train, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = log_dir / "stop" / "lr0.1_seed0" / "manual" / "version_0"
    deadline = time.monotonic() + 120
    while not list(first.glob("events.out.tfevents.*")) and time.monotonic() < deadline:  # training has begun
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    manifest = json.loads((log_dir / "stop" / "sweep.json").read_text())
    (a, b) = manifest["points"]
    assert (a["status"], a["exit_code"], a["run_dir"]) == ("interrupted", 130, str(first)), a
    assert a["error"].startswith("interrupted: stopped at step") and (first / "checkpoints" / "last.ckpt").is_file()
    assert (b["status"], b["exit_code"], b["log"]) == ("not run", None, None)
    assert "1 point(s) not started (the sweep was stopped): lr0.2_seed0 manual" in out

    # Pretend the first point had finished: --skip-done keeps it and would run only the second.
    a.update(status="ok", exit_code=0, error=None)
    (log_dir / "stop" / "sweep.json").write_text(json.dumps(manifest))
    again = subprocess.run([*own, "--skip-done", "--dry-run", *train], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    commands = again.stdout.strip().splitlines()
    assert len(commands) == 1 and "--experiment lr0.2_seed0" in commands[0]
