"""Evaluate any checkpoint with either implementation, whichever one trained it.

    python evaluate.py runs/mnist/lightning/version_0 --impl manual
    python evaluate.py runs/mnist/manual/version_0/checkpoints/last.ckpt --impl lightning --final

The checkpoint's own config says which data and network to rebuild; data options given here override it.
"""
from __future__ import annotations

import argparse
import sys

from mirror import config as config_mod
from mirror.errors import UserError

DATA_KEYS = ("data_dir", "download", "val_size", "final", "eval_batch_size", "device")


def make_parser() -> argparse.ArgumentParser:
    parser = config_mod.OneLineParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a run directory or its checkpoints/last.ckpt")
    parser.add_argument("--impl", choices=config_mod.IMPLS, default="manual",
                        help="which implementation evaluates (default: manual)")
    sub = argparse.ArgumentParser(add_help=False)
    config_mod.add_arguments(sub)
    for action in sub._actions:
        if action.dest in DATA_KEYS:
            parser._add_action(action)
    return parser


def evaluate_checkpoint(path, impl: str, overrides: dict) -> dict:
    from mirror.data import load_data
    from mirror.runs import load_checkpoint, resolve_checkpoint

    path = resolve_checkpoint(path)
    ckpt = load_checkpoint(path)
    cfg = config_mod.from_dict(ckpt["config"], source=str(path))
    cfg = config_mod.validate(config_mod.from_dict(
        {k: v for k, v in overrides.items() if v is not None}, cfg, source="command line"))
    _, split = load_data(cfg)
    if impl == "manual":
        from manual.train import build_model, evaluate
        model = build_model(cfg).to(device=split.x.device)
    else:
        from lightning_ref.model import MLP
        from lightning_ref.module import evaluate
        import torch
        model = MLP(cfg.sizes, cfg.activation, dtype=getattr(torch, cfg.dtype)).to(split.x.device)
    try:
        model.load_state_dict(ckpt["weights"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(f"checkpoint {path}: its weights do not fit a {cfg.sizes} network ({e})") from None
    loss, acc = evaluate(model, split, cfg.eval_batch_size)
    return {"checkpoint": str(path), "trained_by": ckpt["impl"], "evaluated_by": impl, "step": ckpt.get("step"),
            "split": "test" if cfg.final else "val", "loss": loss, "acc": acc}


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    try:
        r = evaluate_checkpoint(args.checkpoint, args.impl, {k: getattr(args, k, None) for k in DATA_KEYS})
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    print(f"{r['evaluated_by']} evaluating {r['checkpoint']} (trained by {r['trained_by']}, step {r['step']}): "
          f"{r['split']} loss {r['loss']:.6f} | {r['split']} acc {r['acc']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
