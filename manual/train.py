"""The hand-written training loop: forward, manual backward, SGD step, all under ``torch.inference_mode()``.

Its twin is ``lightning_ref/train.py``; they share the data, run directories, tags and checkpoint format
from ``mirror`` so that one config and seed give the same weights and the same curves in both.
"""
from __future__ import annotations

import contextlib
import time

import torch
from tqdm import tqdm

from mirror.data import Batches, Split
from mirror.divergence import diverged_error, first_diverged, loss_limit
from mirror.report import summary_line
from mirror.runs import atomic_save, checkpoint_path, portable_state
from mirror.signals import Interrupted, StopRequest
from mirror.tb import ScalarWriter

from .nn import MLP, CrossEntropyLoss
from .optim import SGD

IMPL = "manual"


@torch.inference_mode()
def evaluate(model: MLP, split: Split, batch_size: int) -> tuple[float, float]:
    """Per-sample mean loss and accuracy over ``split``."""
    criterion = CrossEntropyLoss()
    loss_sum = torch.zeros((), dtype=split.x.dtype, device=split.x.device)
    correct = torch.zeros((), dtype=torch.long, device=split.x.device)
    for lo in range(0, len(split), batch_size):
        x, y = split.x[lo:lo + batch_size], split.y[lo:lo + batch_size]
        logits = model(x)
        loss_sum += criterion(logits, y) * y.shape[0]
        correct += (logits.argmax(dim=1) == y).sum()
    return (loss_sum / len(split)).item(), correct.item() / len(split)


def build_model(cfg) -> MLP:
    # Initialised on the CPU from the seed, then moved: the reference does the same, so both start equal.
    generator = torch.Generator().manual_seed(cfg.seed)
    model = MLP(cfg.sizes, cfg.activation, dtype=getattr(torch, cfg.dtype), generator=generator)
    return model


def train_step(model: MLP, criterion: CrossEntropyLoss, optimizer: SGD, x: torch.Tensor,
               y: torch.Tensor) -> torch.Tensor:
    """One SGD step on the batch ``x`` (N, D_in), ``y`` (N,); returns its mean loss as a 0-dim tensor.

    Nothing here reads a value back to the host (no device sync per step), and no gradient memory is
    allocated after the first step: backward writes into the parameters' ``.grad`` in place, or, for plain
    SGD, straight into the weights. The modules' ``forward`` is called directly: no tensor requires grad,
    so the ``no_grad`` wrapper of ``__call__`` would only cost time.
    """
    loss = criterion.forward(model.forward(x), y)
    dlogits = criterion.backward()
    if optimizer.plain:
        # Plain SGD: each layer updates its weights as soon as their gradient is known, inside the
        # gradient's own matrix product (Linear.backward); no separate pass over the weights.
        model.backward(dlogits, input_grad=False, sgd_lr=optimizer.lr)
    else:
        model.backward(dlogits, input_grad=False)  # the data need no gradient
        optimizer.step()
    return loss


def _first_bad(window: torch.Tensor, count: int, first_step: int, limit: float) -> int | None:
    if count == 0:
        return None
    losses = window[:count]
    if losses.max().item() <= limit:  # the usual answer in one reduction; a NaN fails the comparison
        return None
    bad = first_diverged(losses, limit)
    return None if bad is None else first_step + bad


# inference_mode, not no_grad: besides recording no graph, it skips the version counters and view tracking
# that in-place ops and views pay for under no_grad, ~10% of a step at batch size 1. Tensors made inside it
# cannot enter autograd later, which nothing here needs.
@torch.inference_mode()
def fit(cfg, train: Split, val: Split, run_dir, resume: dict | None = None) -> dict:
    """Train per ``cfg``, logging to ``run_dir``; returns the final metrics. ``resume`` is a checkpoint."""
    device = train.x.device
    model = build_model(cfg).to(device=device)
    criterion = CrossEntropyLoss()
    optimizer = SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    batches = Batches(train, cfg.batch_size, shuffle=cfg.shuffle, seed=cfg.seed)
    writer = ScalarWriter(run_dir, cfg.to_dict())
    ckpt_file = checkpoint_path(run_dir)
    limit = loss_limit(cfg.sizes[-1])

    step, start_epoch = 0, 0
    loss_sum = torch.zeros((), dtype=train.x.dtype, device=device)  # sum over samples this epoch
    seen = 0
    if resume is not None:
        model.load_state_dict(resume["weights"])
        optimizer.load_state_dict(resume["optimizer"])
        step, start_epoch = resume["step"], resume["epoch"]
        batches.load_state_dict(resume["data"])
        loss_sum.fill_(resume["epoch_loss_sum"])
        seen = resume["epoch_seen"]

    k = cfg.log_every
    # This log window's step losses; windows start at multiples of k. One 0-dim view per slot: copy_ into
    # a view costs half of window[i] = loss.
    window = torch.zeros(k, dtype=train.x.dtype, device=device)
    slots = window.unbind(0)
    window_start = step - step % k
    # The epoch's loss sum is added up window by window, not step by step: slots [summed, ...) of the window
    # are not in loss_sum yet. A checkpoint keeps them, so a resumed run adds up the same numbers in the
    # same groups as one never stopped, and logs the same bits.
    summed = step - window_start
    if resume is not None and "window_losses" in resume:
        saved = resume["window_losses"]
        window[:len(saved)] = torch.tensor(saved, dtype=window.dtype)
        summed = resume["window_summed"]

    def add_to_sum(hi: int, last_n: int) -> None:
        """Add slots [summed, hi) to loss_sum, each weighted by its batch size: the full one, but the last
        slot's, which is short at an epoch's end."""
        if hi > summed:
            full = hi if last_n == cfg.batch_size else hi - 1
            if full > summed:
                loss_sum.add_(window[summed:full].sum(), alpha=cfg.batch_size)
            if full < hi:
                loss_sum.add_(window[hi - 1], alpha=last_n)

    def save(epoch: int, metrics: dict) -> None:
        # At an epoch boundary the data state is the next epoch's start, however the last loop was left.
        data = batches.state_dict() if epoch == batches.sampler.epoch else {"epoch": epoch, "position": 0}
        atomic_save(portable_state(
            IMPL, cfg.to_dict(), model.state_dict(), optimizer=optimizer.state_dict(), step=step,
            epoch=epoch, data=data, epoch_loss_sum=loss_sum.item(), epoch_seen=seen,
            window_losses=window[:step - window_start].tolist(), window_summed=summed,
            metrics=metrics), ckpt_file)
    metrics = dict(resume.get("metrics", {})) if resume else {}
    max_steps = cfg.max_steps
    started = time.perf_counter()
    train_seconds = 0.0  # inside the step loops only: no setup, evaluation or checkpoints
    epoch = start_epoch
    with StopRequest() as stop, contextlib.closing(writer):  # events flushed however the run ends
        for epoch in range(start_epoch, cfg.epochs):
            batches.sampler.set_epoch(epoch)
            bar = tqdm(total=len(batches) * cfg.batch_size, initial=batches.position * cfg.batch_size,
                       desc=f"{IMPL} epoch {epoch + 1}/{cfg.epochs}", unit="sample", unit_scale=True,
                       mininterval=0.5, disable=not cfg.progress, leave=False, dynamic_ncols=True)
            loop_started = time.perf_counter()
            n = cfg.batch_size
            for x, y in batches:
                loss = train_step(model, criterion, optimizer, x, y)

                slots[step - window_start].copy_(loss)  # a device-side copy: no sync
                n = y.shape[0]
                seen += n
                step += 1
                bar.update(n)
                if step % k == 0:  # Lightning's rule: log after steps k, 2k, ... at step index s - 1
                    bad = _first_bad(window, k, window_start, limit)
                    if bad is not None:
                        raise diverged_error(bad, cfg, ckpt_file, limit)
                    add_to_sum(k, n)
                    value = window[k - 1].item()
                    writer.add_all({"train/loss": value, "epoch": epoch}, step - 1)
                    bar.set_postfix(loss=f"{value:.4f}", refresh=False)
                    window_start, summed = step, 0
                if stop.requested or (max_steps and step >= max_steps):
                    break
            train_seconds += time.perf_counter() - loop_started
            bar.close()
            bad = _first_bad(window, step - window_start, window_start, limit)
            if bad is not None:
                raise diverged_error(bad, cfg, ckpt_file, limit)
            finishing = bool(cfg.max_steps and step >= cfg.max_steps)
            if stop.requested and 0 < batches.position < len(batches) and not finishing:  # mid-epoch
                save(epoch, metrics)
                writer.close()
                raise Interrupted(stop.exit_code, f"stopped at step {step} (epoch {epoch + 1}); checkpoint "
                                  f"saved, continue with --resume {run_dir}")
            # The epoch's metrics, at its last step, as Lightning logs them.
            add_to_sum(step - window_start, n)
            summed = step - window_start
            train_loss = (loss_sum / max(seen, 1)).item()
            val_loss, val_acc = evaluate(model, val, cfg.eval_batch_size)
            metrics = {"train/loss_epoch": train_loss, "val/loss": val_loss, "val/acc": val_acc}
            writer.add_all({**metrics, "epoch": epoch}, step - 1)
            writer.flush()
            if first_diverged(torch.tensor([val_loss]), limit) is not None:
                raise diverged_error(step - 1, cfg, ckpt_file, limit, what="validation loss")
            loss_sum.zero_()
            seen = 0
            save(epoch + 1, metrics)
            if cfg.max_steps and step >= cfg.max_steps:
                break
            if stop.requested and epoch + 1 < cfg.epochs:  # stopped at (or during) the epoch's end
                raise Interrupted(stop.exit_code, f"stopped at step {step} (end of epoch {epoch + 1}); "
                                  f"checkpoint saved, continue with --resume {run_dir}")
    writer.close()
    seconds = time.perf_counter() - started
    print(summary_line(IMPL, epochs=epoch + 1, steps=step, seconds=seconds, train_loss=metrics["train/loss_epoch"],
                       val_loss=metrics["val/loss"], val_acc=metrics["val/acc"], final=cfg.final,
                       run_dir=run_dir), flush=True)
    return {"steps": step, "seconds": seconds, "train_seconds": train_seconds, **metrics, "model": model}
