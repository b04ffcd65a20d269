"""Is this host's second core really ours? Times the manual and the textbook loop back to back, with torch's
thread count and with one thread, over and over, one line per round.

    python benchmarks/threads_trace.py --seconds 300

On a shared host another tenant can take a core for tens of seconds at a time. Work on two threads then
waits for the descheduled one at every parallel call and runs about half as fast, while one-thread work does
not notice: that is the "unsteady run" ``train_speed.py`` reports. Each line gives samples/s of the manual
loop (``train_step``, no logging) and of the textbook autograd loop at batch sizes 1 and 32, and their ratio.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT.parent), str(ROOT)]

import torch  # noqa: E402

import train_speed as ts  # noqa: E402

# The same malloc settings as train_speed.py, so the textbook loop runs at its best here too.
if __name__ == "__main__" and any(os.environ.get(k) != v for k, v in ts.MALLOC_ENV.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ts.MALLOC_ENV})

STEPS = {1: 2000, 32: 300}


def one_round(train, val, threads: int, log_dir: Path, scale: float) -> str:
    torch.set_num_threads(threads)
    parts = []
    for bs, steps in STEPS.items():
        steps = max(2, int(steps * scale))
        cfg = ts.make_cfg(bs, steps, log_dir)
        s1, t1, _ = ts.run_manual_bare(cfg, train, val, steps)
        s2, t2, _ = ts.run_autograd(cfg, train, val, steps)
        parts.append(f"bs{bs} manual {s1 / t1 / 1000:6.1f}k autograd {s2 / t2 / 1000:5.1f}k "
                     f"ratio {(s1 / t1) / (s2 / t2):.2f}")
    return f"{threads} thread{'s' if threads > 1 else ' '}: " + " | ".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=300, help="how long to keep tracing (default 300)")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the default steps per timing")
    args = p.parse_args(argv)
    root = ts.find_mnist_root(None)
    train, val, source = ts.make_data(root)
    default = torch.get_num_threads()
    counts = [default, 1] if default > 1 else [1]
    print(f"threads_trace: torch's default is {default} threads; data: {source}", flush=True)
    with tempfile.TemporaryDirectory(prefix="threads-trace-") as tmp:
        try:
            for n in counts:  # warm-up, not shown: first calls, MKL and oneDNN setup
                one_round(train, val, n, Path(tmp), 0.1)
            started = time.perf_counter()
            while time.perf_counter() - started < args.seconds:
                rows = [one_round(train, val, n, Path(tmp), args.scale) for n in counts]
                print(f"{time.perf_counter() - started:6.0f}s  " + "   ".join(rows), flush=True)
        finally:
            torch.set_num_threads(default)
    return 0


if __name__ == "__main__":
    sys.exit(main())
