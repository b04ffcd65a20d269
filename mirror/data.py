"""The data both implementations train on: the assignment's synthetic set and MNIST, as in-memory tensors.

Batches are slices or one index gather per batch, never per-sample ``__getitem__`` plus collate, so batch
size 1 (the assignment's per-instance SGD) costs one small tensor op, and both implementations iterate the
very same :class:`Batches` object, so they see the same batches in the same order.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

# The course's synthetic task: label 1 outside the ellipse x^T Q x = 0.6.
SYNTH_Q = np.asarray([[1.0, -0.05], [1.0, 0.4]])
SYNTH_THRESHOLD = 0.6

MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_MAGIC = {1: 2049, 3: 2051}  # labels, images: 0x0000 0x08 (uint8) then the number of dimensions


@dataclass
class Split:
    """``x`` (N, D) floating point, ``y`` (N,) int64 class indices."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.y.shape[0]

    def to(self, device=None, dtype=None) -> "Split":
        return Split(self.x.to(device=device, dtype=dtype), self.y.to(device=device))


def load_synth(num_train: int = 60_000, num_val: int = 10_000, seed: int = 0):
    """The course's ``load_synth``: x ~ N(0, I_2), y = [x^T Q x > 0.6], from ``RandomState(seed)``.

    Returns ``(xtrain, ytrain), (xval, yval), 2`` as NumPy arrays (float64, int64), the same points the
    course helper gives for the same seed.
    """
    rng = np.random.RandomState(seed)
    x = rng.randn(num_train + num_val, 2)
    q = np.einsum("bf,fk,bk->b", x, SYNTH_Q, x)
    y = (q > SYNTH_THRESHOLD).astype(np.int64)
    return (x[:num_train], y[:num_train]), (x[num_train:], y[num_train:]), 2


# ---------------------------------------------------------------------------------------------- MNIST

def _open_idx(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot be read ({e}); delete it and download or copy it again") from None


def read_idx(path: str | Path, ndim: int) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (plain or ``.gz``) with ``ndim`` dimensions, checking its header."""
    path = Path(path)
    data = _open_idx(path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated ({len(data)} bytes, shorter than its header); "
                        "delete it and download or copy it again")
    magic = int.from_bytes(data[:4], "big")
    if magic != IDX_MAGIC[ndim]:
        raise DataError(f"{path}: wrong magic number {magic} (expected {IDX_MAGIC[ndim]}); "
                        "this is not an MNIST {} file".format("image" if ndim == 3 else "label"))
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(f"{path}: truncated or padded ({len(data)} bytes, header says {expected}); "
                        "delete it and download or copy it again")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return torch.from_numpy(array.copy())


def _find(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _missing_message(root: Path, reason: str) -> str:
    names = ", ".join(n for pair in MNIST_FILES.values() for n in pair)
    return (f"MNIST not found under {root / 'MNIST' / 'raw'} ({reason}); put the four files there "
            f"({names}, plain or .gz), or point --data-dir at a folder that has them")


def _download(root: Path) -> None:
    try:
        from torchvision.datasets import MNIST
        MNIST(root=str(root), train=True, download=True)
        MNIST(root=str(root), train=False, download=True)
    except Exception as e:  # no network, a mirror down: all end the same way for the user
        raise DataError(_missing_message(root, f"download failed: {type(e).__name__}")) from None


def load_mnist_split(root: str | Path, train: bool, download: bool = False) -> Split:
    """One official split as uint8-derived float32 pixels in [0, 1], flattened to (N, 784)."""
    root = Path(root)
    raw = root / "MNIST" / "raw"
    images_name, labels_name = MNIST_FILES[train]
    images, labels = _find(raw, images_name), _find(raw, labels_name)
    if images is None or labels is None:
        if not download:
            raise DataError(_missing_message(root, "download is off"))
        _download(root)
        images, labels = _find(raw, images_name), _find(raw, labels_name)
        if images is None or labels is None:
            raise DataError(_missing_message(root, "download left no files"))
    x = read_idx(images, 3)
    y = read_idx(labels, 1)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{images} holds {x.shape[0]} images but {labels} holds {y.shape[0]} labels; "
                        "the pair does not belong together, copy both again")
    if x.shape[1:] != (28, 28):
        raise DataError(f"{images}: images are {tuple(x.shape[1:])}, expected 28x28")
    if y.numel() and int(y.max()) > 9:
        raise DataError(f"{labels}: label {int(y.max())} is outside 0-9; the file is corrupt, copy it again")
    return Split(x.reshape(x.shape[0], -1).float().div_(255.0), y.long())


def load_mnist(root: str | Path = "./data", final: bool = False, val_size: int = 5000,
               download: bool = True) -> tuple[Split, Split]:
    """Development mode: train on all but the last ``val_size`` training images, validate on those.
    Final mode: train on every training image, evaluate on the official test set."""
    train = load_mnist_split(root, train=True, download=download)
    if final:
        return train, load_mnist_split(root, train=False, download=download)
    if not 0 < val_size < len(train):
        from .errors import ConfigError
        raise ConfigError(f"val_size: {val_size} is not valid; expected between 1 and {len(train) - 1} "
                          f"(the training set has {len(train)} images)")
    return Split(train.x[:-val_size], train.y[:-val_size]), Split(train.x[-val_size:], train.y[-val_size:])


def load_data(cfg) -> tuple[Split, Split]:
    """(train, evaluation) splits for a :class:`mirror.config.Config`, on its device and in its dtype."""
    if cfg.dataset == "synth":
        (xt, yt), (xv, yv), _ = load_synth(cfg.synth_train, cfg.synth_val, cfg.seed)
        train = Split(torch.from_numpy(xt), torch.from_numpy(yt))
        val = Split(torch.from_numpy(xv), torch.from_numpy(yv))
    else:
        train, val = load_mnist(cfg.data_dir, cfg.final, cfg.val_size, cfg.download)
    dtype = getattr(torch, cfg.dtype)
    device = resolve_device(cfg.device)
    return train.to(device, dtype), val.to(device, dtype)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError
        raise ConfigError("device: 'cuda' is not valid here; no CUDA GPU is visible, use --device cpu")
    return torch.device(name)


# -------------------------------------------------------------------------------------------- batches

class EpochOrder:
    """The order of samples in each epoch: a permutation drawn from ``(seed, epoch)`` alone.

    Lightning calls ``set_epoch`` on a loader's ``sampler`` at each epoch start; the manual loop calls it
    too, so both draw the same permutation without sharing any random state.
    """

    def __init__(self, n: int, shuffle: bool, seed: int) -> None:
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self, device) -> torch.Tensor | None:
        if not self.shuffle:
            return None
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).to(device)


class Batches:
    """Iterable over ``(x, y)`` batches of a :class:`Split` for the epoch ``sampler.epoch``.

    Stateful: ``state_dict()`` records the epoch and how many batches of it were consumed, so a run stopped
    mid-epoch resumes at the next batch (the manual loop uses this; Lightning calls it for stateful loaders).
    """

    def __init__(self, split: Split, batch_size: int, shuffle: bool = False, seed: int = 0) -> None:
        self.split, self.batch_size = split, batch_size
        self.sampler = EpochOrder(len(split), shuffle, seed)
        self.batch_sampler = None  # Lightning inspects loaders for these two; the batching is ours
        self.position = 0          # batches of the current epoch already handed out
        self._resume_at = 0

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __iter__(self):
        x, y, bs = self.split.x, self.split.y, self.batch_size
        order = self.sampler.indices(x.device)
        start, self._resume_at = self._resume_at, 0
        # Batch size 1, shuffled: the permutation comes to the host once per epoch and each batch is the
        # slice x[i:i+1], a view; gathering one row with index_select would cost more than using it.
        rows = order.tolist() if order is not None and bs == 1 else None
        for b in range(start, len(self)):
            self.position = b + 1
            if rows is not None:
                i = rows[b]
                yield x[i:i + 1], y[i:i + 1]
                continue
            lo, hi = b * bs, min((b + 1) * bs, len(self.split))
            if order is None:
                yield x[lo:hi], y[lo:hi]
            else:
                idx = order[lo:hi]
                yield x.index_select(0, idx), y.index_select(0, idx)
        self.position = 0

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.set_epoch(int(state["epoch"]))
        self._resume_at = self.position = int(state["position"])
