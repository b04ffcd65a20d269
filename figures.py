"""Draw learning-curve figures and a Markdown summary from the TensorBoard event files of a sweep or any runs.

    python figures.py runs/q7 --out docs/figures/q7
    python figures.py runs/synth runs/mnist --out figures/ --window 300

Each RUNS folder is a sweep (its sweep.json names the finished points) or any folder with train.py runs below
it. Writes into --out: train_loss_steps.png, train_loss_seeds.png, epoch_loss.png, val_acc.png,
manual_vs_lightning.png (when a learning rate and seed was trained by both implementations),
decision_boundary.png (synthetic two-feature data only), summary.md and summary.json.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from mirror import figures as figures_mod
from mirror.config import OneLineParser


def make_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__.split("\n")[0], epilog="\n".join(__doc__.split("\n")[2:]),
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUNS", help="a sweep folder (runs/q7) or any folder of runs")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNGs and summary.md")
    p.add_argument("--window", type=int, default=figures_mod.DEFAULT_WINDOW, metavar="INSTANCES",
                   help="moving-average window in training instances, converted to logged steps with each "
                        f"run's batch size (default: {figures_mod.DEFAULT_WINDOW}, as in question 4)")
    p.add_argument("--compare-lr", type=float, metavar="LR",
                   help="learning rate of the manual-vs-Lightning figure (default: the largest)")
    p.add_argument("--compare-seed", type=int, metavar="N",
                   help="seed of the manual-vs-Lightning figure (default: the lowest)")
    p.add_argument("--title", help="title prefix of every figure (default: the RUNS folder names)")
    return p


def load_network(run_dir):
    """A run's trained network, rebuilt as ``manual.MLP`` from its checkpoint: (N, 2) array -> P(class 1)."""
    import torch

    import manual
    from mirror.config import from_dict
    from mirror.runs import load_checkpoint

    ckpt = load_checkpoint(run_dir)
    cfg = from_dict(ckpt["config"])
    dtype = getattr(torch, cfg.dtype)
    model = manual.MLP(cfg.sizes, cfg.activation, dtype=dtype)
    model.load_state_dict(ckpt["weights"])

    def predict(points):
        with torch.no_grad():
            logits = model(torch.as_tensor(points, dtype=dtype))
            return torch.softmax(logits, dim=1)[:, 1].double().numpy()

    return predict


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser().parse_args(argv)
    if args.window < 1:
        print(f"error: --window: {args.window} is not valid; expected a positive number of instances",
              file=sys.stderr)
        return 2
    try:
        result = figures_mod.make_all(args.runs, args.out, window=args.window, compare_lr=args.compare_lr,
                                      compare_seed=args.compare_seed, title=args.title,
                                      command=shlex.join(["python", "figures.py", *argv]),
                                      load_network=load_network)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{result['runs']} runs -> {args.out}: " + ", ".join(p.name for p in result["figures"].values())
          + f", {result['summary'].name}")
    for key, why in result["skipped"].items():
        print(f"  no {figures_mod.FIGURES[key]}: {why}")
    for note in result["notes"]:
        print(f"  left out: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
