"""A grid of training runs: seeds x learning rates x implementations, one ``train.py`` process per point.

Each point is its own process, so a point that fails (a bad value, a diverging run, a crash) ends alone: the
sweep records its exit code and the one-line ``error:`` it printed, and carries on with the others. Runs land
in ``<log_dir>/<name>/lr<lr>_seed<seed>/<impl>/version_N``, so TensorBoard (``--logdir <log_dir>``) names each
run after its sweep, learning rate, seed and implementation. ``<log_dir>/<name>/sweep.json`` lists every point,
its status, error and run directory; it is rewritten after each point, so it is current even mid-sweep.

A sweep file is a ``train.py`` config plus a ``sweep:`` section holding the grid::

    sweep:
      seeds: [0, 1, 2]
      lrs: [0.001, 0.003, 0.01, 0.03]
      impls: [manual, lightning]
    epochs: 5
    batch_size: 1

Nothing here imports ``manual`` or ``lightning_ref``: the points run ``train.py``.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from . import config as config_mod
from .errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
TRAIN_PY = ROOT / "train.py"
SWEEP_KEYS = ("seeds", "lrs", "impls")
MANIFEST = "sweep.json"
TRAIN_CONFIG = "config.yaml"
_SUMMARY = re.compile(r"\| (?:val|test) loss (\S+) \| (?:val|test) acc (\S+) \|")


def point_name(lr: float, seed: int) -> str:
    """The experiment name of one grid point, e.g. ``lr0.01_seed1`` (TensorBoard shows it in the run name)."""
    return f"lr{lr:g}_seed{seed}"


@dataclass
class Point:
    lr: float
    seed: int
    impl: str
    experiment: str = ""
    status: str = "pending"          # pending, running, ok, failed, interrupted, not run
    exit_code: int | None = None
    error: str | None = None
    run_dir: str | None = None
    log: str | None = None
    seconds: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    argv: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.experiment:
            self.experiment = point_name(self.lr, self.seed)

    @property
    def label(self) -> str:
        return f"{self.experiment} {self.impl}"


@dataclass
class _Job:
    """A running point: its process, where its run directory will appear, its log file."""

    point: Point
    parent: Path                      # <sweep_dir>/<experiment>/<impl>
    before: set                       # version_N names there before the point started
    log_file: Any
    t0: float
    proc: subprocess.Popen | None = None


# ------------------------------------------------------------------------------------------- the grid

KINDS = {"seeds": "a list of integers", "lrs": "a list of numbers",
         "impls": f"a list of {' and '.join(config_mod.IMPLS)}"}


def _check_list(name: str, value: Any, source: str) -> list:
    if not isinstance(value, list):
        value = [value]
    ok = {
        "seeds": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "lrs": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "impls": lambda v: v in config_mod.IMPLS,
    }[name]
    if not value or not all(ok(v) for v in value):
        raise ConfigError(f"{source}: sweep.{name}: {value!r} is not valid; expected {KINDS[name]}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{source}: sweep.{name}: {value!r} lists a value twice; list each once")
    return [float(v) for v in value] if name == "lrs" else list(value)


def split_sweep_file(path: str | Path) -> tuple[dict, dict]:
    """``(grid, train_config)`` from a sweep file: its ``sweep:`` section and every other key."""
    data = dict(config_mod.load_yaml(path))
    grid = data.pop("sweep", None) or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: sweep: must be a mapping with keys {', '.join(SWEEP_KEYS)}")
    unknown = sorted(set(grid) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"{path}: sweep: unknown key {unknown[0]!r}; known keys: {', '.join(SWEEP_KEYS)}")
    return {k: _check_list(k, v, str(path)) for k, v in grid.items()}, data


def plan(lrs: list[float], seeds: list[int], impls: list[str]) -> list[Point]:
    """Every point, learning rate slowest, implementation fastest (so manual and Lightning twins run together)."""
    return [Point(lr=lr, seed=seed, impl=impl) for lr in lrs for seed in seeds for impl in impls]


def base_config(train_config: dict, overrides: dict, source: str) -> config_mod.Config:
    """The settings shared by every point, validated now so a typo stops the sweep before any run starts."""
    cfg = config_mod.from_dict(train_config, source=source)
    cfg = config_mod.from_dict(overrides, cfg, source="options after --")
    cfg.experiment = cfg.experiment or "sweep"
    return config_mod.validate(cfg)


# -------------------------------------------------------------------------------------------- running

def error_line(log_text: str, exit_code: int) -> str:
    """Why a point failed, in one line: train.py's ``error:``/``interrupted:`` line, else the last line."""
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(("error:", "interrupted:")):
            return ln
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"killed by {name}"
    return f"crashed: {lines[-1]}" if lines else f"exited {exit_code} without a message"


def _versions(parent: Path) -> set[str]:
    try:
        return {p.name for p in parent.iterdir() if re.fullmatch(r"version_\d+", p.name)}
    except FileNotFoundError:
        return set()


def _newest(names: set[str]) -> str | None:
    return max(names, key=lambda n: int(n.split("_")[1])) if names else None


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` so readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)


class Sweep:
    """Run ``points`` as ``train.py`` processes, at most ``jobs`` at once, and keep ``sweep.json`` current."""

    def __init__(self, points: list[Point], sweep_dir: Path, train_args: list[str], *, jobs: int = 1,
                 threads: int | None = None, manifest_extra: dict | None = None,
                 report: Callable[[str], None] = print, python: str = sys.executable) -> None:
        self.points, self.sweep_dir, self.train_args = points, Path(sweep_dir), list(train_args)
        self.jobs, self.report, self.python = max(1, jobs), report, python
        self.manifest_extra = manifest_extra or {}
        self.env = dict(os.environ)
        if threads is None and "OMP_NUM_THREADS" not in self.env:
            # One BLAS thread pool per process, sized so the processes together fill the cores once:
            # oversubscribed pools spin against each other and make small-batch training several times slower.
            threads = max(1, (os.cpu_count() or 1) // self.jobs)
        if threads is not None:
            self.env["OMP_NUM_THREADS"] = self.env["MKL_NUM_THREADS"] = str(threads)
        self.signum: int | None = None
        self.started = time.time()

    # The sweep's own processes run in their own sessions: a Ctrl-C reaches the sweep only, which passes one
    # on to each running point (train.py then saves a checkpoint and stops); a second Ctrl-C forces them.
    def _on_signal(self, signum, frame) -> None:
        first = self.signum is None
        self.signum = signum
        if first:
            self.report(f"sweep: {signal.Signals(signum).name} received; stopping the running points "
                        "(their checkpoints are saved) and starting no more")
        for job in list(self._running):
            try:
                job.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def argv(self, point: Point) -> list[str]:
        return [self.python, str(TRAIN_PY), "--impl", point.impl, *self.train_args,
                "--experiment", point.experiment, "--log-dir", str(self.sweep_dir),
                "--lr", repr(point.lr), "--seed", str(point.seed)]

    def manifest(self) -> dict:
        counts = {s: sum(p.status == s for p in self.points)
                  for s in ("ok", "failed", "interrupted", "running", "pending", "not run")}
        return {"sweep_dir": str(self.sweep_dir), "started": time.strftime("%Y-%m-%dT%H:%M:%S",
                time.localtime(self.started)), "seconds": round(time.time() - self.started, 1),
                **self.manifest_extra, "counts": {k: v for k, v in counts.items() if v},
                "points": [asdict(p) for p in self.points]}

    def save_manifest(self) -> None:
        write_json(self.sweep_dir / MANIFEST, self.manifest())

    def _start(self, point: Point) -> "_Job":
        parent = self.sweep_dir / point.experiment / point.impl
        logs = self.sweep_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{point.experiment}-{point.impl}.log"
        point.log, point.status, point.argv = str(log_path), "running", self.argv(point)
        log_file = open(log_path, "w")
        job = _Job(point, parent, _versions(parent), log_file, time.perf_counter())
        try:
            job.proc = subprocess.Popen(point.argv, env=self.env, stdout=log_file,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        except OSError:
            log_file.close()
            raise
        return job

    def _finish(self, job: "_Job", code: int) -> None:
        point = job.point
        job.log_file.close()
        point.seconds = round(time.perf_counter() - job.t0, 1)
        point.exit_code = code
        text = Path(point.log).read_text(errors="replace")
        new = _newest(_versions(job.parent) - job.before)
        point.run_dir = str(job.parent / new) if new else None
        if code == 0:
            point.status, point.error = "ok", None
            found = _SUMMARY.findall(text)
            if found:
                point.val_loss, point.val_acc = (float(v) for v in found[-1])
        else:
            point.status = "interrupted" if self.signum is not None and code in (130, 143) else "failed"
            point.error = error_line(text, code)

    def run(self) -> list[Point]:
        """Run every point; returns them with status, exit code, error and run directory filled in."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        pending = [p for p in self.points if p.status == "pending"]
        self._running: list[_Job] = []
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: no signal forwarding
                pass
        total, done = len(pending), 0
        try:
            self.save_manifest()
            while pending or self._running:
                while pending and len(self._running) < self.jobs and self.signum is None:
                    self._running.append(self._start(pending.pop(0)))
                if self.signum is not None:
                    for point in pending:
                        point.status = "not run"
                    pending = []
                for job in list(self._running):
                    code = job.proc.poll()
                    if code is None:
                        continue
                    self._running.remove(job)
                    self._finish(job, code)
                    done += 1
                    self.report(self.progress_line(job.point, done, total))
                    self.save_manifest()
                time.sleep(0.05)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for job in self._running:  # left only when the sweep itself fails
                job.proc.terminate()
            self.save_manifest()
        return self.points

    @staticmethod
    def progress_line(point: Point, done: int, total: int) -> str:
        width = len(str(total))
        head = f"[{done:>{width}}/{total}] {point.status} {point.experiment} {point.impl}"
        if point.status == "ok":
            metrics = (f" val loss {point.val_loss:.4f}, val acc {point.val_acc:.4f}"
                       if point.val_acc is not None else "")
            return f"{head} {point.seconds:.1f}s{metrics} -> {point.run_dir}"
        return f"{head} exit {point.exit_code}: {point.error}"


def reuse_finished(points: list[Point], sweep_dir: Path) -> int:
    """Mark the points an earlier ``sweep.json`` in ``sweep_dir`` lists as ok (their run still on disk) as
    done, so that only the others run again; returns how many were kept."""
    manifest = sweep_dir / MANIFEST
    if not manifest.is_file():
        return 0
    try:
        earlier = json.loads(manifest.read_text()).get("points", [])
    except (json.JSONDecodeError, AttributeError):
        raise ConfigError(f"{manifest} is not a sweep manifest; delete it or drop --skip-done") from None
    done = {(float(p["lr"]), int(p["seed"]), p["impl"]): p for p in earlier
            if p.get("status") == "ok" and p.get("run_dir")}
    kept = 0
    for point in points:
        old = done.get((point.lr, point.seed, point.impl))
        if old is None:
            continue
        run = sweep_dir / point.experiment / point.impl / Path(old["run_dir"]).name
        if (run / "hparams.yaml").is_file():
            for key in ("status", "exit_code", "error", "run_dir", "log", "seconds", "val_loss", "val_acc", "argv"):
                setattr(point, key, old.get(key))
            kept += 1
    return kept


def summary(points: list[Point], sweep_dir: Path, seconds: float) -> str:
    """What the sweep did, ending with every failed point and why."""
    ok = [p for p in points if p.status == "ok"]
    bad = [p for p in points if p.status not in ("ok", "not run")]
    not_run = [p for p in points if p.status == "not run"]
    lines = [f"sweep {sweep_dir.name}: {len(ok)} of {len(points)} points ok in {seconds:.0f}s; "
             f"manifest {sweep_dir / MANIFEST}"]
    if bad:
        lines.append(f"{len(bad)} point(s) failed:")
        for p in bad:
            log = f"; log {p.log}" if p.log else ""
            lines.append(f"  {p.label}: {p.status} (exit {p.exit_code}): {p.error}{log}")
    if not_run:
        lines.append(f"{len(not_run)} point(s) not started (the sweep was stopped): "
                     + ", ".join(p.label for p in not_run))
    if bad or not_run:
        lines.append("run only those again: the same command with --skip-done")
    if ok:
        lines.append(f"figures: python figures.py {sweep_dir} --out <folder>")
    return "\n".join(lines)


def dump_train_config(train_config: dict, path: Path) -> None:
    """The sweep file minus its ``sweep:`` section: the ``--config`` every point's train.py reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by sweep.py: the sweep file without its sweep: section\n"
                    + yaml.safe_dump(train_config, sort_keys=False))
