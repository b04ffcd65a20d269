"""The LightningModule that trains ``lightning_ref.MLP`` with autograd, ``F.cross_entropy`` and
``torch.optim.SGD``. Its manual twin is the loop in ``manual/train.py``."""
from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from .model import MLP


class MLPClassifier(L.LightningModule):
    """``MLPClassifier(sizes, activation, lr, momentum=0, weight_decay=0, seed=None, dtype=float32)``.

    Logs ``train/loss`` every logged step, ``train/loss_epoch`` (the per-sample mean over the epoch),
    ``val/loss`` and ``val/acc`` per validation run: the tags the manual loop writes.
    """

    def __init__(self, sizes=(784, 300, 10), activation: str = "sigmoid", lr: float = 0.1,
                 momentum: float = 0.0, weight_decay: float = 0.0, seed: int | None = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        # train.py logs the whole config itself, the same way for both implementations.
        self.save_hyperparameters(logger=False)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.model = MLP(sizes, activation, dtype=getattr(torch, dtype), generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        n = y.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        # Lightning weights each step by batch_size, so this is the per-sample mean over the epoch.
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, acc, n = self._evaluate(batch)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("val/acc", acc, on_epoch=True, prog_bar=True, batch_size=n)

    def test_step(self, batch, batch_idx):
        loss, acc, n = self._evaluate(batch)
        self.log("test/loss", loss, batch_size=n)
        self.log("test/acc", acc, batch_size=n)

    def _evaluate(self, batch):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).to(logits.dtype).mean()
        return loss, acc, y.shape[0]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum,
                               weight_decay=self.hparams.weight_decay)


@torch.no_grad()
def evaluate(model: torch.nn.Module, split, batch_size: int) -> tuple[float, float]:
    """Per-sample mean loss and accuracy of the reference network over ``split`` (a ``mirror.data.Split``)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for lo in range(0, len(split), batch_size):
        x, y = split.x[lo:lo + batch_size], split.y[lo:lo + batch_size]
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == y).sum())
    return loss_sum / len(split), correct / len(split)
