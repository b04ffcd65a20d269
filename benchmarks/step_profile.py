"""Where one step of the manual loop goes: microseconds per phase, at each batch size.

    python benchmarks/step_profile.py                  # batch sizes 1, 32, 128, 1024
    python benchmarks/step_profile.py --batch-sizes 32 --steps 2000

Each phase of ``manual.train.train_step`` (the gather of a shuffled batch included) is timed on its own, over
many steps on MNIST-shaped data, the network trained with plain SGD as ``train.py`` does it. Reading the
clock between phases adds a fraction of a microsecond each, so the total is a little above a real step.
After each batch size's phases comes what the gather alone costs against the floor of
``benchmarks/train_speed.py``: the step's five matrix products on fixed inputs, and the same products on a
batch gathered afresh from a shuffled 60,000 x 784 set each step, alternated in rounds, with the manual
loop's kernels. A loop on those kernels that draws shuffled batches does all the second does and more, so
the second's share of the first's speed is the most manual/floor such a loop can reach.
Then come the fixed cost of one oneDNN call (a 2 x 3 product) against ``torch.mm``'s, which is why
small products stay on ``torch.mm``, and the first layer's calls at batch size 1, which show why its weight
update is ``addmm_`` and not ``addr_`` (both in ``manual/gemm.py``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT.parent), str(ROOT)]

import torch  # noqa: E402

import train_speed as ts  # noqa: E402
from manual import gemm  # noqa: E402
from manual.nn import MLP, CrossEntropyLoss  # noqa: E402

# The malloc settings train_speed.py times under, so these phases add up to its steps: without them a
# gathered batch above glibc's threshold comes from a fresh mmap each step and faults its pages in.
if __name__ == "__main__" and any(os.environ.get(k) != v for k, v in ts.MALLOC_ENV.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ts.MALLOC_ENV})

PHASES = ("gather", "layer 1 forward", "sigmoid", "layer 2 forward", "loss", "loss backward",
          "layer 2 backward + SGD", "sigmoid backward", "layer 1 backward + SGD")


def mnist_shaped(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """60,000 random 784-pixel images and their labels: made once, shared by every batch size."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(60_000, 784, generator=g), torch.randint(0, 10, (60_000,), generator=g)


@torch.inference_mode()
def profile(batch_size: int, steps: int, data: torch.Tensor, labels: torch.Tensor, warmup: int = 20,
            lr: float = 0.01) -> dict[str, float]:
    """Mean seconds per step of each phase."""
    g = torch.Generator().manual_seed(0)
    model = MLP([784, 300, 10], generator=g)
    criterion = CrossEntropyLoss()
    (l1, l2), act = model.layers, model.activations[0]
    totals = dict.fromkeys(PHASES, 0.0)
    clock = time.perf_counter
    for step in range(warmup + steps):
        idx = torch.randint(0, 60_000, (batch_size,), generator=g)
        t = [clock()]
        if batch_size == 1:  # as Batches does: a view, no gather
            i = int(idx[0])
            x, y = data[i:i + 1], labels[i:i + 1]
        else:
            x, y = data.index_select(0, idx), labels.index_select(0, idx)
        t.append(clock())
        z = l1.forward(x)
        t.append(clock())
        h = act.forward(z)
        t.append(clock())
        logits = l2.forward(h)
        t.append(clock())
        criterion.forward(logits, y)
        t.append(clock())
        dlogits = criterion.backward()
        t.append(clock())
        dh = l2.backward(dlogits, sgd_lr=lr)
        t.append(clock())
        dz = act.backward(dh)
        t.append(clock())
        l1.backward(dz, input_grad=False, sgd_lr=lr)
        t.append(clock())
        if step >= warmup:
            for name, a, b in zip(PHASES, t, t[1:]):
                totals[name] += b - a
    return {name: total / steps for name, total in totals.items()}


def gather_cost(batch_size: int, steps: int, data: torch.Tensor, rounds: int = 9) -> tuple[float, float, float]:
    """Median seconds per step of the five products on fixed inputs and on a batch of ``data`` gathered
    afresh in a shuffled order, and the median over rounds of their ratio (fixed / gathered), each round
    running both."""
    f = ts.Floor(batch_size)  # the floor's own inputs, weights and gradient buffers
    w1, b1, w2, b2 = f.w1, f.b1, f.w2, f.b2
    batches = -(-len(data) // batch_size)

    def products(gather: bool, order: torch.Tensor) -> float:
        x = f.x
        started = time.perf_counter()
        for step in range(steps):
            if gather:  # as Batches does it; wrapping around once the epoch's rows run out
                b = step % batches
                x = data.index_select(0, order[b * batch_size:(b + 1) * batch_size])
            # Floor.run's manual-kernels loop, which times fixed inputs only: forward two, backward three
            # (z standing in for dz).
            h = gemm.affine(x, w1, b1)
            z = gemm.affine(h, w2, b2)
            gemm.weight_grad(z.t(), h, out=f.gw2)
            dh = gemm.input_grad(z.t(), w2)
            gemm.weight_grad(dh.t(), x, out=f.gw1)
        return (time.perf_counter() - started) / steps

    g = torch.Generator().manual_seed(0)

    fixed, gathered = [], []
    with torch.inference_mode():
        products(True, torch.randperm(len(data), generator=g))  # warm-up: oneDNN's primitives, the pages
        for r in range(rounds):
            order = torch.randperm(len(data), generator=g)
            for gather in (r % 2 == 1, r % 2 == 0):  # each goes first in every other round
                (gathered if gather else fixed).append(products(gather, order))
    ratio = statistics.median(f / t for f, t in zip(fixed, gathered))
    return statistics.median(fixed), statistics.median(gathered), ratio


def call_cost(repeats: int = 2000) -> tuple[float, float | None]:
    """Seconds per call of a 2 x 3 product on torch.mm and, where available, on oneDNN."""
    a, b = torch.rand(2, 3), torch.rand(4, 3)

    def per_call(fn):
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(repeats):
                fn()
            best = min(best, (time.perf_counter() - started) / repeats)
        return best

    mm = per_call(lambda: torch.mm(a, b.t()))
    onednn = per_call(lambda: gemm._onednn(a, b)) if gemm.onednn_available() else None
    return mm, onednn


def rank1_cost(rounds: int = 5, repeats: int = 1000) -> dict[str, float]:
    """Median seconds of the first layer's batch-1 calls: the forward's ``addmv``, each rank-1 update
    (``addmm_``, which the loop uses, and ``addr_``) alone and after the forward, as a step runs them.

    Alone, ``addr_`` spreads over the threads and can win; after ``addmv`` it must first fetch the weights
    from the core that read them, so the pair is what counts (``manual/gemm.py``, ``add_weight_grad_``).
    """
    g = torch.Generator().manual_seed(0)
    w, x, b = torch.randn(300, 784, generator=g), torch.randn(784, generator=g), torch.randn(300, generator=g)
    d = torch.randn(300, 1, generator=g) * 1e-3
    calls = {
        "addmv": lambda: torch.addmv(b, w, x),
        "addmm_": lambda: w.addmm_(d, x.unsqueeze(0), alpha=-0.1),
        "addr_": lambda: w.addr_(d[:, 0], x, alpha=-0.1),
    }
    calls["addmv + addmm_"] = lambda: (calls["addmv"](), calls["addmm_"]())
    calls["addmv + addr_"] = lambda: (calls["addmv"](), calls["addr_"]())
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for _ in range(rounds):  # alternated, so that a change in the machine's speed hits all alike
            for name, fn in calls.items():
                for _ in range(repeats // 10):
                    fn()
                started = time.perf_counter()
                for _ in range(repeats):
                    fn()
                times[name].append((time.perf_counter() - started) / repeats)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 128, 1024])
    p.add_argument("--steps", type=int, help="steps timed per batch size (default: 60,000 samples' worth, "
                   "at least 50 and at most 20,000)")
    p.add_argument("--rounds", type=int, default=9, help="alternated rounds of the gather's cost (default 9)")
    args = p.parse_args(argv)
    if any(bs < 1 for bs in args.batch_sizes) or (args.steps is not None and args.steps < 1) \
            or args.rounds < 1:
        p.error("batch sizes, --steps and --rounds must be positive")
    print(f"step_profile: torch {torch.__version__}, {torch.get_num_threads()} threads; microseconds per step")
    data, labels = mnist_shaped()
    for bs in args.batch_sizes:
        steps = args.steps or min(20_000, max(50, 60_000 // bs))
        phases = profile(bs, steps, data, labels)
        total = sum(phases.values())
        print(f"\nbatch {bs} ({steps} steps): {total * 1e6:,.1f} us a step")
        for name, seconds in phases.items():
            print(f"  {name:<24} {seconds * 1e6:9.1f}  {100 * seconds / total:5.1f}%")
        if bs > 1:  # at batch size 1 Batches hands out views, nothing is gathered
            fixed, gathered, ratio = gather_cost(bs, steps, data, args.rounds)
            print(f"  the five products alone: {fixed * 1e6:,.1f} us a step on fixed inputs, "
                  f"{gathered * 1e6:,.1f} us with a shuffled batch gathered each step: "
                  f"{100 * ratio:.0f}% of the speed (median of {args.rounds} rounds)")
    mm, onednn = call_cost()
    print(f"\none call, 2 x 3 product: torch.mm {mm * 1e6:.1f} us" +
          (f", oneDNN {onednn * 1e6:.1f} us" if onednn is not None else ", oneDNN not available"))
    rank1 = rank1_cost()
    print("batch 1, first layer (300 x 784), median us a call: " +
          ", ".join(f"{name} {seconds * 1e6:.1f}" for name, seconds in rank1.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
