"""Both loops write the same TensorBoard record: hyperparameters, and val/* even when --max-steps stops a run
inside an epoch."""
from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainutil import run_train, scalars

ARGS = ["--dataset", "synth", "--synth-train", "600", "--synth-val", "200", "--hidden", "3", "--batch-size", "10",
        "--lr", "0.1", "--max-steps", "25", "--log-every", "5", "--dtype", "float64"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("logs")
    for impl in ("manual", "lightning"):
        run_train("--impl", impl, "--log-dir", log_dir, *ARGS)
    return {impl: log_dir / "synth" / impl / "version_0" for impl in ("manual", "lightning")}


@pytest.mark.parametrize("impl", ["manual", "lightning"])
def test_hparams_reach_the_event_file(runs, impl):
    acc = EventAccumulator(str(runs[impl]))
    acc.Reload()
    # Raises KeyError when the event file holds no hparams plugin records (Lightning's logger skips them).
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams"), impl


def test_max_steps_mid_epoch_logs_val_at_the_last_step_in_both(runs):
    manual, lightning = scalars(runs["manual"]), scalars(runs["lightning"])
    for tag in ("train/loss_epoch", "val/loss", "val/acc"):
        assert [s for s, _ in manual[tag]] == [24], (tag, manual[tag])
        assert [s for s, _ in lightning[tag]] == [24], (tag, lightning[tag])
        assert manual[tag][0][1] == pytest.approx(lightning[tag][0][1], rel=1e-6), tag


def test_epoch_loss_with_a_short_last_batch_and_windows_across_epochs(tmp_path):
    # 605 samples in batches of 10: each epoch ends on a batch of 5, and 61 steps per epoch with a log window
    # of 7 steps puts window edges inside epochs and epoch ends inside windows. The manual loop adds the
    # epoch's loss up per window, weighting the short batch by its 5 samples; Lightning averages per sample.
    args = ["--dataset", "synth", "--synth-train", "605", "--synth-val", "200", "--hidden", "3", "--batch-size",
            "10", "--lr", "0.1", "--epochs", "3", "--log-every", "7", "--dtype", "float64", "--no-progress"]
    for impl in ("manual", "lightning"):
        run_train("--impl", impl, "--log-dir", tmp_path, *args)
    manual = scalars(tmp_path / "synth" / "manual" / "version_0")
    lightning = scalars(tmp_path / "synth" / "lightning" / "version_0")
    assert [s for s, _ in manual["train/loss_epoch"]] == [60, 121, 182]
    assert [s for s, _ in lightning["train/loss_epoch"]] == [60, 121, 182]
    for (step, m), (_, lt) in zip(manual["train/loss_epoch"], lightning["train/loss_epoch"]):
        assert m == pytest.approx(lt, rel=1e-9), step
    assert [s for s, _ in manual["train/loss"]] == [s for s, _ in lightning["train/loss"]]
    assert [v for _, v in manual["train/loss"]] == pytest.approx([v for _, v in lightning["train/loss"]], rel=1e-9)
