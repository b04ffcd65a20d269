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
