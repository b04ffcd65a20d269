"""TensorBoard output shared by both loops: the manual loop writes through :class:`ScalarWriter`; the
Lightning loop uses ``TensorBoardLogger`` on the same directory layout, tags and step axis.

Steps count optimizer steps from 0: the loss of step s (computed before its update) is logged at s, and the
per-epoch values at the epoch's last step, which is what Lightning does.
"""
from __future__ import annotations

from pathlib import Path

import yaml

TAGS = ("train/loss", "train/loss_epoch", "val/loss", "val/acc")


def flat_hparams(config: dict) -> dict:
    """TensorBoard's hparams plugin takes scalars and strings only."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}


def write_hparams_yaml(run_dir: str | Path, config: dict) -> None:
    Path(run_dir, "hparams.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def write_hparams_summary(writer, config: dict) -> None:
    """The hparams plugin's records, into a ``SummaryWriter``'s event file (both loops call this, so the
    HParams tab lists manual and Lightning runs alike; Lightning's logger skips it without a metric)."""
    from torch.utils.tensorboard.summary import hparams

    for summary in hparams(flat_hparams(config), {}):
        writer.file_writer.add_summary(summary)


class ScalarWriter:
    """A thin ``SummaryWriter``: scalars plus the hyperparameters, as Lightning's logger writes them.

    Scalars are handed to the writer in groups of :attr:`BATCH` records, and at every ``flush``/``close``.
    The writer's thread checksums each record in pure Python; woken for every record, it took the GIL from
    the training loop often enough to cost ~3 us per step at batch size 1, logging every 50 steps (4-5%);
    woken once per group, a fraction of that. Records reach the event file in the order they were added.
    """

    BATCH = 20

    def __init__(self, run_dir: str | Path, config: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir))
        write_hparams_yaml(run_dir, config)
        write_hparams_summary(self.writer, config)
        self._pending: list = []

    def add_all(self, values: dict[str, float], step: int) -> None:
        """Several scalars at one step, as one record: what add_scalar writes per tag (a simple_value each)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
        self._pending.append((summary, step))
        if len(self._pending) >= self.BATCH:
            self._hand_over()

    def _hand_over(self) -> None:
        for summary, step in self._pending:
            self.writer.file_writer.add_summary(summary, step)
        self._pending.clear()

    def flush(self) -> None:
        self._hand_over()
        self.writer.flush()

    def close(self) -> None:
        self._hand_over()
        self.writer.close()
