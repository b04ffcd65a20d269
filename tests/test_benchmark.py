"""``benchmarks/train_speed.py --quick`` runs end to end and writes well-formed JSON and Markdown.

Speeds are not asserted: this machine is shared and noisy, and a timed test would be a flaky one. The
benchmark itself alternates its contenders in one process; its full run is what the README reports.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = {"manual", "manual-bare", "autograd", "lightning", "floor"}
BATCH_SIZES = ["1", "32", "128", "1024"]
RATIOS = {"manual/autograd", "manual/lightning", "manual/floor", "bare/autograd", "bare/floor",
          "lightning/autograd", "logging_cost", "manual_gflops", "peak_share", "ceiling"}


def _is_summary(s) -> bool:
    return (isinstance(s, dict) and {"median", "min", "max", "values"} <= set(s)
            and all(math.isfinite(v) for v in s["values"]) and s["min"] <= s["median"] <= s["max"])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return out, proc


def test_quick_mode_writes_both_files_and_only_there(quick_run):
    out, proc = quick_run
    assert sorted(p.name for p in out.iterdir()) == ["train_speed_quick.json", "train_speed_quick.md"]
    assert "train_speed_quick.md" in proc.stdout


def test_quick_json_is_well_formed(quick_run):
    out, _ = quick_run
    report = json.loads((out / "train_speed_quick.json").read_text())
    assert report["command"].startswith("python benchmarks/train_speed.py --quick")
    assert report["date"] and report["machine"]["cores"] >= 1 and report["machine"]["torch_threads"] >= 1
    assert report["settings"]["quick"] is True and report["settings"]["repeats"] >= 1
    assert report["memory"] is None          # --quick skips the child-process memory runs
    peak = report["peak_gflops"]
    assert "torch.mm" in peak and all(_is_summary(v) and v["median"] > 0 for v in peak.values())
    assert peak["best"]["median"] >= peak["torch.mm"]["median"]
    assert sorted(report["results"], key=int) == BATCH_SIZES
    for bs, r in report["results"].items():
        assert r["steps"] >= 1, bs
        assert set(r["samples_per_s"]) == CONTENDERS, bs
        for name, s in r["samples_per_s"].items():
            assert _is_summary(s) and s["min"] > 0, (bs, name)
            assert len(s["values"]) == report["settings"]["repeats"], (bs, name)
        for key in RATIOS:
            assert _is_summary(r[key]), (bs, key)
        # Same weights, same batches: every trained contender ends on (nearly) the same loss.
        assert set(r["check_loss"]) == CONTENDERS - {"floor"}, bs
        assert r["check_loss_spread"] < 1e-3, (bs, r["check_loss"])
    metrics = {(t["batch"], t["metric"]) for t in report["targets"]}
    assert (1, "manual/autograd") in metrics and (1024, "manual/floor") in metrics
    assert all(isinstance(t["holds"], bool) for t in report["targets"])


def test_quick_markdown_has_both_tables(quick_run):
    out, _ = quick_run
    md = (out / "train_speed_quick.md").read_text()
    assert md.startswith("`python benchmarks/train_speed.py --quick")
    tables = [line for line in md.splitlines() if line.startswith("|")]
    headers = [line for line in tables if line.startswith("| batch |")]
    assert len(headers) == 2
    for bs in BATCH_SIZES:
        rows = [line for line in tables if line.startswith(f"| {bs} |")]
        assert len(rows) == 2, (bs, rows)
        for row, header in zip(rows, headers):   # one speed row, then one ratio row, each as wide as its header
            assert row.count("|") == header.count("|"), (row, header)
    assert "Peak memory: not measured" in md
