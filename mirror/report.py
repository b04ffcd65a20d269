"""The one-line summary both loops print at the end of a run."""
from __future__ import annotations


def summary_line(impl: str, *, epochs: int, steps: int, seconds: float, train_loss: float,
                 val_loss: float, val_acc: float, final: bool, run_dir) -> str:
    split = "test" if final else "val"
    return (f"{impl}: {epochs} epochs, {steps} steps in {seconds:.1f}s | train loss {train_loss:.4f} | "
            f"{split} loss {val_loss:.4f} | {split} acc {val_acc:.4f} | {run_dir}")
