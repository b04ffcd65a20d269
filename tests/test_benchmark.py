"""``benchmarks/train_speed.py --quick`` runs end to end and writes well-formed JSON and Markdown.

Speeds are not asserted: this machine is shared and noisy, and a timed test would be a flaky one. The
benchmark itself alternates its contenders in one process; its full run is what the README reports.
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = {"manual", "manual-bare", "autograd", "lightning", "floor"}
BATCH_SIZES = ["1", "32", "128", "1024"]
RATIOS = {"manual/autograd", "manual/lightning", "manual/floor", "bare/autograd", "bare/floor",
          "lightning/autograd", "logging_cost", "manual_gflops", "peak_share", "ceiling"}


def _run_script(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _is_summary(s) -> bool:
    return (isinstance(s, dict) and {"median", "min", "max", "values"} <= set(s)
            and all(math.isfinite(v) for v in s["values"]) and s["min"] <= s["median"] <= s["max"])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = _run_script("train_speed.py", "--quick", "--out", str(out), timeout=600)
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
    # Enough to tell two hosts apart that share a model name; the family is None off x86 only.
    assert {"cpu", "cpu_family", "cpu_model", "cpu_capability", "onednn"} <= set(report["machine"])
    assert report["machine"]["cpu_capability"]
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
    st = report["steadiness"]
    assert st["max_over_min"] >= 1.0 and isinstance(st["steady"], bool)
    assert st["steady"] == (st["max_over_min"] <= st["limit"])


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
    report = json.loads((out / "train_speed_quick.json").read_text())
    assert f"Machine: {_load('train_speed').describe_cpu(report['machine'])}, " in md


def _rendered(json_path: Path, tmp_path: Path) -> str:
    """The Markdown ``--render`` writes for a copy of ``json_path``."""
    shutil.copy(json_path, tmp_path / "r.json")
    proc = _run_script("train_speed.py", "--render", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    return (tmp_path / "r.md").read_text()


def test_render_rewrites_the_markdown_a_run_wrote(quick_run, tmp_path):
    out, _ = quick_run
    assert _rendered(out / "train_speed_quick.json", tmp_path) == (out / "train_speed_quick.md").read_text()


@pytest.mark.parametrize("content", [None, "{}", "not json"])
def test_render_refuses_what_is_not_a_results_json(tmp_path, content):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    proc = _run_script("train_speed.py", "--render", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], proc.stderr
    assert not (tmp_path / "r.md").exists()


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(ts, speeds: dict[str, dict[str, list[float]]]) -> dict:
    return {bs: {"samples_per_s": {name: ts.summary(v) for name, v in by_name.items()}}
            for bs, by_name in speeds.items()}


def test_steadiness_names_the_contender_that_varied_most():
    ts = _load("train_speed")
    steady = ts.steadiness(_results(ts, {"32": {"manual": [100.0, 105.0, 102.0], "floor": [200.0, 210.0, 205.0]}}))
    assert steady["steady"] and steady["max_over_min"] == pytest.approx(1.05)
    assert ts.steadiness_line(steady).startswith("Steady run")
    # One repeat where the machine ran at two thirds of its speed: the run is unsteady, and says where.
    shaky = ts.steadiness(_results(ts, {"32": {"manual": [100.0, 101.0, 102.0]},
                                    "1024": {"autograd": [90.0, 60.0, 91.0], "floor": [300.0, 310.0, 305.0]}}))
    assert not shaky["steady"]
    assert (shaky["batch"], shaky["contender"]) == (1024, "autograd")
    assert shaky["max_over_min"] == pytest.approx(91 / 60)
    line = ts.steadiness_line(shaky)
    assert line.startswith("**Unsteady run**") and "the textbook loop at batch 1024" in line and "60-91" in line


def test_describe_cpu_names_family_model_and_libraries_and_reads_old_jsons():
    ts = _load("train_speed")
    m = {"cpu": "AMD EPYC", "cpu_family": "25", "cpu_model": "17", "cpu_capability": "AVX512", "onednn": "3.12.0"}
    assert ts.describe_cpu(m) == "AMD EPYC (family 25, model 17; AVX512, oneDNN 3.12.0)"
    assert ts.describe_cpu({**m, "cpu_family": None, "cpu_model": None, "onednn": None}) == "AMD EPYC (AVX512)"
    assert ts.describe_cpu({"cpu": "AMD EPYC"}) == "AMD EPYC"  # a JSON written before these fields


def test_committed_results_render_as_committed(tmp_path):
    """The README's table comes from this JSON: rendering it again must give the committed Markdown."""
    results = ROOT / "benchmarks" / "results"
    for json_path in [results / "train_speed.json", *sorted((results / "other-runs").glob("*.json"))]:
        assert _rendered(json_path, tmp_path) == json_path.with_suffix(".md").read_text(), json_path.name


def test_step_profile_reports_every_phase_and_the_call_cost():
    proc = _run_script("step_profile.py", "--batch-sizes", "1", "64", "--steps", "30", "--rounds", "3")
    assert proc.returncode == 0, proc.stderr
    phases = list(_load("step_profile").PHASES)
    for bs in (1, 64):
        block = proc.stdout.split(f"batch {bs} (30 steps): ")[1].split("\n\n")[0].splitlines()
        total = float(block[0].split(" us")[0].replace(",", ""))
        bound = [line for line in block if line.startswith("  the five products alone: ")]
        # Only a gathered batch has a gather to weigh: batch size 1 takes views.
        assert len(bound) == (bs > 1), block
        if bound:
            m = re.fullmatch(r"  the five products alone: ([\d,.]+) us a step on fixed inputs, ([\d,.]+) us with a "
                             r"shuffled batch gathered each step: (\d+)% of the speed \(median of 3 rounds\)",
                             bound[0])
            assert m, bound[0]
            fixed, gathered = (float(m.group(i).replace(",", "")) for i in (1, 2))
            assert fixed > 0 and gathered > 0 and int(m.group(3)) > 0
            block.remove(bound[0])
        rows = {line[:26].strip(): float(line[26:].split()[0].replace(",", "")) for line in block[1:]}
        assert list(rows) == phases, block
        assert all(v > 0 for v in rows.values()) and sum(rows.values()) == pytest.approx(total, rel=0.01)
    assert "one call, 2 x 3 product: torch.mm" in proc.stdout
    rank1 = proc.stdout.split("batch 1, first layer (300 x 784), median us a call: ")[1].splitlines()[0]
    calls = dict(item.rsplit(" ", 1) for item in rank1.split(", "))
    assert list(calls) == ["addmv", "addmm_", "addr_", "addmv + addmm_", "addmv + addr_"], rank1
    assert all(float(us) > 0 for us in calls.values()), rank1


def test_step_profile_refuses_a_nonpositive_batch_size():
    proc = _run_script("step_profile.py", "--batch-sizes", "0")
    assert proc.returncode == 2 and "must be positive" in proc.stderr
    proc = _run_script("step_profile.py", "--rounds", "0")
    assert proc.returncode == 2 and "must be positive" in proc.stderr


def test_threads_trace_prints_a_line_per_round_for_each_thread_count():
    proc = _run_script("threads_trace.py", "--seconds", "0.01", "--scale", "0.01")
    assert proc.returncode == 0, proc.stderr
    rounds = [line for line in proc.stdout.splitlines() if line.strip().endswith(tuple("0123456789"))
              and "thread" in line and "ratio" in line]
    assert len(rounds) >= 1
    two_counts = "threads_trace: torch's default is 1 threads" not in proc.stdout
    for line in rounds:
        pairs = re.findall(r"bs(\d+) manual +([\d.]+)k autograd +([\d.]+)k ratio ([\d.]+)", line)
        # batch 1 and 32, on torch's thread count and then on one thread
        assert [bs for bs, *_ in pairs] == ["1", "32"] * (2 if two_counts else 1), line
        assert line.split("s  ", 1)[1].count("1 thread :") == 1, line
        for _, m, a, r in pairs:
            m, a, r = float(m), float(a), float(r)
            assert m > 0 and a > 0
            # The speeds are printed to 0.05k and the ratio to 0.005: at ~1k samples/s (batch 1 on a loaded
            # machine) the speeds' rounding alone moves their quotient by 5%.
            assert (m - 0.05) / (a + 0.05) - 0.005 <= r <= (m + 0.05) / max(a - 0.05, 1e-9) + 0.005, line
