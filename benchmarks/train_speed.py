"""How fast the hand-written loop trains, against autograd and Lightning, all in one process.

    python benchmarks/train_speed.py           # the full run: about 3 minutes on 2 idle cores
    python benchmarks/train_speed.py --quick   # under a minute: every contender, a few steps each
    python benchmarks/train_speed.py --render benchmarks/results/train_speed.json   # the .md again, no timing

Every contender trains the same 784-300-10 sigmoid network with plain SGD (the config's default learning
rate; 0.1 at batch size 1, as configs/mnist_per_instance.yaml, where the default would diverge) on
the same 60,000 x 784 float32 batches (real digits from mnist-mini tiled to 60,000 rows when it is found,
random pixels otherwise), from the same initial weights, with ``torch``'s default thread count:

  manual       ``manual.train.fit`` exactly as ``train.py --impl manual`` runs it: TensorBoard logging every
               50 steps and the progress bar on (drawn into a null stream so this output stays readable)
  manual-bare  the same steps (``manual.train.train_step``) with no logging and no progress bar
  autograd     the textbook loop: nn.Sequential, F.cross_entropy, zero_grad, backward, torch.optim.SGD
  lightning    ``lightning_ref.train.fit`` exactly as ``train.py --impl lightning`` runs it
  floor        the five matrix products of one step alone (forward two, backward three) on fixed inputs,
               with torch.mm in nn.Linear's layout, in the manual one, and with the manual loop's own
               kernels (manual/gemm.py: oneDNN for the large products); the fastest counted

Each batch size times one epoch (batch size 1: a fixed slice of it), only the training steps: setup,
validation and checkpoints are outside the clock (``fit``'s ``train_seconds``; a Lightning callback for the
reference). Contenders alternate, in an order rotated every repeat, so that a noisy machine slows them
alike; ratios are taken within a repeat and reported as median [min-max]. floor / autograd is the ceiling:
the largest manual/autograd any loop could reach here. The float32 peak of large square matrix products
(torch.mm and oneDNN, the faster counted) is measured in every repeat, and the peak memory of ``train.py``
(each implementation) in child processes on MNIST-sized IDX files, against a process that only imports
the framework.

Results go to ``benchmarks/results/train_speed.{json,md}`` (``--quick``: ``train_speed_quick.*``).
A run whose contenders' speeds vary more than 1.15x over the repeats is reported as unsteady, naming
which: the machine changed speed during it, and a median may mix two speeds.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

# glibc's malloc, left to itself, sometimes hands freed blocks of a few hundred KB back to the kernel and
# faults them in again on the next allocation, depending on the heap's history: the textbook loop, which
# allocates its gradients anew every step, ran anywhere from 3,600 to 6,900 samples/s at batch size 1 (and
# 56,000 to 89,000 at batch size 32) from one process to the next. Keeping freed memory lets every contender
# run at its best, the baselines included; the manual loop allocates no gradient memory, but oneDNN returns
# new tensors at large batch sizes. glibc reads these at start-up, so the script starts itself again with
# them set. The peak-memory runs of train.py go without them, as users run it.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "8388608", "MALLOC_TRIM_THRESHOLD_": "268435456"}
if __name__ == "__main__" and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from mirror import config as config_mod  # noqa: E402
from mirror.cpu import cpu_info  # noqa: E402
from mirror.data import Batches, Split, load_mnist_split  # noqa: E402
from mirror.runs import new_run_dir  # noqa: E402

SIZES = (784, 300, 10)
# Multiply-adds of the five products of one step, per sample: x W1^T and h W2^T forward; dz^T h, dz W2 and
# dh^T x backward (no gradient for the input). Two flops each.
FLOPS_PER_SAMPLE = 2 * (2 * SIZES[0] * SIZES[1] + 3 * SIZES[1] * SIZES[2])
CONTENDERS = ("manual", "manual-bare", "autograd", "lightning", "floor")
# The targets: batch size -> (manual/autograd, manual/Lightning, manual/floor or None), medians.
TARGETS = {1: (2.5, 6.0, None), 32: (2.0, 4.0, None), 128: (1.3, 2.0, 0.9), 1024: (1.15, 1.5, 0.9)}
LOGGING_COST_MAX = 0.10
# A contender whose speed over the repeats varies more than this (max / min) says the machine itself changed
# speed during the run: the run is then reported as unsteady, with where.
STEADY_MAX = 1.15
LABELS = {"manual": "the manual loop (train.py)", "manual-bare": "the manual loop without logging",
          "autograd": "the textbook loop", "lightning": "Lightning (train.py)", "floor": "the floor"}
MEMORY_FACTOR_MAX = 1.5
N_TRAIN, N_VAL = 60_000, 1_000
LR_BATCH_1 = 0.1  # configs/mnist_per_instance.yaml


# ------------------------------------------------------------------------------------------------ data

def find_mnist_root(given: str | None) -> Path | None:
    """A folder holding MNIST/raw: --mnist-root, $MNIST_ROOT, ../shared/mnist-mini or ./data."""
    candidates = [given, os.environ.get("MNIST_ROOT"), ROOT.parent / "shared" / "mnist-mini", ROOT / "data"]
    for c in candidates:
        if c and (Path(c) / "MNIST" / "raw").is_dir():
            return Path(c)
    return None


def make_data(root: Path | None, seed: int = 0) -> tuple[Split, Split, str]:
    """(train 60,000 x 784, val 1,000 x 784, description): mnist-mini tiled, or random when absent."""
    if root is not None:
        try:
            digits = load_mnist_split(root, train=True, download=False)
            rows = torch.arange(N_TRAIN + N_VAL) % len(digits)
            x, y = digits.x[rows], digits.y[rows]
            return (Split(x[:N_TRAIN], y[:N_TRAIN]), Split(x[N_TRAIN:], y[N_TRAIN:]),
                    f"real digits: {root} ({len(digits)} training images) tiled to {N_TRAIN:,}")
        except Exception as e:  # a broken copy: fall back, and say so
            print(f"note: {root} unusable ({e}); using random data", file=sys.stderr)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N_TRAIN + N_VAL, SIZES[0], generator=g)
    y = torch.randint(0, SIZES[-1], (N_TRAIN + N_VAL,), generator=g)
    return Split(x[:N_TRAIN], y[:N_TRAIN]), Split(x[N_TRAIN:], y[N_TRAIN:]), "random pixels (no MNIST found)"


# ------------------------------------------------------------------------------------------ contenders

@contextlib.contextmanager
def quiet():
    """Progress bars, summaries and Lightning's notices go to a null stream: still drawn, not shown."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def lr_for(batch_size: int) -> float:
    """The config's default; 0.1 for per-instance SGD (configs/mnist_per_instance.yaml), where it diverges."""
    return LR_BATCH_1 if batch_size == 1 else config_mod.Config().lr


def make_cfg(batch_size: int, steps: int, log_dir: Path, progress: bool = True) -> config_mod.Config:
    per_epoch = -(-N_TRAIN // batch_size)
    return config_mod.build(None, {
        "experiment": "bench", "batch_size": batch_size, "epochs": 1, "log_dir": str(log_dir),
        "max_steps": steps if steps < per_epoch else 0, "progress": progress, "eval_batch_size": 1000,
        "lr": lr_for(batch_size), "device": "cpu", "dtype": "float32", "seed": 0})


def samples_in(steps: int, batch_size: int) -> int:
    return min(steps * batch_size, N_TRAIN)


def run_manual(cfg, train, val):
    """``train.py --impl manual``'s ``fit``; the clock is its ``train_seconds`` (the step loop only)."""
    from manual import train as manual_train
    run_dir = new_run_dir(cfg.log_dir, cfg.experiment, "manual")
    with quiet():
        res = manual_train.fit(cfg, train, val, run_dir)
    return samples_in(res["steps"], cfg.batch_size), res["train_seconds"], res["model"]


def run_manual_bare(cfg, train, val, steps):
    """The same steps as ``fit`` takes (``train_step``), without logging, loss bookkeeping or a bar."""
    from manual.nn import CrossEntropyLoss
    from manual.optim import SGD
    from manual.train import build_model, train_step
    model = build_model(cfg)
    criterion = CrossEntropyLoss()
    optimizer = SGD(model.parameters(), lr=cfg.lr)
    batches = Batches(train, cfg.batch_size, shuffle=cfg.shuffle, seed=cfg.seed)
    batches.sampler.set_epoch(0)
    done = 0
    with torch.inference_mode():  # as fit
        started = time.perf_counter()
        for x, y in batches:
            train_step(model, criterion, optimizer, x, y)
            done += 1
            if done == steps:
                break
        seconds = time.perf_counter() - started
    return samples_in(done, cfg.batch_size), seconds, model


def textbook_model(cfg) -> nn.Sequential:
    """nn.Sequential with the manual network's initial weights (same seed, same draw)."""
    from manual.train import build_model
    model = nn.Sequential(nn.Linear(SIZES[0], SIZES[1]), nn.Sigmoid(), nn.Linear(SIZES[1], SIZES[2]))
    init = build_model(cfg).state_dict()
    model.load_state_dict({k.replace("layers.1", "2").replace("layers.0", "0"): v for k, v in init.items()})
    return model


def run_autograd(cfg, train, val, steps):
    """The loop every PyTorch tutorial writes, on the same batches."""
    model = textbook_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    batches = Batches(train, cfg.batch_size, shuffle=cfg.shuffle, seed=cfg.seed)
    batches.sampler.set_epoch(0)
    done = 0
    started = time.perf_counter()
    for x, y in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        done += 1
        if done == steps:
            break
    seconds = time.perf_counter() - started
    return samples_in(done, cfg.batch_size), seconds, model


def run_lightning(cfg, train, val):
    """``train.py --impl lightning``'s ``fit``, unchanged but for one timing callback added to its Trainer:
    the clock runs from the epoch's start to the end of its last training batch."""
    import lightning as L

    from lightning_ref import train as ref_train

    class EpochTimer(L.Callback):
        started = ended = None

        def on_train_epoch_start(self, trainer, pl_module):
            if self.started is None:
                self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.ended = time.perf_counter()

    timer = EpochTimer()
    original = ref_train.build_trainer

    def build_trainer(cfg_, run_dir, callbacks=(), logger=True):
        return original(cfg_, run_dir, [*callbacks, timer], logger)

    run_dir = new_run_dir(cfg.log_dir, cfg.experiment, "lightning")
    with quiet(), mock.patch.object(ref_train, "build_trainer", build_trainer):
        res = ref_train.fit(cfg, train, val, run_dir)
    return samples_in(res["steps"], cfg.batch_size), timer.ended - timer.started, res["model"]


class Floor:
    """The five matrix products of one step with fixed inputs, in four variants: activations stored (N, D)
    with ``torch.addmm``/``mm`` as nn.Linear does, (D, N) with the same calls, the manual loop's own kernels
    (``manual.gemm``: oneDNN for the large products where it is available and pays on this processor,
    torch.mm otherwise), and those kernels with oneDNN for the large products at every batch size, so that
    the floor keeps oneDNN's products where ``manual.gemm`` leaves small batches to MKL. The fastest variant
    is the floor."""

    VARIANTS = ("rows", "features", "manual-kernels", "onednn-kernels")

    def __init__(self, batch_size: int) -> None:
        g = torch.Generator().manual_seed(0)
        n, (d0, d1, d2) = batch_size, SIZES
        self.x = torch.rand(n, d0, generator=g)
        self.w1, self.b1 = torch.rand(d1, d0, generator=g), torch.rand(d1, generator=g)
        self.w2, self.b2 = torch.rand(d2, d1, generator=g), torch.rand(d2, generator=g)
        self.gw1, self.gw2 = torch.empty(d1, d0), torch.empty(d2, d1)
        self.layouts = {
            "rows": [torch.empty(n, d1), torch.empty(n, d2), torch.empty(n, d1)],
            "features": [torch.empty(d1, n).t(), torch.empty(d2, n).t(), torch.empty(d1, n).t()],
        }

    def run(self, variant: str, steps: int) -> float:
        x, w1, b1, w2, b2 = self.x, self.w1, self.b1, self.w2, self.b2
        if variant in ("manual-kernels", "onednn-kernels"):
            from manual import gemm
            min_batch = gemm.MIN_BATCH if variant == "manual-kernels" else 1
            with mock.patch.object(gemm, "MIN_BATCH", min_batch):
                started = time.perf_counter()
                for _ in range(steps):
                    h = gemm.affine(x, w1, b1)                  # forward
                    z = gemm.affine(h, w2, b2)
                    gemm.weight_grad(z.t(), h, out=self.gw2)    # backward, z standing in for dz
                    dh = gemm.input_grad(z.t(), w2)
                    gemm.weight_grad(dh.t(), x, out=self.gw1)
                return time.perf_counter() - started
        h, z, dh = self.layouts[variant]
        started = time.perf_counter()
        for _ in range(steps):
            torch.addmm(b1, x, w1.t(), out=h)        # forward: h = x W1^T + b1
            torch.addmm(b2, h, w2.t(), out=z)        #          z = h W2^T + b2
            torch.mm(z.t(), h, out=self.gw2)         # backward: dW2 = dz^T h
            torch.mm(z, w2, out=dh)                  #           dh = dz W2
            torch.mm(dh.t(), x, out=self.gw1)        #           dW1 = dh^T x
        return time.perf_counter() - started


def run_floor(cfg, train, val, steps):
    from manual import gemm
    floor = Floor(cfg.batch_size)
    variants = [v for v in Floor.VARIANTS  # the last is the third again where oneDNN goes from batch 1
                if v != "onednn-kernels" or (gemm.MIN_BATCH > 1 and gemm.onednn_available())]
    for variant in variants:
        floor.run(variant, 2)
    seconds = min(floor.run(variant, steps) for variant in variants)
    return steps * cfg.batch_size, seconds, None


def measure_peak(n: int, repeats: int) -> dict:
    """GFLOP/s of the best of ``repeats`` (n x n) @ (n x n) float32 products, per library: torch.mm (MKL
    here) and oneDNN, when this torch has it."""
    from manual import gemm
    g = torch.Generator().manual_seed(0)
    a, b, c = torch.rand(n, n, generator=g), torch.rand(n, n, generator=g), torch.empty(n, n)
    products = {"torch.mm": lambda: torch.mm(a, b, out=c)}
    if gemm.onednn_available():
        b_t = b.t().contiguous()
        products["oneDNN"] = lambda: gemm._onednn(a, b_t)
    out = {}
    for name, product in products.items():
        product()
        best = math.inf
        for _ in range(repeats):
            started = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - started)
        out[name] = 2 * n ** 3 / best / 1e9
    return out


@torch.no_grad()
def check_loss(model, val: Split) -> float:
    """The trained model's loss on the validation rows: every contender must land on the same value."""
    logits = model(val.x) if isinstance(model, nn.Module) else model.forward(val.x)
    return float(F.cross_entropy(logits, val.y))


# ---------------------------------------------------------------------------------------------- memory

def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist_sized(folder: Path, root: Path | None) -> str:
    """60,000 training and 10,000 test images in torchvision's layout: mnist-mini tiled, else random."""
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    source = "random"
    sets = {}
    if root is not None:
        try:
            from mirror.data import MNIST_FILES, _find, read_idx
            for train, (images, labels) in MNIST_FILES.items():
                sets[train] = (read_idx(_find(root / "MNIST" / "raw", images), 3).numpy(),
                               read_idx(_find(root / "MNIST" / "raw", labels), 1).numpy())
            source = "mnist-mini tiled"
        except Exception:
            sets = {}
    rng = np.random.default_rng(0)
    for train, n in ((True, 60_000), (False, 10_000)):
        images_name, labels_name = config_files(train)
        if train in sets:
            images, labels = sets[train]
            rows = np.arange(n) % len(images)
            images, labels = images[rows], labels[rows]
        else:
            images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(raw / images_name, images)
        write_idx(raw / labels_name, labels)
    return source


def config_files(train: bool) -> tuple[str, str]:
    from mirror.data import MNIST_FILES
    return MNIST_FILES[train]


# A small launcher runs each measured command and reports the peak RSS of its child. Linux counts a
# child's memory from the fork, before its exec, so forking straight from this process (over 1 GB by
# now) would report our size, not the child's; the launcher is a fresh, small Python.
LAUNCHER = """import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def peak_rss_mib(argv: list[str], log: Path) -> tuple[float, int]:
    """Run ``argv`` from the repository root; (its peak resident memory in MiB, exit code)."""
    report = log.with_suffix(".maxrss")
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}  # memory as users run train.py
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, "-c", LAUNCHER, str(report), *argv], cwd=ROOT, stdout=out,
                              stderr=subprocess.STDOUT, env=env).returncode
    return int(report.read_text()) / 1024, code  # ru_maxrss is in KiB on Linux


def measure_memory(tmp: Path, root: Path | None, steps: int) -> dict:
    data_dir = tmp / "mnist-sized"
    source = write_mnist_sized(data_dir, root)
    dataset_mib = (60_000 * 784 * 4 + 60_000 * 8) / 2 ** 20   # float32 pixels + int64 labels, in memory
    py = sys.executable
    train_args = ["--data-dir", str(data_dir), "--no-download", "--log-dir", str(tmp / "mem-runs"),
                  "--epochs", "1", "--max-steps", str(steps), "--no-progress"]
    runs = {
        "baseline torch": [py, "-c", "import torch"],
        "baseline torch+lightning": [py, "-c", "import torch, lightning"],
        "manual": [py, "train.py", "--impl", "manual", *train_args],
        "lightning": [py, "train.py", "--impl", "lightning", *train_args],
    }
    peaks = {}
    for name, argv in runs.items():
        mib, code = peak_rss_mib(argv, tmp / f"mem-{name.replace(' ', '-')}.log")
        if code != 0:
            raise RuntimeError(f"{name}: exited {code}; see {tmp / ('mem-' + name.replace(' ', '-') + '.log')}")
        peaks[name] = mib
    out = {"data": source, "dataset_mib": dataset_mib, "steps": steps, "peak_mib": peaks, "impls": {}}
    for impl, base in (("manual", "baseline torch"), ("lightning", "baseline torch+lightning")):
        over = peaks[impl] - peaks[base]
        out["impls"][impl] = {"baseline": base, "over_baseline_mib": over, "factor": over / dataset_mib,
                              "holds": over <= MEMORY_FACTOR_MAX * dataset_mib}
    return out


# ----------------------------------------------------------------------------------------------- stats

def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def fmt_range(s: dict, digits: int = 2, scale: float = 1.0, pct: bool = False) -> str:
    if pct:
        return f"{100 * s['median']:.0f}% [{100 * s['min']:.0f}-{100 * s['max']:.0f}]"
    return f"{s['median'] * scale:.{digits}f} [{s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f}]"


def fmt_speed(s: dict) -> str:
    return f"{s['median']:,.0f} [{s['min']:,.0f}-{s['max']:,.0f}]"


def mark(holds: bool | None) -> str:
    return "" if holds is None else (" ✓" if holds else " ✗")


# ------------------------------------------------------------------------------------------------ main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few steps per contender, 2 repeats, no memory run")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 128, 1024])
    p.add_argument("--repeats", type=int, help="rounds of all contenders (default 9; --quick 2)")
    p.add_argument("--slice", type=int, help="steps timed at batch size 1 (default 3000; --quick 100)")
    p.add_argument("--max-steps", type=int, help="cap on the steps timed at every batch size "
                   "(default: one epoch; --quick 40)")
    p.add_argument("--peak-size", type=int, help="square size of the peak matmul (default 2048; --quick 1024)")
    p.add_argument("--memory-steps", type=int, default=300, help="steps of each train.py memory run")
    p.add_argument("--no-memory", action="store_true", help="skip the train.py peak-memory runs")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for every contender (default: torch's)")
    p.add_argument("--mnist-root", help="folder holding MNIST/raw (default: $MNIST_ROOT, ../shared/mnist-mini)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: write the Markdown for a results JSON beside it (after a format change)")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 9
    if args.slice is None:
        args.slice = 100 if args.quick else 3000
    if args.max_steps is None:
        args.max_steps = 40 if args.quick else 0
    if args.peak_size is None:
        args.peak_size = 1024 if args.quick else 2048
    if args.quick:
        args.no_memory = True
    return args


def steps_for(batch_size: int, args) -> int:
    steps = -(-N_TRAIN // batch_size) if batch_size > 1 else args.slice
    return min(steps, args.max_steps) if args.max_steps else steps


def gemm_libraries() -> dict:
    """What decides the products' speed besides the processor: the vector width ATen dispatches to and the
    oneDNN release inside this torch build (None where the build does not say)."""
    match = re.search(r"(?:MKL-DNN|oneDNN) v([0-9][0-9.]*)", torch.__config__.show())
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn": match.group(1) if match else None}


def machine() -> dict:
    import lightning
    return {**cpu_info(), **gemm_libraries(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "lightning": lightning.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "load_average_start": list(os.getloadavg()),
            "malloc_env": {k: os.environ.get(k) for k in MALLOC_ENV}}


def run_round(bs, steps, contenders, log_dir, train, val) -> dict:
    out = {}
    for name in contenders:
        cfg = make_cfg(bs, steps, log_dir)
        threads = torch.get_num_threads()
        if name == "manual":
            samples, seconds, model = run_manual(cfg, train, val)
        elif name == "manual-bare":
            samples, seconds, model = run_manual_bare(cfg, train, val, steps)
        elif name == "autograd":
            samples, seconds, model = run_autograd(cfg, train, val, steps)
        elif name == "lightning":
            samples, seconds, model = run_lightning(cfg, train, val)
        else:
            samples, seconds, model = run_floor(cfg, train, val, steps)
        if torch.get_num_threads() != threads:
            raise RuntimeError(f"{name} changed torch's thread count from {threads} to {torch.get_num_threads()}")
        out[name] = {"samples": samples, "seconds": seconds,
                     "loss": None if model is None else check_loss(model, val)}
    return out


def render(path: Path) -> int:
    try:
        text = path.read_text()
    except OSError as e:
        print(f"error: cannot read {path} ({e.strerror}); give the path of a train_speed*.json a run wrote",
              file=sys.stderr)
        return 2
    try:
        report = json.loads(text)
        md = markdown(report)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        print(f"error: {path} is not a results JSON of this script ({type(e).__name__}: {e}); give the "
              "train_speed*.json a run wrote", file=sys.stderr)
        return 2
    out = path.with_suffix(".md")
    out.write_text(md)
    print(md)
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    root = find_mnist_root(args.mnist_root)
    train, val, data_source = make_data(root)
    info = machine()
    say = print
    say(f"train_speed: {describe_cpu(info)}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} "
        f"threads), lightning {info['lightning']}; data: {data_source}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="train-speed-"))
    log_dir = tmp / "runs"
    raw: dict[int, dict[str, list]] = {bs: {c: [] for c in CONTENDERS} for bs in args.batch_sizes}
    peaks: list[dict] = []
    try:
        # Warm-up: imports, MKL's first call, Lightning's first Trainer; nothing here is recorded.
        for bs in args.batch_sizes:
            run_round(bs, 3, CONTENDERS, log_dir, train, val)
        for rep in range(args.repeats):
            peaks.append(measure_peak(args.peak_size, 3))
            for i, bs in enumerate(args.batch_sizes):
                shift = (rep + i) % len(CONTENDERS)
                order = CONTENDERS[shift:] + CONTENDERS[:shift]
                round_ = run_round(bs, steps_for(bs, args), order, log_dir, train, val)
                for name, r in round_.items():
                    raw[bs][name].append(r)
                say(f"  repeat {rep + 1}/{args.repeats}  batch {bs:>4}: " + "  ".join(
                    f"{n} {r['samples'] / r['seconds']:,.0f}/s" for n, r in round_.items()), flush=True)
            shutil.rmtree(log_dir, ignore_errors=True)
        memory = None
        if not args.no_memory:
            say("  peak memory of train.py (child processes) ...", flush=True)
            memory = measure_memory(tmp, root, args.memory_steps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    results = analyse(raw, peaks, args)
    report = {
        "command": "python benchmarks/train_speed.py" + (" --quick" if args.quick else "") + "".join(
            f" {a}" for a in (argv if argv is not None else sys.argv[1:]) if a != "--quick"),
        "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "machine": {**info, "load_average_end": list(os.getloadavg())},
        "data": data_source,
        "settings": {"quick": args.quick, "repeats": args.repeats, "batch_sizes": args.batch_sizes,
                     "steps": {str(bs): steps_for(bs, args) for bs in args.batch_sizes},
                     "peak_size": args.peak_size, "lr": {str(bs): lr_for(bs) for bs in args.batch_sizes},
                     "log_every": config_mod.Config().log_every,
                     "flops_per_sample": FLOPS_PER_SAMPLE},
        "peak_gflops": {"best": summary([max(p.values()) for p in peaks]),
                        **{lib: summary([p[lib] for p in peaks]) for lib in peaks[0]}},
        "results": results,
        "memory": memory,
        "wall_seconds": time.perf_counter() - started,
    }
    report["targets"] = targets(report)
    report["steadiness"] = steadiness(report["results"])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "train_speed_quick" if args.quick else "train_speed"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    (args.out / f"{stem}.md").write_text(md)
    say("")
    say(md)
    say(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')} "
        f"in {report['wall_seconds']:.0f}s", flush=True)
    return 0


def analyse(raw, peaks, args) -> dict:
    results = {}
    for bs, by_name in raw.items():
        speed = {n: [r["samples"] / r["seconds"] for r in rs] for n, rs in by_name.items()}
        reps = range(len(speed["manual"]))

        def paired(a, b, speed=speed, reps=reps):  # ratios within each repeat, then their spread
            return summary([speed[a][i] / speed[b][i] for i in reps])

        gflops = [speed["manual"][i] * FLOPS_PER_SAMPLE / 1e9 for i in reps]
        losses = {n: [r["loss"] for r in rs] for n, rs in by_name.items() if rs and rs[0]["loss"] is not None}
        final = [v[-1] for v in losses.values()]
        results[str(bs)] = {
            "steps": steps_for(bs, args),
            "samples_per_s": {n: summary(v) for n, v in speed.items()},
            "manual/autograd": paired("manual", "autograd"),
            "manual/lightning": paired("manual", "lightning"),
            "manual/floor": paired("manual", "floor"),
            "bare/autograd": paired("manual-bare", "autograd"),
            "bare/floor": paired("manual-bare", "floor"),
            "lightning/autograd": paired("lightning", "autograd"),
            "logging_cost": summary([1 - speed["manual"][i] / speed["manual-bare"][i] for i in reps]),
            "manual_gflops": summary(gflops),
            "peak_share": summary([gflops[i] / max(peaks[i].values()) for i in reps]),
            "ceiling": paired("floor", "autograd"),
            "check_loss": {n: v[-1] for n, v in losses.items()},
            "check_loss_spread": (max(final) - min(final)) if final else None,
        }
    return results


def steadiness(results: dict) -> dict:
    """The contender and batch size whose speed varied most over the repeats, as max / min. Every contender
    does the same work in every repeat, so a large spread is the machine changing speed, not the code."""
    worst = {"max_over_min": 1.0, "batch": None, "contender": None, "min": None, "max": None}
    for bs, r in results.items():
        for name, sp in r["samples_per_s"].items():
            spread = sp["max"] / sp["min"]
            if spread > worst["max_over_min"]:
                worst = {"max_over_min": spread, "batch": int(bs), "contender": name,
                         "min": sp["min"], "max": sp["max"]}
    return {**worst, "limit": STEADY_MAX, "steady": worst["max_over_min"] <= STEADY_MAX}


def steadiness_line(st: dict) -> str:
    if st["steady"]:
        return (f"Steady run: every contender's speed stayed within {st['max_over_min']:.2f}x (max / min) over "
                "the repeats.")
    return (f"**Unsteady run**: {LABELS.get(st['contender'], st['contender'])} at batch {st['batch']} ran "
            f"{st['min']:,.0f}-{st['max']:,.0f} samples/s over the repeats ({st['max_over_min']:.2f}x, more "
            f"than {st['limit']:.2f}x) doing the same work each time: the machine changed speed during the run, "
            "so a median can mix two speeds. Ratios are paired within each repeat; every repeat's numbers are "
            "in the JSON. Re-run on a quiet machine to confirm.")


def targets(report) -> list[dict]:
    rows = []
    for bs_key, r in report["results"].items():
        bs = int(bs_key)
        want = TARGETS.get(bs)
        if want is not None:
            for metric, goal in zip(("manual/autograd", "manual/lightning", "manual/floor"), want):
                if goal is not None:
                    rows.append({"batch": bs, "metric": metric, "target": f">= {goal}",
                                 "median": r[metric]["median"], "holds": r[metric]["median"] >= goal})
        rows.append({"batch": bs, "metric": "logging_cost", "target": f"<= {LOGGING_COST_MAX}",
                     "median": r["logging_cost"]["median"], "holds": r["logging_cost"]["median"] <= LOGGING_COST_MAX})
    if report["memory"]:
        for impl, m in report["memory"]["impls"].items():
            rows.append({"batch": None, "metric": f"memory {impl}", "target": f"<= {MEMORY_FACTOR_MAX} x dataset",
                         "median": m["factor"], "holds": m["holds"]})
    return rows


def describe_cpu(m: dict) -> str:
    """'AMD EPYC (family 25, model 17; AVX512, oneDNN 3.12.0)'; a JSON from before these fields were kept
    gives the name alone."""
    details = []
    if m.get("cpu_family") is not None:
        details.append(f"family {m['cpu_family']}" + (f", model {m['cpu_model']}" if m.get("cpu_model") else ""))
    libs = [v for v in (m.get("cpu_capability"), m.get("onednn") and f"oneDNN {m['onednn']}") if v]
    if libs:
        details.append(", ".join(libs))
    return m["cpu"] + (f" ({'; '.join(details)})" if details else "")


def markdown(report) -> str:
    m, s = report["machine"], report["settings"]
    holds = {(t["batch"], t["metric"]): t["holds"] for t in report["targets"]}
    lines = [
        f"`{report['command']}` — {report['date']}",
        "",
        f"Machine: {describe_cpu(m)}, {m['cores']} cores, torch {m['torch']} on CPU with {m['torch_threads']} threads, "
        f"lightning {m['lightning']}, Python {m['python']}; load average {m['load_average_start'][0]:.1f} at "
        f"the start, {m['load_average_end'][0]:.1f} at the end. Data: {report['data']}. Plain SGD, lr "
        + ", ".join(f"{lr:g} at batch {bs}" for bs, lr in s['lr'].items())
        + f"; train.py logs every {s['log_every']} steps. glibc malloc keeps freed memory ("
        + " ".join(f"{k}={v}" for k, v in (m.get("malloc_env") or {}).items())
        + "), so the baselines, which allocate their gradients every step, run at their best. "
        f"{s['repeats']} repeats, contenders alternated; each cell is the median [min-max] over repeats.",
        "",
        "Samples per second, over these steps per batch size: " + ", ".join(
            f"{bs}: {n}" + (" (one epoch)" if n == -(-N_TRAIN // int(bs)) else "") for bs, n in s["steps"].items())
        + ":",
        "",
        "| batch | manual (train.py) | manual, no logging/bar | autograd (textbook) | Lightning (train.py) "
        "| floor: 5 matmuls |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for bs, r in report["results"].items():
        sp = r["samples_per_s"]
        lines.append(f"| {bs} | " + " | ".join(fmt_speed(sp[c]) for c in CONTENDERS) + " |")
    lines += [
        "",
        "Ratios of the manual loop as train.py runs it (logging and bar on), paired within each repeat; "
        "✓/✗ against the issue's target:",
        "",
        "| batch | manual / autograd | manual / Lightning | manual / floor | logging+bar cost "
        "| manual GFLOP/s (share of peak) | Lightning / autograd | no-logging manual / autograd "
        "| ceiling: floor / autograd |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for bs, r in report["results"].items():
        b = int(bs)
        lines.append(
            f"| {bs} | {fmt_range(r['manual/autograd'])}{mark(holds.get((b, 'manual/autograd')))} "
            f"| {fmt_range(r['manual/lightning'])}{mark(holds.get((b, 'manual/lightning')))} "
            f"| {fmt_range(r['manual/floor'], pct=True)}{mark(holds.get((b, 'manual/floor')))} "
            f"| {fmt_range(r['logging_cost'], pct=True)}{mark(holds.get((b, 'logging_cost')))} "
            f"| {r['manual_gflops']['median']:.1f} ({100 * r['peak_share']['median']:.0f}%) "
            f"| {fmt_range(r['lightning/autograd'])} | {fmt_range(r['bare/autograd'])} "
            f"| {fmt_range(r['ceiling'])} |")
    # Derived from the per-repeat speeds, so an older results JSON (--render) gets the line too.
    lines += ["", steadiness_line(steadiness(report["results"]))]
    pk = report["peak_gflops"]
    libs = ", ".join(f"{lib} {fmt_range(v, digits=0)}" for lib, v in pk.items() if lib != "best")
    lines += ["", f"Float32 peak ({s['peak_size']}x{s['peak_size']} matmul, GFLOP/s): {libs}; the share of "
              f"peak counts the faster. A step's five products are {s['flops_per_sample']:,} flops per sample."]
    spread = [r["check_loss_spread"] for r in report["results"].values() if r["check_loss_spread"] is not None]
    if spread:
        lines.append(f"Every contender ends on the same validation loss (largest spread {max(spread):.1e}).")
    mem = report["memory"]
    if mem:
        lines += ["", f"Peak memory of `train.py` on MNIST-sized data ({mem['data']} IDX files, 60,000 "
                  f"training images, {mem['steps']} steps at batch 32), as the max RSS of a child process; "
                  "the baseline is a process that only imports the framework:", "",
                  "| process | peak RSS (MiB) | over its baseline (MiB) | / dataset (" f"{mem['dataset_mib']:.0f} MiB) |",
                  "|---|---:|---:|---:|"]
        for name, mib in mem["peak_mib"].items():
            impl = mem["impls"].get(name)
            if impl:
                lines.append(f"| train.py --impl {name} | {mib:.0f} | {impl['over_baseline_mib']:.0f} "
                             f"| {impl['factor']:.2f}{mark(impl['holds'])} |")
            else:
                lines.append(f"| {name} (import only) | {mib:.0f} | | |")
    else:
        lines += ["", "Peak memory: not measured in this run (--quick or --no-memory)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
