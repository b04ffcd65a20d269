"""One experiment's settings: defaults here, a YAML file overriding some, the command line overriding those.

Every key is checked: unknown keys, wrong types and out-of-range values raise :class:`ConfigError` with one
line naming the field, the value and what is allowed.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

DATASETS = ("mnist", "synth")
ACTIVATIONS = ("sigmoid", "relu", "tanh")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "float64")
IMPLS = ("manual", "lightning")


def _opt(default, help, choices=None):
    meta = {"help": help, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _default(f):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


@dataclass
class Config:
    experiment: str = _opt("", "run name: logs go to <log_dir>/<experiment>/<impl>/version_N "
                               "(empty: the config file's name, else the dataset)")
    dataset: str = _opt("mnist", "training data", DATASETS)
    data_dir: str = _opt("./data", "MNIST root (torchvision layout: <data_dir>/MNIST/raw)")
    download: bool = _opt(True, "download MNIST into data_dir when it is missing")
    val_size: int = _opt(5000, "development mode: the last val_size training images validate")
    final: bool = _opt(False, "train on all training data and evaluate on the test set")
    synth_train: int = _opt(60000, "synthetic data: training points")
    synth_val: int = _opt(10000, "synthetic data: validation points")
    hidden: list = _opt([300], "hidden layer sizes, e.g. --hidden 300 100")
    activation: str = _opt("sigmoid", "hidden activation", ACTIVATIONS)
    epochs: int = _opt(10, "passes over the training data")
    max_steps: int = _opt(0, "stop after this many optimizer steps in all (0: no limit)")
    batch_size: int = _opt(32, "training batch size (1: per-instance SGD)")
    eval_batch_size: int = _opt(1000, "batch size for validation and test")
    lr: float = _opt(1.0, "SGD learning rate")
    momentum: float = _opt(0.0, "SGD momentum")
    weight_decay: float = _opt(0.0, "SGD weight decay (L2)")
    shuffle: bool = _opt(True, "reshuffle the training data every epoch (seeded)")
    seed: int = _opt(0, "seed for initial weights, data order and synthetic data")
    device: str = _opt("cpu", "where tensors live ('auto': cuda when available)", DEVICES)
    dtype: str = _opt("float32", "floating-point precision", DTYPES)
    log_dir: str = _opt("./runs", "TensorBoard root")
    log_every: int = _opt(50, "log train/loss every k optimizer steps")
    progress: bool = _opt(True, "show a progress bar")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def sizes(self) -> list[int]:
        """Layer sizes including input and output, from the dataset's shape."""
        n_in, n_out = (784, 10) if self.dataset == "mnist" else (2, 2)
        return [n_in, *self.hidden, n_out]


FIELDS = {f.name: f for f in fields(Config)}
POSITIVE_INTS = ("val_size", "synth_train", "synth_val", "epochs", "batch_size", "eval_batch_size",
                 "log_every")


def _type_name(f) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            list: "a list of integers"}[type(_default(f))]


def _coerce(name: str, value: Any) -> Any:
    f = FIELDS[name]
    kind = type(_default(f))
    bad = ConfigError(f"{name}: {value!r} is not valid; expected {_type_name(f)}")
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise bad
        return value
    if kind is list:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in value):
            raise bad
        return list(value)
    raise AssertionError(kind)


def validate(cfg: Config) -> Config:
    """Check ranges and choices; raise ConfigError naming the first bad field."""
    for name, f in FIELDS.items():
        choices = f.metadata.get("choices")
        value = getattr(cfg, name)
        if choices and value not in choices:
            raise ConfigError(f"{name}: {value!r} is not valid; choose one of {', '.join(choices)}")
    for name in POSITIVE_INTS:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: {getattr(cfg, name)!r} is not valid; expected a positive integer")
    if cfg.max_steps < 0:
        raise ConfigError(f"max_steps: {cfg.max_steps!r} is not valid; expected 0 (no limit) or a positive integer")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ConfigError(f"lr: {cfg.lr!r} is not valid; expected a positive finite number")
    for name in ("momentum", "weight_decay"):
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"{name}: {v!r} is not valid; expected a finite number >= 0")
    if not cfg.hidden or any(h < 1 for h in cfg.hidden):
        raise ConfigError(f"hidden: {cfg.hidden!r} is not valid; expected one or more positive integers")
    if "/" in cfg.experiment or cfg.experiment in (".", ".."):
        raise ConfigError(f"experiment: {cfg.experiment!r} is not valid; expected a name without '/'")
    return cfg


def from_dict(values: dict[str, Any], base: Config | None = None, source: str = "config") -> Config:
    """Apply ``values`` over ``base`` (defaults if None); unknown keys are refused."""
    cfg = dataclasses.replace(base) if base is not None else Config()
    for name, value in values.items():
        if name not in FIELDS:
            raise ConfigError(f"{source}: unknown key {name!r}; known keys: {', '.join(FIELDS)}")
        try:
            setattr(cfg, name, _coerce(name, value))
        except ConfigError as e:  # name the file the bad value came from
            if source == "command line":
                raise
            raise ConfigError(f"{e} (in {source})") from None
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; pass a .yaml file (configs/ lists the experiments)")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path (configs/ lists the experiments)")
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read ({e.strerror or e})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value lines, not {type(data).__name__}")
    return data


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit code 2, without the usage block.
    Every command (train.py, evaluate.py, sweep.py, figures.py) uses it."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--key`` option per field (dashes or underscores), default None so we know what was given."""
    for name, f in FIELDS.items():
        default = _default(f)
        dashed = f"--{name.replace('_', '-')}"
        flags = [dashed] if dashed == f"--{name}" else [dashed, f"--{name}"]
        choices = f.metadata.get("choices")
        allowed = f"; one of {', '.join(choices)}" if choices else ""
        help_text = f"{f.metadata['help']}{allowed} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        elif isinstance(default, list):
            parser.add_argument(*flags, dest=name, type=_cli_int(name), nargs="+", default=None,
                                metavar="N", help=help_text)
        else:
            parser.add_argument(*flags, dest=name, type=_cli_type(name, type(default)), default=None,
                                choices=None, metavar=name.upper(), help=help_text)


def _cli_type(name, kind):
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {_type_name(FIELDS[name])}") from None
    convert.__name__ = kind.__name__
    return convert


def _cli_int(name):
    return _cli_type(name, int)


def build(config_path: str | None, overrides: dict[str, Any]) -> Config:
    """Defaults <- YAML file <- command-line overrides, validated."""
    cfg = Config()
    from_file: dict[str, Any] = {}
    if config_path:
        from_file = load_yaml(config_path)
        cfg = from_dict(from_file, cfg, source=str(config_path))
    given = {k: v for k, v in overrides.items() if v is not None}
    cfg = from_dict(given, cfg, source="command line")
    if not cfg.experiment:
        cfg.experiment = Path(config_path).stem if config_path else cfg.dataset
    try:
        return validate(cfg)
    except ConfigError as e:  # a bad value that came from the file: name the file
        field = str(e).split(":", 1)[0]
        if field in from_file and field not in given:
            raise ConfigError(f"{e} (in {config_path})") from None
        raise
