"""Learning-curve figures and a Markdown summary from the TensorBoard event files of a sweep or of any runs.

Everything is read back from disk the way TensorBoard reads it (``EventAccumulator``), plus each run's
``hparams.yaml`` for its learning rate, seed and batch size; the decision boundary also needs the trained
network, which the caller rebuilds from ``checkpoints/last.ckpt`` (``figures.py`` does, with ``manual.MLP``:
this package imports neither implementation). Figures are drawn with matplotlib's object API (no pyplot, no
display needed), with constrained layout and a tight bounding box so that no text is clipped.

Runs are grouped by (implementation, learning rate); the runs of a group differ by seed. The files written:

- ``train_loss_steps.png``  training loss per logged optimizer step, raw and as a moving average
- ``train_loss_seeds.png``  the moving average's mean and a one-standard-deviation band over seeds, per lr
- ``epoch_loss.png``        train and validation loss per epoch (mean and band over seeds), per lr
- ``val_acc.png``           validation accuracy per epoch (mean and band over seeds), per lr
- ``manual_vs_lightning.png`` one run's curves from both implementations overlaid, and their difference
- ``decision_boundary.png`` two-feature (synthetic) data only: the trained networks' boundary over the points
- ``summary.md`` / ``summary.json``  final validation loss and accuracy, mean and std per lr and implementation
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from .config import IMPLS

FIGURES = {
    "train_loss_steps": "train_loss_steps.png",
    "train_loss_seeds": "train_loss_seeds.png",
    "epoch_loss": "epoch_loss.png",
    "val_acc": "val_acc.png",
    "manual_vs_lightning": "manual_vs_lightning.png",
    "decision_boundary": "decision_boundary.png",
}
DEFAULT_WINDOW = 150  # instances, as question 4's report averaged the loss
DPI = 110
# Settings that do not change what a run computes: two runs equal in everything else are repeats.
INCIDENTAL = ("experiment", "log_dir", "progress", "data_dir", "download")


@dataclass
class Run:
    path: Path
    impl: str
    config: dict
    scalars: dict = field(default_factory=dict)   # tag -> (steps int array, values float array)

    @property
    def lr(self) -> float:
        return float(self.config["lr"])

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def batch_size(self) -> int:
        return int(self.config.get("batch_size", 1))

    def curve(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
        return self.scalars.get(tag, (np.zeros(0, dtype=np.int64), np.zeros(0)))

    def final(self, tag: str) -> float:
        values = self.curve(tag)[1]
        return float(values[-1]) if len(values) else float("nan")

    @property
    def name(self) -> str:
        return f"lr {fmt_lr(self.lr)}, seed {self.seed} ({self.impl})"


def fmt_lr(lr: float) -> str:
    return f"{lr:g}"


# ------------------------------------------------------------------------------------------- reading

def read_scalars(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tag -> (steps, values) of every scalar in a run directory, with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        out[tag] = (np.array([e.step for e in events], dtype=np.int64),
                    np.array([e.value for e in events], dtype=np.float64))
    return out


def _version(path: Path) -> int:
    m = re.fullmatch(r"version_(\d+)", path.name)
    return int(m.group(1)) if m else -1


def _event_dirs(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("events.out.tfevents.*")})


def find_runs(paths: list[str | Path]) -> tuple[list[Run], list[str]]:
    """The runs under ``paths`` and notes on what was left out.

    A folder holding ``sweep.json`` contributes the points that sweep finished (failed ones become notes);
    any other folder every run directory below it. Of runs equal in every setting but the incidental ones
    (experiment name, log_dir, ...) only the newest is kept, so a repeated run is not counted as a new seed.
    """
    notes: list[str] = []
    candidates: list[Path] = []
    for path in map(Path, paths):
        manifest = path / "sweep.json"
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            for p in data.get("points", []):
                label = f"{p['experiment']} {p['impl']}"
                if p.get("status") == "ok" and p.get("run_dir"):
                    # The layout is fixed, so the run is found even when the sweep ran from another folder.
                    candidates.append(path / p["experiment"] / p["impl"] / Path(p["run_dir"]).name)
                else:
                    why = p.get("error") or "not run"
                    code = f", exit {p['exit_code']}" if p.get("exit_code") is not None else ""
                    notes.append(f"{label}: {p.get('status')}{code}: {why}")
        elif path.is_dir():
            found = _event_dirs(path)
            if not found:
                notes.append(f"{path}: no TensorBoard event files below it")
            candidates.extend(found)
        else:
            notes.append(f"{path}: not a folder")
    runs: dict[tuple, Run] = {}
    for run_dir in candidates:
        hp = run_dir / "hparams.yaml"
        if not hp.is_file():
            notes.append(f"{run_dir}: no hparams.yaml (not a train.py run); skipped")
            continue
        config = yaml.safe_load(hp.read_text()) or {}
        impl = run_dir.parent.name if run_dir.parent.name in IMPLS else "unknown"
        key = (impl, json.dumps({k: v for k, v in config.items() if k not in INCIDENTAL}, sort_keys=True,
                                default=str))
        older = runs.get(key)
        if older is not None:
            keep, drop = sorted([older.path, run_dir], key=lambda p: (_version(p), p.stat().st_mtime))[::-1]
            notes.append(f"{drop}: same settings as {keep}; only the newer is shown")
            if keep == older.path:
                continue
        runs[key] = Run(run_dir, impl, config)
    out = sorted(runs.values(), key=lambda r: (r.lr, r.seed, _impl_order(r.impl)))
    for run in out:
        run.scalars = read_scalars(run.path)
        if "train/loss" not in run.scalars:
            notes.append(f"{run.path}: holds no train/loss yet")
    return out, notes


def _impl_order(impl: str) -> int:
    return IMPLS.index(impl) if impl in IMPLS else len(IMPLS)


def groups(runs: list[Run]) -> dict[tuple[str, float], list[Run]]:
    """(impl, lr) -> its runs in seed order, implementations in IMPLS order, learning rates ascending."""
    out: dict[tuple[str, float], list[Run]] = {}
    for run in sorted(runs, key=lambda r: (_impl_order(r.impl), r.lr, r.seed)):
        out.setdefault((run.impl, run.lr), []).append(run)
    return out


# ------------------------------------------------------------------------------------------- numbers

def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0.0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def window_points(run: Run, window: int) -> int:
    """A moving-average window of ``window`` instances, in logged train/loss points of ``run``.

    One optimizer step sees ``batch_size`` instances and train/loss is logged every few steps, so the
    window spans ``window / (batch_size * log interval)`` logged points (at least one).
    """
    steps = run.curve("train/loss")[0]
    interval = float(np.median(np.diff(steps))) if len(steps) > 1 else 1.0
    return max(1, round(window / (run.batch_size * max(interval, 1.0))))


def moving_average(steps: np.ndarray, values: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing mean over ``points`` logged values, plotted at the window's last step (full windows only)."""
    points = max(1, min(points, len(values)))
    if len(values) == 0:
        return steps, values
    csum = np.cumsum(np.concatenate([[0.0], values]))
    return steps[points - 1:], (csum[points:] - csum[:-points]) / points


def smoothed(run: Run, window: int) -> tuple[np.ndarray, np.ndarray]:
    steps, values = run.curve("train/loss")
    return moving_average(steps, values, window_points(run, window))


def band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std) over curves, at the steps all of them have."""
    common = curves[0][0]
    for steps, _ in curves[1:]:
        common = np.intersect1d(common, steps)
    stack = np.stack([vals[np.searchsorted(steps, common)] for steps, vals in curves])
    std = stack.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(common))
    return common, stack.mean(axis=0), std


def summary_rows(runs: list[Run]) -> list[dict]:
    """Per (implementation, lr): the seeds and the mean and std of the runs' final val loss and accuracy."""
    rows = []
    for (impl, lr), members in groups(runs).items():
        loss_mean, loss_std = mean_std([r.final("val/loss") for r in members])
        acc_mean, acc_std = mean_std([r.final("val/acc") for r in members])
        rows.append({"lr": lr, "impl": impl, "seeds": [r.seed for r in members], "n": len(members),
                     "epochs": len(members[0].curve("val/acc")[0]),
                     "val_loss_mean": loss_mean, "val_loss_std": loss_std,
                     "val_acc_mean": acc_mean, "val_acc_std": acc_std,
                     "runs": [str(r.path) for r in members]})
    return sorted(rows, key=lambda r: (r["lr"], _impl_order(r["impl"])))


def pairs(runs: list[Run]) -> list[tuple[Run, Run]]:
    """(manual, lightning) runs of the same learning rate and seed."""
    by = {(r.impl, r.lr, r.seed): r for r in runs}
    return [(r, by[("lightning", r.lr, r.seed)]) for r in runs
            if r.impl == "manual" and ("lightning", r.lr, r.seed) in by]


def differences(a: Run, b: Run, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, b - a) of ``tag`` at the steps both runs logged."""
    sa, va = a.curve(tag)
    sb, vb = b.curve(tag)
    common = np.intersect1d(sa, sb)
    return common, vb[np.searchsorted(sb, common)] - va[np.searchsorted(sa, common)]


def max_abs(values: np.ndarray) -> float:
    return float(np.max(np.abs(values))) if len(values) else float("nan")


# ------------------------------------------------------------------------------------------- drawing

def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: Path) -> Path:
    # Constrained layout keeps labels inside their axes' slots; the tight box grows the canvas for anything
    # that still reaches past the edge (a long title), so no text is clipped.
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15, facecolor="white")
    return path


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _lr_colors(runs: list[Run]) -> dict[float, tuple]:
    lrs = sorted({r.lr for r in runs})
    return dict(zip(lrs, _colors(len(lrs))))


def _impls(runs: list[Run]) -> list[str]:
    return sorted({r.impl for r in runs}, key=_impl_order)


def _impl_title(impl: str) -> str:
    return {"manual": "manual (hand-written backprop)", "lightning": "Lightning (autograd)"}.get(impl, impl)


def _robust_top(values: list[np.ndarray], smooth: list[np.ndarray]) -> float:
    """An upper y limit that shows the smoothed curves whole and the raw points' bulk, not rare spikes."""
    raw = np.concatenate([v for v in values if len(v)]) if values else np.zeros(1)
    sm = np.concatenate([v for v in smooth if len(v)]) if smooth else np.zeros(1)
    top = max(float(np.percentile(raw, 99)), float(sm.max()) * 1.05 if sm.size else 0.0)
    return top if top > 0 and math.isfinite(top) else 1.0


def plot_train_loss_steps(runs: list[Run], window: int, title: str, path: Path) -> Path:
    """One panel per (learning rate, implementation): the lowest seed's raw loss (faint grey, so that the
    panel stays readable) and every seed's moving average."""
    from matplotlib.lines import Line2D

    lrs, impls = sorted({r.lr for r in runs}), _impls(runs)
    seeds = sorted({r.seed for r in runs})
    seed_color = dict(zip(seeds, _colors(len(seeds))))
    fig = _figure(5.2 * len(impls) + 1.0, 2.6 * len(lrs) + 1.0)
    axes = fig.subplots(len(lrs), len(impls), sharex=True, sharey=True, squeeze=False)
    all_raw, all_smooth = [], []
    by = {(r.impl, r.lr, r.seed): r for r in runs}
    raw_seeds = set()
    for i, lr in enumerate(lrs):
        for j, impl in enumerate(impls):
            ax = axes[i][j]
            members = [by[(impl, lr, seed)] for seed in seeds if (impl, lr, seed) in by]
            if members:
                steps, values = members[0].curve("train/loss")
                ax.plot(steps, values, color="grey", lw=0.5, alpha=0.45, rasterized=True)
                all_raw.append(values)
                raw_seeds.add(members[0].seed)
            for run in members:
                s_steps, s_values = smoothed(run, window)
                ax.plot(s_steps, s_values, color=seed_color[run.seed], lw=1.3, alpha=0.9)
                all_smooth.append(s_values)
            ax.set_title(f"lr {fmt_lr(lr)}, {_impl_title(impl)}", fontsize=10)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("training loss")
            if i == len(lrs) - 1:
                ax.set_xlabel("optimizer step")
    axes[0][0].set_ylim(0, _robust_top(all_raw, all_smooth))
    handles = [Line2D([], [], color=seed_color[s], lw=2) for s in seeds]
    labels = [f"seed {s}, moving average" for s in seeds]
    handles.append(Line2D([], [], color="grey", lw=1, alpha=0.6))
    labels.append(f"raw loss of each logged step (seed {'/'.join(map(str, sorted(raw_seeds)))})")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), frameon=False)
    points = sorted({window_points(r, window) for r in runs})
    fig.suptitle(f"{title}: training loss per optimizer step, raw and moving average over {window} instances "
                 f"({'/'.join(map(str, points))} logged points)", fontsize=11)
    return _save(fig, path)


def _impl_panels(runs: list[Run]):
    """One panel per implementation, side by side on a shared y axis; returns the figure, the axes and, per
    panel, ``(ax, impl, [(lr, members), ...])``."""
    impls = _impls(runs)
    fig = _figure(6.0 * len(impls), 4.4)
    axes = fig.subplots(1, len(impls), sharey=True, squeeze=False)[0]
    grouped = groups(runs).items()
    panels = [(ax, impl, [(lr, members) for (g_impl, lr), members in grouped if g_impl == impl])
              for ax, impl in zip(axes, impls)]
    return fig, axes, panels


def _band_line(ax, x, mean, std, n: int, color, style: str = "-", alpha: float = 0.2, **plot_kw) -> None:
    """The mean over ``n`` seeds as a line, with a +-1 std band when there is more than one seed."""
    ax.plot(x, mean, style, color=color, **plot_kw)
    if n > 1:
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=alpha, lw=0)


def _epoch_axis(ax, impl: str) -> None:
    ax.set_title(_impl_title(impl), fontsize=10)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)


def plot_train_loss_seeds(runs: list[Run], window: int, title: str, path: Path) -> Path:
    """Per implementation, one line per learning rate: mean over seeds of the moving average, +-1 std band."""
    colors = _lr_colors(runs)
    fig, axes, panels = _impl_panels(runs)
    tops = []
    for ax, impl, lr_groups in panels:
        for lr, members in lr_groups:
            steps, mean, std = band([smoothed(r, window) for r in members])
            _band_line(ax, steps, mean, std, len(members), colors[lr], lw=1.6,
                       label=f"lr {fmt_lr(lr)} (n={len(members)})")
            tops.append(mean + std)
        ax.set_title(_impl_title(impl), fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(title="learning rate (seeds)", fontsize=9)
    axes[0].set_ylabel(f"training loss, moving average ({window} instances)")
    axes[0].set_ylim(0, _robust_top([], tops))
    fig.suptitle(f"{title}: training loss, mean and ±1 standard deviation over seeds", fontsize=11)
    return _save(fig, path)


def _epoch_band(members: list[Run], tag: str):
    curves = [(np.arange(1, len(r.curve(tag)[1]) + 1), r.curve(tag)[1]) for r in members if len(r.curve(tag)[1])]
    return band(curves) if curves else None


def plot_epoch_loss(runs: list[Run], title: str, path: Path) -> Path:
    """Per implementation: train (solid) and validation (dashed) loss per epoch, mean +-1 std over seeds."""
    from matplotlib.lines import Line2D

    colors = _lr_colors(runs)
    fig, axes, panels = _impl_panels(runs)
    for ax, impl, lr_groups in panels:
        for lr, members in lr_groups:
            for tag, style, marker in (("train/loss_epoch", "-", "o"), ("val/loss", "--", "s")):
                b = _epoch_band(members, tag)
                if b is not None:
                    _band_line(ax, *b, len(members), colors[lr], style, alpha=0.15, marker=marker, ms=4, lw=1.5)
        _epoch_axis(ax, impl)
        handles = [Line2D([], [], color=colors[lr], lw=2) for lr in colors]
        labels = [f"lr {fmt_lr(lr)}" for lr in colors]
        handles += [Line2D([], [], color="black", ls="-", marker="o", ms=4),
                    Line2D([], [], color="black", ls="--", marker="s", ms=4)]
        labels += ["train loss (epoch mean)", "validation loss"]
        ax.legend(handles, labels, fontsize=9)
    axes[0].set_ylabel("cross-entropy loss")
    axes[0].set_ylim(bottom=0)
    fig.suptitle(f"{title}: train and validation loss per epoch, mean and ±1 std over seeds", fontsize=11)
    return _save(fig, path)


def plot_val_acc(runs: list[Run], title: str, path: Path) -> Path:
    """Per implementation, one line per learning rate: validation accuracy per epoch, mean +-1 std over seeds."""
    colors = _lr_colors(runs)
    fig, axes, panels = _impl_panels(runs)
    for ax, impl, lr_groups in panels:
        for lr, members in lr_groups:
            b = _epoch_band(members, "val/acc")
            if b is not None:
                _band_line(ax, *b, len(members), colors[lr], "-o", ms=4, lw=1.5,
                           label=f"lr {fmt_lr(lr)} (n={len(members)})")
        _epoch_axis(ax, impl)
        ax.legend(title="learning rate (seeds)", fontsize=9, loc="lower right")
    axes[0].set_ylabel("validation accuracy")
    fig.suptitle(f"{title}: validation accuracy per epoch, mean and ±1 std over seeds", fontsize=11)
    return _save(fig, path)


def choose_pair(runs: list[Run], lr: float | None = None, seed: int | None = None) -> tuple[Run, Run] | None:
    """The (manual, lightning) pair to compare: the given lr/seed, else the largest lr's lowest seed
    (round-off differences grow fastest at the largest step size)."""
    candidates = [p for p in pairs(runs) if (lr is None or math.isclose(p[0].lr, lr))
                  and (seed is None or p[0].seed == seed)]
    if not candidates:
        return None
    return sorted(candidates, key=lambda p: (-p[0].lr, p[0].seed))[0]


def plot_manual_vs_lightning(pair: tuple[Run, Run], window: int, title: str, path: Path) -> Path:
    """Top: the two implementations' curves overlaid; bottom: Lightning minus manual, point by point."""
    manual, lightning = pair
    fig = _figure(12.0, 7.0)
    (ax_loss, ax_acc), (ax_dloss, ax_dacc) = fig.subplots(2, 2, sharex="col")
    colors = {"manual": "#1f77b4", "lightning": "#ff7f0e"}
    for run, style, lw in ((manual, "-", 3.0), (lightning, "--", 1.2)):
        steps, values = smoothed(run, window)
        ax_loss.plot(steps, values, style, color=colors[run.impl], lw=lw, label=_impl_title(run.impl))
    ax_loss.set_title(f"training loss, moving average over {window} instances", fontsize=10)
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(fontsize=9)
    steps, diff = differences(manual, lightning, "train/loss")
    ax_dloss.plot(steps, diff, color="black", lw=0.6, rasterized=True)
    ax_dloss.axhline(0, color="grey", lw=0.8)
    ax_dloss.set_title(f"difference of the raw training loss (max |Δ| = {max_abs(diff):.2g})", fontsize=10)
    ax_dloss.set_xlabel("optimizer step")
    ax_dloss.set_ylabel("Lightning − manual")
    for run, marker, ms, fill in ((manual, "o", 9, "none"), (lightning, "x", 7, None)):
        values = run.curve("val/acc")[1]
        kwargs = {"mfc": fill} if fill else {}
        ax_acc.plot(np.arange(1, len(values) + 1), values, marker=marker, ms=ms, ls="-" if marker == "o" else ":",
                    color=colors[run.impl], label=_impl_title(run.impl), **kwargs)
    ax_acc.set_title("validation accuracy per epoch", fontsize=10)
    ax_acc.set_ylabel("validation accuracy")
    ax_acc.legend(fontsize=9, loc="lower right")
    for tag, label, marker in (("val/acc", "validation accuracy", "o"), ("val/loss", "validation loss", "s"),
                               ("train/loss_epoch", "train loss (epoch mean)", "^")):
        a, b = manual.curve(tag)[1], lightning.curve(tag)[1]
        n = min(len(a), len(b))
        ax_dacc.plot(np.arange(1, n + 1), b[:n] - a[:n], marker=marker, ms=5, label=label)
    ax_dacc.axhline(0, color="grey", lw=0.8)
    ax_dacc.set_title("difference of the per-epoch values", fontsize=10)
    ax_dacc.set_xlabel("epoch")
    ax_dacc.set_ylabel("Lightning − manual")
    ax_dacc.xaxis.get_major_locator().set_params(integer=True)
    ax_dacc.legend(fontsize=9)
    for ax in (ax_loss, ax_acc, ax_dloss, ax_dacc):
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useOffset=False)
    fig.suptitle(f"{title}: manual against Lightning, lr {fmt_lr(manual.lr)}, seed {manual.seed}", fontsize=11)
    return _save(fig, path)


def boundary_grid(predict, lim: float = 3.5, points: int = 250):
    """(xx, yy, P(class 1)) of a trained network ``predict`` ((N, 2) array -> (N,) P(class 1)) on a grid."""
    xs = np.linspace(-lim, lim, points)
    xx, yy = np.meshgrid(xs, xs)
    prob = np.asarray(predict(np.stack([xx.ravel(), yy.ravel()], axis=1)), dtype=np.float64)
    return xx, yy, prob.reshape(xx.shape)


def plot_decision_boundary(runs: list[Run], title: str, path: Path, load_network, max_points: int = 1500) -> Path:
    """One panel per learning rate (lowest seed, the manual run where there is one): P(class 1) as colour,
    the network's boundary P = 0.5, the true ellipse x^T Q x = 0.6 and validation points by their label.

    ``load_network(run_dir)`` rebuilds a run's trained network as a function (N, 2) array -> P(class 1);
    ``figures.py`` passes one built on ``manual.MLP`` (this package imports neither implementation)."""
    from matplotlib.lines import Line2D

    from .data import SYNTH_Q, SYNTH_THRESHOLD, load_synth

    chosen = {}
    for run in sorted(runs, key=lambda r: (r.seed, _impl_order(r.impl))):
        chosen.setdefault(run.lr, run)
    shown = [chosen[lr] for lr in sorted(chosen)]
    cols = min(len(shown), 4)
    rows = -(-len(shown) // cols)
    fig = _figure(4.2 * cols + 1.2, 4.0 * rows + 0.9)
    axes = fig.subplots(rows, cols, squeeze=False)
    mesh = None
    for k, ax in enumerate(axes.ravel()):
        if k >= len(shown):
            ax.set_axis_off()
            continue
        run = shown[k]
        xx, yy, prob = boundary_grid(load_network(run.path))
        mesh = ax.contourf(xx, yy, prob, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.45)
        ax.contour(xx, yy, prob, levels=[0.5], colors="black", linewidths=1.6)
        q = np.einsum("bf,fk,bk->b", np.stack([xx.ravel(), yy.ravel()], 1), SYNTH_Q,
                      np.stack([xx.ravel(), yy.ravel()], 1)).reshape(xx.shape)
        ax.contour(xx, yy, q, levels=[SYNTH_THRESHOLD], colors="dimgrey", linewidths=1.4, linestyles="--")
        cfg = run.config
        _, (xv, yv), _ = load_synth(int(cfg.get("synth_train", 60000)), int(cfg.get("synth_val", 10000)),
                                    int(cfg.get("seed", 0)))
        xv, yv = xv[:max_points], yv[:max_points]
        inside = (np.abs(xv) <= 3.5).all(axis=1)
        for label, color in ((0, "#2166ac"), (1, "#b2182b")):
            sel = inside & (yv == label)
            ax.scatter(xv[sel, 0], xv[sel, 1], s=5, color=color, alpha=0.6, lw=0)
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
        ax.set_aspect("equal")
        one_class = "" if prob.min() < 0.5 < prob.max() else ", one class everywhere"
        ax.set_title(f"lr {fmt_lr(run.lr)}, seed {run.seed} ({run.impl}): val acc {run.final('val/acc'):.3f}"
                     f"{one_class}", fontsize=10)
        ax.set_xlabel("feature x₁")
        ax.set_ylabel("feature x₂")
    handles = [Line2D([], [], color="black", lw=1.6), Line2D([], [], color="dimgrey", lw=1.4, ls="--"),
               Line2D([], [], color="#2166ac", marker="o", ls="", ms=5),
               Line2D([], [], color="#b2182b", marker="o", ls="", ms=5)]
    labels = ["network boundary (P = 0.5)", "true boundary (xᵀQx = 0.6)", "class 0 (validation)",
              "class 1 (validation)"]
    fig.legend(handles, labels, loc="outside lower center", ncols=4, frameon=False)
    if mesh is not None:
        fig.colorbar(mesh, ax=axes.ravel().tolist(), label="network's P(class 1)", shrink=0.85)
    fig.suptitle(f"{title}: decision boundary of the trained network over the synthetic data", fontsize=11)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- summary

def _pm(mean: float, std: float, n: int) -> str:
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def summary_markdown(title: str, sources: list[str], runs: list[Run], rows: list[dict], pair_rows: list[dict],
                     written: dict[str, Path], notes: list[str], window: int, command: str | None) -> str:
    datasets = sorted({str(r.config.get("dataset")) for r in runs})
    batches = sorted({r.batch_size for r in runs})
    epochs = sorted({len(r.curve("val/acc")[0]) for r in runs})
    lines = [f"# {title}: learning curves", ""]
    lines.append(f"{len(runs)} runs from {', '.join(f'`{s}`' for s in sources)}: dataset "
                 f"{', '.join(datasets)}, batch size {', '.join(map(str, batches))}, "
                 f"{', '.join(map(str, epochs))} epochs." + (f" Made by `{command}`." if command else ""))
    lines += ["", "## Final validation loss and accuracy", "",
              "Each run's last `val/loss` and `val/acc` (after its last epoch), as mean ± standard deviation "
              "over seeds (n − 1 in the denominator).", "",
              "| learning rate | implementation | seeds | val loss | val acc |",
              "|---:|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {fmt_lr(row['lr'])} | {row['impl']} | {', '.join(map(str, row['seeds']))} | "
                     f"{_pm(row['val_loss_mean'], row['val_loss_std'], row['n'])} | "
                     f"{_pm(row['val_acc_mean'], row['val_acc_std'], row['n'])} |")
    if pair_rows:
        lines += ["", "## Manual against Lightning", "",
                  "Largest absolute difference between the two implementations' logged values for the same "
                  "learning rate and seed.", "",
                  "| learning rate | seed | train/loss points | max abs diff train/loss | "
                  "max abs diff val/loss | max abs diff val/acc |", "|---:|---:|---:|---:|---:|---:|"]
        for p in pair_rows:
            lines.append(f"| {fmt_lr(p['lr'])} | {p['seed']} | {p['points']} | {p['train_loss']:.2e} | "
                         f"{p['val_loss']:.2e} | {p['val_acc']:.2e} |")
    lines += ["", "## Figures", ""]
    captions = {
        "train_loss_steps": f"Training loss per step: raw, and a moving average over {window} instances",
        "train_loss_seeds": "Training loss: mean and ±1 std over seeds, one line per learning rate",
        "epoch_loss": "Train and validation loss per epoch",
        "val_acc": "Validation accuracy per epoch",
        "manual_vs_lightning": "Manual against Lightning for the same run: overlaid, and their difference",
        "decision_boundary": "Decision boundary of the trained network over the synthetic data",
    }
    for key, file in written.items():
        lines.append(f"![{captions[key]}]({file.name})")
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines).rstrip() + "\n"


def make_all(paths: list[str | Path], out: str | Path, window: int = DEFAULT_WINDOW,
             compare_lr: float | None = None, compare_seed: int | None = None,
             title: str | None = None, command: str | None = None, load_network=None) -> dict:
    """Read the runs under ``paths``; write the figures, ``summary.md`` and ``summary.json`` into ``out``.

    ``load_network`` (see :func:`plot_decision_boundary`) is needed for the decision boundary only.

    Returns ``{"figures": {key: path}, "summary": path, "runs": n, "notes": [...], "skipped": {key: why}}``.
    """
    if window < 1:
        raise ValueError(f"window must be a positive number of instances, got {window}")
    runs, notes = find_runs(paths)
    runs = [r for r in runs if "train/loss" in r.scalars]
    if not runs:
        raise FileNotFoundError(f"no finished runs under {', '.join(map(str, paths))}"
                                + (f" ({'; '.join(notes)})" if notes else ""))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = title or ", ".join(Path(p).resolve().name for p in paths)
    written: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    written["train_loss_steps"] = plot_train_loss_steps(runs, window, title, out / FIGURES["train_loss_steps"])
    written["train_loss_seeds"] = plot_train_loss_seeds(runs, window, title, out / FIGURES["train_loss_seeds"])
    written["epoch_loss"] = plot_epoch_loss(runs, title, out / FIGURES["epoch_loss"])
    written["val_acc"] = plot_val_acc(runs, title, out / FIGURES["val_acc"])
    pair = choose_pair(runs, compare_lr, compare_seed)
    if pair is not None:
        written["manual_vs_lightning"] = plot_manual_vs_lightning(pair, window, title,
                                                                  out / FIGURES["manual_vs_lightning"])
    else:
        skipped["manual_vs_lightning"] = "no learning rate and seed was trained by both implementations"
    two_feature = [r for r in runs if r.config.get("dataset") == "synth"
                   and (r.path / "checkpoints" / "last.ckpt").is_file()]
    if not two_feature:
        skipped["decision_boundary"] = "only drawn for two-feature (synthetic) data"
    elif load_network is None:
        skipped["decision_boundary"] = "no network loader given (figures.py passes one)"
    else:
        written["decision_boundary"] = plot_decision_boundary(two_feature, title, out / FIGURES["decision_boundary"],
                                                              load_network)
    rows = summary_rows(runs)
    pair_rows = []
    for m, lt in pairs(runs):
        loss_steps, loss_diff = differences(m, lt, "train/loss")
        pair_rows.append({"lr": m.lr, "seed": m.seed, "points": len(loss_steps), "train_loss": max_abs(loss_diff),
                          "val_loss": max_abs(differences(m, lt, "val/loss")[1]),
                          "val_acc": max_abs(differences(m, lt, "val/acc")[1])})
    text = summary_markdown(title, [str(p) for p in paths], runs, rows, pair_rows, written,
                            notes + [f"{FIGURES[k]}: {why}" for k, why in skipped.items()], window, command)
    summary_path = out / "summary.md"
    summary_path.write_text(text)
    (out / "summary.json").write_text(json.dumps(
        {"title": title, "window": window, "groups": rows, "manual_vs_lightning": pair_rows,
         "figures": {k: v.name for k, v in written.items()}, "skipped": skipped, "notes": notes},
        indent=2) + "\n")
    return {"figures": written, "summary": summary_path, "runs": len(runs), "notes": notes, "skipped": skipped}
