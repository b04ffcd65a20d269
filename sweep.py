"""Train a grid of seeds x learning rates (x implementations), one train.py run per point.

    python sweep.py --config configs/q7.yaml --jobs 2 -- --data-dir ../shared/mnist-mini --val-size 1000 --no-download
    python sweep.py --config configs/synth.yaml --seeds 0 1 --lrs 0.01 0.1 --impl manual lightning -- --epochs 1

The grid comes from the sweep file's sweep: section (seeds, lrs, impls), overridden by --seeds, --lrs and
--impl. Everything after -- goes to every point's train.py (python train.py --help lists it).
Runs go to <log-dir>/<name>/lr<lr>_seed<seed>/<impl>/version_N; <log-dir>/<name>/sweep.json lists every
point with its status, error and run directory, and <log-dir>/<name>/logs/ holds each point's output.
A point that fails does not stop the others; the summary at the end lists the failed ones and why.
After a failure or a Ctrl-C, the same command with --skip-done runs only the points not yet ok.
Exit status: 0 every point ok, 1 some failed, 2 a bad option or sweep file, 130/143 stopped by a signal.
Then: python figures.py <log-dir>/<name> --out <folder>, and tensorboard --logdir <log-dir>.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import sys
import time
from pathlib import Path

import train
from mirror import config as config_mod
from mirror import sweep as sweep_mod
from mirror.errors import ConfigError

# The grid and the sweep's own layout decide these; given to train.py after -- they would break the grid.
RESERVED = ("lr", "seed", "experiment", "log_dir", "impl", "config", "resume")


def check_passthrough(extra: list[str]) -> dict:
    """Parse the ``train.py`` options given after ``--`` as train.py would; refuse the ones the sweep sets."""
    parser = train.make_parser()
    parser.set_defaults(impl=None)  # so that an explicit --impl shows
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(extra)
    except SystemExit:
        message = err.getvalue().strip().removeprefix("error: ").removesuffix(" (see --help)")
        raise ConfigError(f"train.py options after --: {message} (see python train.py --help)") from None
    instead = {"lr": "--lrs", "seed": "--seeds", "impl": "--impl", "log_dir": "--log-dir",
               "experiment": "--name", "config": "--config"}
    for name in RESERVED:
        if getattr(args, name, None) is not None:
            flag = "--" + name.replace("_", "-")
            hint = f"sweep.py's {instead[name]}" if name in instead else "nothing (a sweep starts fresh runs)"
            raise ConfigError(f"train.py option {flag} after -- is set by the sweep for each point; "
                              f"use {hint} instead")
    return {k: v for k, v in vars(args).items() if v is not None and k in config_mod.FIELDS}


def make_parser() -> argparse.ArgumentParser:
    p = config_mod.OneLineParser(usage="python sweep.py [options] [-- train.py options]",
                      description=__doc__.split("\n")[0], epilog="\n".join(__doc__.split("\n")[2:]),
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="YAML", help="sweep file: a train.py config with a sweep: section "
                   "(seeds, lrs, impls), e.g. configs/q7.yaml")
    p.add_argument("--name", help="sweep name, the folder under --log-dir (default: the sweep file's name, "
                   "else 'sweep')")
    p.add_argument("--seeds", type=int, nargs="+", metavar="N", help="seeds (default: the sweep file's, "
                   "else the config's seed)")
    p.add_argument("--lrs", type=float, nargs="+", metavar="LR", help="learning rates (default: the sweep "
                   "file's, else the config's lr)")
    p.add_argument("--impl", nargs="+", choices=config_mod.IMPLS, metavar="IMPL",
                   help="implementations: manual, lightning or both (default: the sweep file's, else manual)")
    p.add_argument("--log-dir", metavar="DIR", help="TensorBoard root (default: the config's log_dir, ./runs)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="points run at once (default: 1)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads per point (default: CPU cores / "
                   "jobs, unless OMP_NUM_THREADS is set)")
    p.add_argument("--skip-done", action="store_true", help="keep the points the sweep's earlier sweep.json "
                   "lists as ok and run only the others (after a failure or a Ctrl-C)")
    p.add_argument("--dry-run", action="store_true", help="print the train.py command of each point to run, "
                   "and stop")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = make_parser().parse_args(own)
    try:
        grid, train_config = sweep_mod.split_sweep_file(args.config) if args.config else ({}, {})
        overrides = check_passthrough(extra)
        base = sweep_mod.base_config(train_config, overrides, args.config or "defaults")
        name = args.name or (Path(args.config).stem if args.config else "sweep")
        if not name or "/" in name or name in (".", ".."):
            raise ConfigError(f"--name: {name!r} is not valid; expected a folder name without '/'")
        if args.jobs < 1:
            raise ConfigError(f"--jobs: {args.jobs} is not valid; expected a positive integer")
        if args.threads is not None and args.threads < 1:
            raise ConfigError(f"--threads: {args.threads} is not valid; expected a positive integer")
        seeds = args.seeds or grid.get("seeds") or [base.seed]
        lrs = args.lrs or grid.get("lrs") or [base.lr]
        impls = args.impl or grid.get("impls") or ["manual"]
        for what, values in (("--seeds", seeds), ("--lrs", lrs), ("--impl", impls)):
            if len(set(values)) != len(values):
                raise ConfigError(f"{what}: {values} lists a value twice; list each once")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code

    log_root = Path(args.log_dir or train_config.get("log_dir") or config_mod.Config().log_dir)
    sweep_dir = log_root / name
    train_args = ["--no-progress", *extra]
    if args.config:
        train_args = ["--config", str(sweep_dir / sweep_mod.TRAIN_CONFIG), *train_args]
    points = sweep_mod.plan(lrs, seeds, impls)
    extra_info = {"name": name, "command": shlex.join(["python", "sweep.py", *argv]),
                  "sweep_file": args.config, "grid": {"lrs": lrs, "seeds": seeds, "impls": impls},
                  "train_args": extra}
    runner = sweep_mod.Sweep(points, sweep_dir, train_args, jobs=args.jobs, threads=args.threads,
                             manifest_extra=extra_info, report=lambda line: print(line, flush=True))
    try:
        kept = sweep_mod.reuse_finished(points, sweep_dir) if args.skip_done else 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if args.dry_run:
        for point in points:
            if point.status == "pending":
                print(shlex.join(runner.argv(point)))
        return 0
    if args.config:
        sweep_mod.dump_train_config(train_config, sweep_dir / sweep_mod.TRAIN_CONFIG)
    print(f"sweep {name}: {len(lrs)} learning rate(s) x {len(seeds)} seed(s) x {len(impls)} implementation(s) "
          f"= {len(points)} runs into {sweep_dir}, {args.jobs} at a time"
          + (f"; {kept} done before, kept" if kept else ""), flush=True)
    started = time.perf_counter()
    runner.run()
    print(sweep_mod.summary(points, sweep_dir, time.perf_counter() - started), flush=True)
    if runner.signum is not None:
        return 128 + runner.signum
    return 0 if all(p.status == "ok" for p in points) else 1


if __name__ == "__main__":
    sys.exit(main())
