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
from mirror.errors import ConfigError, UserError
from mirror.signals import Interrupted


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit code 2, without the usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=config_mod.IMPLS, default="manual",
                        help="which implementation trains (default: manual)")
    parser.add_argument("--config", metavar="YAML", help="experiment file from configs/ (default: none)")
    parser.add_argument("--resume", metavar="RUN",
                        help="continue a run directory or checkpoint into a new version directory")
    config_mod.add_arguments(parser)
    return parser


def resolve_config(args, parser) -> tuple[config_mod.Config, dict | None, object]:
    overrides = {name: getattr(args, name) for name in config_mod.FIELDS}
    if not args.resume:
        return config_mod.build(args.config, overrides), None, None
    from mirror.runs import load_checkpoint, resolve_checkpoint
    path = resolve_checkpoint(args.resume)
    ckpt = load_checkpoint(path)
    if ckpt["impl"] != args.impl:
        raise ConfigError(f"--resume: {path} was written by --impl {ckpt['impl']}; resume it with "
                          f"--impl {ckpt['impl']} (evaluate.py reads it with either)")
    base = config_mod.from_dict(ckpt["config"], source=str(path))
    if args.config:
        base = config_mod.from_dict(config_mod.load_yaml(args.config), base, source=args.config)
    cfg = config_mod.from_dict({k: v for k, v in overrides.items() if v is not None}, base,
                               source="command line")
    return config_mod.validate(cfg), ckpt, path


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        cfg, ckpt, ckpt_path = resolve_config(args, parser)
        from mirror.data import load_data
        from mirror.runs import new_run_dir
        train, val = load_data(cfg)
        run_dir = new_run_dir(cfg.log_dir, cfg.experiment, args.impl)
        if args.impl == "manual":
            from manual.train import fit
            fit(cfg, train, val, run_dir, resume=ckpt)
        else:
            from lightning_ref.train import fit
            fit(cfg, train, val, run_dir, resume=ckpt, resume_path=ckpt_path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
