"""100 SGD steps of the manual loop and of Lightning's ``Trainer.fit`` end in the same place."""
from __future__ import annotations

import logging
import warnings

import lightning as L
import pytest
import torch

import lightning_ref
import manual
from mirror.data import Batches, Split, load_synth
from helpers import cmp

STEPS = 100
BATCH = 50          # 2000 / 50 = 40 batches per epoch: 100 steps cross two epoch boundaries
SIZES = [2, 16, 2]


@pytest.fixture(scope="module")
def train_split():
    (xt, yt), _, _ = load_synth(2000, 200, seed=0)
    split = Split(torch.from_numpy(xt), torch.from_numpy(yt))
    assert split.x.dtype == torch.float64 and split.y.dtype == torch.int64
    return split


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def run_manual(split, init_state, activation, lr, momentum, weight_decay):
    model = manual.MLP(SIZES, activation=activation, dtype=torch.float64)
    model.load_state_dict(init_state)
    crit = manual.CrossEntropyLoss()
    opt = manual.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    batches = Batches(split, BATCH, shuffle=True, seed=0)
    losses, step, epoch = [], 0, 0
    while step < STEPS:
        batches.sampler.set_epoch(epoch)
        for x, y in batches:
            loss = crit(model(x), y)
            model.backward(crit.backward())
            opt.step()
            losses.append(float(loss))
            step += 1
            if step == STEPS:
                break
        epoch += 1
    return model, losses


def run_lightning(split, init_state, activation, lr, momentum, weight_decay):
    clf = lightning_ref.MLPClassifier(SIZES, activation, lr=lr, momentum=momentum,
                                      weight_decay=weight_decay, seed=0, dtype="float64")
    clf.model.load_state_dict(init_state)
    recorder = LossRecorder()
    trainer = L.Trainer(max_steps=STEPS, precision="64-true", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        accelerator="cpu", devices=1, callbacks=[recorder])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(clf, train_dataloaders=Batches(split, BATCH, shuffle=True, seed=0))
    assert trainer.global_step == STEPS
    return clf.model, recorder.losses


@pytest.fixture(autouse=True, scope="module")
def _quiet_lightning():
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.mark.parametrize("activation,lr,momentum,weight_decay", [
    ("sigmoid", 0.5, 0.0, 0.0),
    ("tanh", 0.1, 0.9, 1e-4),
    ("relu", 0.05, 0.5, 1e-3),
], ids=["plain-sgd", "momentum-wd", "relu-momentum-wd"])
def test_manual_and_lightning_trajectories_agree(train_split, activation, lr, momentum, weight_decay):
    init = manual.MLP(SIZES, activation=activation, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(0))
    with torch.no_grad():   # non-zero biases, so the bias path and weight decay on biases both matter
        for layer in init.layers:
            layer.bias.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(1))
    init_state = {k: v.clone() for k, v in init.state_dict().items()}

    man, man_losses = run_manual(train_split, init_state, activation, lr, momentum, weight_decay)
    ref, ref_losses = run_lightning(train_split, init_state, activation, lr, momentum, weight_decay)

    assert len(man_losses) == len(ref_losses) == STEPS
    cmp("per-step losses", torch.tensor(man_losses, dtype=torch.float64),
        torch.tensor(ref_losses, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    moved = 0.0
    for (name, p), (rname, q) in zip(man.named_parameters(), ref.named_parameters(), strict=True):
        assert name == rname
        assert q.dtype == torch.float64
        cmp(f"final {name}", p, q.detach().cpu(), rtol=0.0, atol=1e-9)
        moved = max(moved, float((p - init_state[name]).abs().max()))
    # Training did something: the weights moved.
    assert moved > 1e-2, f"weights barely moved ({moved})"
