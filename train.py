"""Train the MLP by hand (``--impl manual``) or with autograd in Lightning (``--impl lightning``).

    python train.py --impl manual                        # the assignment's MNIST network
    python train.py --impl lightning --config configs/synth.yaml --lr 0.03
    python train.py --impl manual --resume runs/mnist/manual/version_0

Settings come from the defaults, then ``--config``, then ``--key value`` options; ``--help`` lists them all.
Logs go to ``<log_dir>/<experiment>/<impl>/version_N`` (TensorBoard: ``tensorboard --logdir runs``).
"""
from __future__ import annotations

import argparse
import sys

from mirror import config as config_mod
from mirror.errors import ConfigError, DivergenceError, UserError
from mirror.signals import Interrupted


def make_parser() -> argparse.ArgumentParser:
    parser = config_mod.OneLineParser(description=__doc__.split("\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=config_mod.IMPLS, default="manual",
                        help="which implementation trains (default: manual)")
    parser.add_argument("--config", metavar="YAML", help="experiment file from configs/ (default: none)")
    parser.add_argument("--resume", metavar="RUN",
                        help="continue a run directory or checkpoint into a new version directory")
    config_mod.add_arguments(parser)
    return parser


# What a resumed run cannot change: the network, the data and their order. Everything else (lr, momentum,
# weight_decay, epochs, max_steps, logging, device) may be given again to continue differently.
RESUME_FIXED = ("dataset", "synth_train", "synth_val", "val_size", "final", "hidden", "activation", "batch_size",
                "shuffle", "seed", "dtype")


def resolve_config(args) -> tuple[config_mod.Config, dict | None, object]:
    overrides = {name: getattr(args, name) for name in config_mod.FIELDS}
    if not args.resume:
        return config_mod.build(args.config, overrides), None, None
    from mirror.runs import check_resumable, load_checkpoint, resolve_checkpoint
    path = resolve_checkpoint(args.resume)
    ckpt = load_checkpoint(path)
    if ckpt["impl"] != args.impl:
        raise ConfigError(f"--resume: {path} was written by --impl {ckpt['impl']}; resume it with "
                          f"--impl {ckpt['impl']} (evaluate.py reads it with either)")
    check_resumable(ckpt, path, args.impl)
    saved = config_mod.validate(config_mod.from_dict(ckpt["config"], source=str(path)))
    cfg = saved
    if args.config:
        cfg = config_mod.from_dict(config_mod.load_yaml(args.config), cfg, source=args.config)
    cfg = config_mod.from_dict({k: v for k, v in overrides.items() if v is not None}, cfg,
                               source="command line")
    for name in RESUME_FIXED:
        if getattr(cfg, name) != getattr(saved, name):
            raise ConfigError(f"--resume: {name} cannot change when resuming ({getattr(saved, name)!r} in the "
                              f"checkpoint, {getattr(cfg, name)!r} given); drop the option or start a new run")
    return config_mod.validate(cfg), ckpt, path


def check_work_left(cfg, ckpt: dict, path, num_train: int) -> None:
    """A resumed run must have steps left to take under the (possibly raised) --epochs / --max-steps."""
    total = cfg.epochs * -(-num_train // cfg.batch_size)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    if ckpt["step"] >= total:
        raise ConfigError(f"--resume: {path} has already taken {ckpt['step']} steps, all that epochs "
                          f"{cfg.epochs}{f' and max_steps {cfg.max_steps}' if cfg.max_steps else ''} allow; "
                          "pass a larger --epochs (or --max-steps) to train on")


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    run_dir = None
    try:
        cfg, ckpt, ckpt_path = resolve_config(args)
        from mirror.runs import check_log_dir
        check_log_dir(cfg.log_dir)  # before the data: a download is wasted on a run that cannot log
        from mirror.data import load_data
        from mirror.runs import new_run_dir
        train, val = load_data(cfg)
        if ckpt is not None:
            check_work_left(cfg, ckpt, ckpt_path, len(train))
        run_dir = new_run_dir(cfg.log_dir, cfg.experiment, args.impl)
        if args.impl == "manual":
            from manual.train import fit
            fit(cfg, train, val, run_dir, resume=ckpt)
        else:
            from lightning_ref.train import fit
            fit(cfg, train, val, run_dir, resume=ckpt, resume_path=ckpt_path)
    except DivergenceError as e:  # its run directory holds the curve up to the blow-up: kept
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except UserError as e:
        if run_dir is not None:
            from mirror.runs import discard_run_dir
            discard_run_dir(run_dir)  # failed before its first checkpoint: leave no empty version_N behind
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C before training started, or a second one: stop at once
        where = f"; {run_dir} keeps its last checkpoint, if any" if run_dir is not None else ""
        print(f"interrupted: stopped at once, nothing saved at this point{where}", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
