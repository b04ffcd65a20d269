"""The reference training loop: ``Trainer.fit`` of :class:`MLPClassifier` with a ``TensorBoardLogger``.

Its twin is ``manual/train.py``. Lightning runs the loop; the callback below adds what the manual loop does
by hand: the same checkpoint file and keys, divergence checks, and stopping cleanly on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mirror.data import Batches, Split
from mirror.divergence import diverged_error, first_diverged, loss_limit
from mirror.report import summary_line
from mirror.runs import atomic_save, checkpoint_path, portable_state
from mirror.signals import Interrupted, StopRequest
from mirror.tb import write_hparams_summary, write_hparams_yaml

from .module import MLPClassifier, evaluate

IMPL = "lightning"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint dict, written with the same temp-file-and-rename as the manual loop's."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        atomic_save(checkpoint, path)


class MirrorCallback(Callback):
    """Checkpoint every epoch, stop on diverging losses, and honour stop requests between steps.

    A stop request (Ctrl-C, SIGTERM) seen after a step mid-epoch saves the checkpoint right there (Lightning
    2.x resumes such a checkpoint at the next batch). One seen at the epoch's last step, or during
    validation, lets the epoch end: its checkpoint is saved as usual. Either way the run ends when the next
    batch starts, once Lightning has logged what it logs after the hook. One seen after the last step lets
    the run finish. Lightning's own SIGTERM handling is replaced by ours for the run, so both signals behave alike.
    """

    def __init__(self, cfg, run_dir: Path, stop: StopRequest, batches: Batches) -> None:
        self.cfg, self.run_dir, self.stop, self.batches = cfg, run_dir, stop, batches
        self.ckpt_file = checkpoint_path(run_dir)
        self.limit = loss_limit(cfg.sizes[-1])
        self.window: list[torch.Tensor] = []   # this log window's step losses, checked without a sync per step
        self.window_start = 0
        self.pending: Interrupted | None = None  # a stop whose checkpoint is saved, raised at the next batch

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning's signal connector has just put its SIGTERM handler in front of ours; its handler makes the
        # loops raise SIGTERMException (exit code 0, no checkpoint) at points of its choosing. Ours again.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop.handle)
        # --lr, --momentum and --weight-decay given with --resume win over the optimizer state restored from
        # the checkpoint, as in the manual loop.
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group.update(lr=self.cfg.lr, momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.pending is not None:
            raise self.pending

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step          # optimizer steps done, this one included
        if not self.window:
            self.window_start = step - 1
        self.window.append(outputs["loss"].detach())
        if step % self.cfg.log_every == 0:
            self._check()
        if self.stop.requested and self.pending is None:
            last_in_epoch = batch_idx + 1 >= trainer.num_training_batches
            finishing = trainer.max_steps > 0 and step >= trainer.max_steps
            if last_in_epoch or finishing:
                return  # on_train_epoch_end saves and stops
            self._check()
            trainer.save_checkpoint(self.ckpt_file)
            self.pending = Interrupted(self.stop.exit_code, f"stopped at step {step} (epoch "
                                       f"{trainer.current_epoch + 1}); checkpoint saved, continue with "
                                       f"--resume {self.run_dir}")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check()
        val_loss = trainer.callback_metrics.get("val/loss")
        if val_loss is not None and first_diverged(val_loss.reshape(1), self.limit) is not None:
            raise diverged_error(trainer.global_step - 1, self.cfg, self.ckpt_file, self.limit,
                                 what="validation loss")
        trainer.save_checkpoint(self.ckpt_file)
        more = trainer.current_epoch + 1 < trainer.max_epochs and not (
            trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps)
        if self.stop.requested and self.pending is None and more:
            # Raised when the next epoch's first batch starts, after Lightning has logged this epoch's metrics.
            self.pending = Interrupted(self.stop.exit_code, f"stopped at step {trainer.global_step} (end of "
                                       f"epoch {trainer.current_epoch + 1}); checkpoint saved, continue with "
                                       f"--resume {self.run_dir}")

    def _check(self) -> None:
        if not self.window:
            return
        losses = torch.stack(self.window)
        self.window = []
        bad = first_diverged(losses, self.limit)
        if bad is not None:
            raise diverged_error(self.window_start + bad, self.cfg, self.ckpt_file, self.limit)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # The keys every backprop-mirror checkpoint carries, beside Lightning's own.
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in
                   ("train/loss_epoch", "val/loss", "val/acc")}
        checkpoint.update(portable_state(IMPL, self.cfg.to_dict(), pl_module.model.state_dict(),
                                         step=trainer.global_step, epoch=trainer.current_epoch,
                                         data=self.batches.state_dict(), metrics=metrics))



def _kept(run_dir: Path) -> str:
    ckpt = checkpoint_path(run_dir)
    return (f"the last checkpoint is kept, continue with --resume {run_dir}" if ckpt.exists()
            else "no checkpoint was written")


def _quiet_lightning() -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    # The data are in-memory tensors: worker processes would only add copies.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")


def build_model(cfg) -> MLPClassifier:
    return MLPClassifier(cfg.sizes, cfg.activation, lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay, seed=cfg.seed, dtype=cfg.dtype)


def build_trainer(cfg, run_dir: Path, callbacks=(), logger=True) -> L.Trainer:
    _quiet_lightning()
    if logger:
        logger = TensorBoardLogger(save_dir=str(Path(run_dir).parent.parent.parent),
                                   name=f"{cfg.experiment}/{IMPL}", version=Path(run_dir).name,
                                   default_hp_metric=False)
    return L.Trainer(
        accelerator="gpu" if str(cfg.device) in ("cuda", "auto") and torch.cuda.is_available() else "cpu",
        devices=1, precision="64-true" if cfg.dtype == "float64" else "32-true",
        max_epochs=cfg.epochs, max_steps=cfg.max_steps or -1, logger=logger,
        log_every_n_steps=cfg.log_every, num_sanity_val_steps=0, enable_checkpointing=False,
        enable_progress_bar=cfg.progress, enable_model_summary=False, callbacks=list(callbacks),
        plugins=[AtomicCheckpointIO()], default_root_dir=str(run_dir))


def fit(cfg, train: Split, val: Split, run_dir, resume: dict | None = None, resume_path=None) -> dict:
    """Train per ``cfg``, logging to ``run_dir``; returns the final metrics. ``resume`` is a checkpoint
    that ``mirror.runs.check_resumable`` accepted (train.py checks it before any run directory exists)."""
    run_dir = Path(run_dir)
    model = build_model(cfg)
    batches = Batches(train, cfg.batch_size, shuffle=cfg.shuffle, seed=cfg.seed)
    val_batches = Batches(val, cfg.eval_batch_size)
    started = time.perf_counter()
    with StopRequest() as stop:
        trainer = build_trainer(cfg, run_dir, [MirrorCallback(cfg, run_dir, stop, batches)])
        write_hparams_summary(trainer.logger.experiment, cfg.to_dict())
        write_hparams_yaml(run_dir, cfg.to_dict())
        try:
            trainer.fit(model, train_dataloaders=batches, val_dataloaders=val_batches,
                        ckpt_path=str(resume_path) if resume is not None else None)
        except SIGTERMException:  # Lightning's SIGTERM path, should a signal beat on_train_start to it
            raise Interrupted(143, f"stopped by SIGTERM at step {trainer.global_step}; {_kept(run_dir)}") from None
        except SystemExit:
            # A second Ctrl-C: Lightning turns the KeyboardInterrupt into sys.exit(1) after tearing down.
            if stop.signum == signal.SIGINT:
                raise Interrupted(130, f"stopped at once by a second Ctrl-C at step {trainer.global_step}; "
                                  f"{_kept(run_dir)}") from None
            raise
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.global_step % len(batches):
        # --max-steps ended the run inside an epoch, where Lightning runs no validation. The manual loop
        # evaluates there, so do the same, logged at the last step as every epoch's val/* is.
        m["val/loss"], m["val/acc"] = evaluate(model.model, val, cfg.eval_batch_size)
        trainer.logger.log_metrics({k: m[k] for k in ("val/loss", "val/acc")}, step=trainer.global_step - 1)
        trainer.logger.finalize("success")
    seconds = time.perf_counter() - started
    metrics = {"train/loss_epoch": m.get("train/loss_epoch", float("nan")),
               "val/loss": m.get("val/loss", float("nan")), "val/acc": m.get("val/acc", float("nan"))}
    print(summary_line(IMPL, epochs=trainer.current_epoch, steps=trainer.global_step, seconds=seconds,
                       train_loss=metrics["train/loss_epoch"], val_loss=metrics["val/loss"],
                       val_acc=metrics["val/acc"], final=cfg.final, run_dir=run_dir), flush=True)
    return {"steps": trainer.global_step, "seconds": seconds, **metrics, "model": model.model}
