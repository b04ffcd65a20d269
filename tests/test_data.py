"""The data both implementations see: the course's synthetic set, the MNIST IDX loader and :class:`Batches`.

MNIST tests write their own tiny IDX files (torchvision layout) into ``tmp_path``; only the last ones, which
need real handwriting, use ``mnist_root`` (../shared/mnist-mini, via MNIST_ROOT).
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from mirror import config as config_mod
from mirror.data import Batches, Split, load_data, load_mnist, load_mnist_split, load_synth, read_idx
from mirror.errors import ConfigError


# ------------------------------------------------------------------------------------------ synthetic

def course_load_synth(num_train=60_000, num_val=10_000, seed=0):
    """The course helper as handed out: global NumPy seed, randn, quadratic form, threshold 0.6."""
    np.random.seed(seed)
    threshold = 0.6
    quad = np.asarray([[1, -0.05], [1, .4]])
    ntotal = num_train + num_val
    x = np.random.randn(ntotal, 2)
    q = np.einsum("bf, fk, bk -> b", x, quad, x)
    y = (q > threshold).astype(np.int64)
    return (x[:num_train, :], y[:num_train]), (x[num_train:, :], y[num_train:]), 2


@pytest.fixture(scope="module")
def synth0():
    return load_synth(seed=0)


def test_synth_shapes_and_dtypes(synth0):
    (xt, yt), (xv, yv), n_classes = synth0
    assert n_classes == 2
    assert xt.shape == (60000, 2) and yt.shape == (60000,)
    assert xv.shape == (10000, 2) and yv.shape == (10000,)
    assert xt.dtype == xv.dtype == np.float64
    assert yt.dtype == yv.dtype == np.int64
    assert set(np.unique(yt)) == set(np.unique(yv)) == {0, 1}


def test_synth_class_balance_seed0(synth0):
    (_, yt), (_, yv), _ = synth0
    # NOTES.md: 55.8% ones in training, 56.2% in validation.
    assert round(100 * yt.mean(), 1) == 55.8
    assert round(100 * yv.mean(), 1) == 56.2


def test_synth_matches_course_helper(synth0):
    state = np.random.get_state()
    try:
        expected = course_load_synth(seed=0)
        other_seed = course_load_synth(2000, 500, seed=7)
    finally:
        np.random.set_state(state)
    for got, want in zip(synth0[:2], expected[:2]):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    mine = load_synth(2000, 500, seed=7)
    for got, want in zip(mine[:2], other_seed[:2]):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_synth_label_rule(synth0):
    (xt, yt), _, _ = synth0
    q = xt[:, 0] ** 2 + (-0.05 + 1.0) * xt[:, 0] * xt[:, 1] + 0.4 * xt[:, 1] ** 2
    np.testing.assert_array_equal(yt, (q > 0.6).astype(np.int64))


def test_synth_seeded_and_independent_of_global_state():
    state = np.random.get_state()
    try:
        np.random.seed(123)
        a = load_synth(500, 100, seed=3)
        np.random.seed(456)
        b = load_synth(500, 100, seed=3)
        c = load_synth(500, 100, seed=4)
    finally:
        np.random.set_state(state)
    np.testing.assert_array_equal(a[0][0], b[0][0])
    np.testing.assert_array_equal(a[1][1], b[1][1])
    assert not np.array_equal(a[0][0], c[0][0])


def test_load_data_synth_dtype_and_sizes():
    cfg = config_mod.build(None, {"dataset": "synth", "synth_train": 300, "synth_val": 50, "dtype": "float32"})
    train, val = load_data(cfg)
    assert train.x.shape == (300, 2) and val.x.shape == (50, 2)
    assert train.x.dtype == val.x.dtype == torch.float32
    assert train.y.dtype == val.y.dtype == torch.int64
    (xt, yt), _, _ = load_synth(300, 50, seed=0)
    torch.testing.assert_close(train.x, torch.from_numpy(xt).float(), rtol=0, atol=0)
    assert torch.equal(train.y, torch.from_numpy(yt))


# ---------------------------------------------------------------------------------------------- MNIST

def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: 0x0000, type 0x08, ndim, then each dimension big-endian."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def fake_images(n: int, offset: int = 0) -> np.ndarray:
    """n distinct 28x28 images: pixel (r, c) of image i is (i + offset + 3 r + c) mod 256, then the first
    image's corners set to 0 and 255 so the scale's two ends are present."""
    i = np.arange(offset, offset + n)[:, None, None]
    r = np.arange(28)[None, :, None]
    c = np.arange(28)[None, None, :]
    images = ((i + 3 * r + c) % 256).astype(np.uint8)
    images[0, 0, 0], images[0, 27, 27] = 0, 255
    return images


def write_mnist(root: Path, n_train: int = 60, n_test: int = 20, gz: bool = False):
    raw = root / "MNIST" / "raw"
    images = {True: fake_images(n_train), False: fake_images(n_test, offset=100)}
    labels = {True: (np.arange(n_train) * 7 % 10).astype(np.uint8),
              False: (np.arange(n_test) * 3 % 10).astype(np.uint8)}
    for train, (img_name, lbl_name) in {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                                        False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}.items():
        write_idx(raw / img_name, images[train], gz)
        write_idx(raw / lbl_name, labels[train], gz)
    return images, labels


def expected_x(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images.reshape(len(images), 784).astype(np.float32) / 255.0)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_read_idx(tmp_path, gz):
    images = fake_images(4)
    labels = np.array([3, 1, 4, 1], dtype=np.uint8)
    img = read_idx(write_idx(tmp_path / "img", images, gz), 3)
    lbl = read_idx(write_idx(tmp_path / "lbl", labels, gz), 1)
    assert img.dtype == lbl.dtype == torch.uint8
    assert img.shape == (4, 28, 28) and lbl.shape == (4,)
    assert torch.equal(img, torch.from_numpy(images))
    assert lbl.tolist() == [3, 1, 4, 1]


def test_read_idx_rejects_wrong_magic_and_truncation(tmp_path):
    from mirror.errors import DataError
    labels_file = write_idx(tmp_path / "lbl", np.arange(100, dtype=np.uint8))
    with pytest.raises(DataError, match="magic"):
        read_idx(labels_file, 3)
    cut = tmp_path / "cut"
    cut.write_bytes(idx_bytes(fake_images(2))[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_idx(cut, 3)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_load_mnist_split_values(tmp_path, gz):
    images, labels = write_mnist(tmp_path, gz=gz)
    for train in (True, False):
        split = load_mnist_split(tmp_path, train=train, download=False)
        n = len(images[train])
        assert split.x.shape == (n, 784) and split.y.shape == (n,)
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
        assert float(split.x.max()) == 1.0  # pixel 255 is present and maps to exactly 1
        torch.testing.assert_close(split.x, expected_x(images[train]), rtol=0, atol=0)
        assert split.y.tolist() == labels[train].tolist()
        # Flattened row-major: pixel (r, c) is column 28 r + c.
        assert float(split.x[2, 28 * 5 + 7]) == pytest.approx(images[train][2, 5, 7] / 255.0)


def test_development_split_takes_last_val_size(tmp_path):
    images, labels = write_mnist(tmp_path, n_train=60)
    train, val = load_mnist(tmp_path, final=False, val_size=5, download=False)
    assert len(train) == 55 and len(val) == 5
    all_x = expected_x(images[True])
    assert torch.equal(train.x, all_x[:55]) and torch.equal(val.x, all_x[55:])
    assert train.y.tolist() == labels[True][:55].tolist()
    assert val.y.tolist() == labels[True][55:].tolist()


def test_final_mode_returns_train_and_test(tmp_path):
    images, labels = write_mnist(tmp_path, n_train=60, n_test=20, gz=True)
    train, test = load_mnist(tmp_path, final=True, val_size=5, download=False)
    assert len(train) == 60 and len(test) == 20
    assert torch.equal(train.x, expected_x(images[True]))
    assert torch.equal(test.x, expected_x(images[False]))
    assert test.y.tolist() == labels[False].tolist()


def test_val_size_out_of_range_is_a_config_error(tmp_path):
    write_mnist(tmp_path, n_train=60)
    for bad in (0, 60, 61):
        with pytest.raises(ConfigError, match="val_size"):
            load_mnist(tmp_path, final=False, val_size=bad, download=False)


def test_missing_files_without_download(tmp_path):
    from mirror.errors import DataError
    with pytest.raises(DataError, match="download is off"):
        load_mnist(tmp_path, download=False)


def test_full_size_development_split(tmp_path):
    """60,000 training images with the defaults: the first 55,000 train, the last 5,000 validate."""
    raw = tmp_path / "MNIST" / "raw"
    n = 60_000
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    idx = np.arange(n)
    images[:, 0, 0] = idx % 256          # the image's index, in two pixels
    images[:, 0, 1] = idx // 256
    write_idx(raw / "train-images-idx3-ubyte", images)
    write_idx(raw / "train-labels-idx1-ubyte", (idx % 10).astype(np.uint8))
    write_idx(raw / "t10k-images-idx3-ubyte", images[:10])
    write_idx(raw / "t10k-labels-idx1-ubyte", (idx[:10] % 10).astype(np.uint8))

    cfg = config_mod.build(None, {"data_dir": str(tmp_path), "download": False})
    assert cfg.val_size == 5000 and not cfg.final
    train, val = load_data(cfg)
    assert len(train) == 55_000 and len(val) == 5_000

    def index(split: Split) -> np.ndarray:
        px = (split.x[:, :2] * 255).round().long().numpy()
        return px[:, 0] + 256 * px[:, 1]

    np.testing.assert_array_equal(index(train), np.arange(55_000))
    np.testing.assert_array_equal(index(val), np.arange(55_000, 60_000))
    assert train.y.tolist()[:3] == [0, 1, 2] and val.y.tolist()[:3] == [0, 1, 2]  # 55000 % 10 == 0

    final_train, test = load_data(config_mod.build(None, {"data_dir": str(tmp_path), "download": False,
                                                          "final": True}))
    assert len(final_train) == 60_000 and len(test) == 10


def test_real_digits(mnist_root):
    train, val = load_mnist(mnist_root, val_size=1000, download=False)
    assert len(train) == 7000 and len(val) == 1000
    full, test = load_mnist(mnist_root, final=True, download=False)
    assert len(full) == 8000 and len(test) == 2000
    assert torch.equal(full.x[:7000], train.x) and torch.equal(full.x[7000:], val.x)
    for split in (full, test):
        assert split.x.shape[1] == 784 and split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert float(split.x.min()) == 0.0 and float(split.x.max()) == 1.0
        assert sorted(split.y.unique().tolist()) == list(range(10))
    counts = torch.bincount(full.y, minlength=10)
    assert int(counts.min()) >= 700 and int(counts.max()) <= 950  # README: 723-905 per digit


# -------------------------------------------------------------------------------------------- batches

def numbered(n: int, d: int = 3) -> Split:
    """Row i of x is [i, i, ...]; y is i: a batch tells which samples it holds."""
    x = torch.arange(n, dtype=torch.float64)[:, None].repeat(1, d)
    return Split(x, torch.arange(n))


def epoch(batches: Batches, e: int | None = None) -> list[list[int]]:
    if e is not None:
        batches.sampler.set_epoch(e)
    out = []
    for x, y in batches:
        assert torch.equal(x[:, 0].long(), y)  # x and y stay paired
        out.append(y.tolist())
    return out


def test_same_seed_same_batches():
    split = numbered(97)
    a = Batches(split, 10, shuffle=True, seed=5)
    b = Batches(split, 10, shuffle=True, seed=5)
    for e in range(3):
        assert epoch(a, e) == epoch(b, e)
    assert epoch(Batches(split, 10, shuffle=True, seed=6), 0) != epoch(a, 0)


def test_epochs_draw_different_permutations():
    split = numbered(97)
    b = Batches(split, 10, shuffle=True, seed=0)
    orders = [sum(epoch(b, e), []) for e in range(3)]
    for order in orders:
        assert sorted(order) == list(range(97))  # each epoch visits every sample exactly once
        assert order != list(range(97))
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]
    assert sum(epoch(b, 1), []) == orders[1]  # an epoch's order depends on (seed, epoch) alone


def test_no_shuffle_gives_contiguous_slices():
    split = numbered(23)
    b = Batches(split, 5, shuffle=False, seed=0)
    for e in (0, 4):
        assert epoch(b, e) == [list(range(lo, min(lo + 5, 23))) for lo in range(0, 23, 5)]
    x, _ = next(iter(b))
    assert x.data_ptr() == split.x.data_ptr()  # a view, not a copy


def test_partial_last_batch():
    b = Batches(numbered(23), 5, shuffle=True, seed=1)
    assert len(b) == 5
    sizes = [len(batch) for batch in epoch(b, 0)]
    assert sizes == [5, 5, 5, 5, 3]
    assert len(Batches(numbered(20), 5)) == 4


def test_batch_size_one():
    split = numbered(7)
    b = Batches(split, 1, shuffle=True, seed=0)
    assert len(b) == 7
    seen = []
    for x, y in b:
        assert x.shape == (1, 3) and y.shape == (1,)
        seen.append(int(y))
    assert sorted(seen) == list(range(7))


def test_state_dict_resumes_at_next_batch():
    split = numbered(53)
    original = Batches(split, 5, shuffle=True, seed=3)
    original.sampler.set_epoch(2)
    full = epoch(original)
    assert original.state_dict() == {"epoch": 2, "position": 0}  # a finished epoch

    interrupted = Batches(split, 5, shuffle=True, seed=3)
    interrupted.sampler.set_epoch(2)
    it = iter(interrupted)
    first = [next(it)[1].tolist() for _ in range(4)]
    assert first == full[:4]
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "position": 4}

    resumed = Batches(split, 5, shuffle=True, seed=3)
    resumed.load_state_dict(state)
    assert resumed.sampler.epoch == 2
    assert epoch(resumed) == full[4:]
    # The epoch after the resumed one starts from its first batch again.
    nxt = Batches(split, 5, shuffle=True, seed=3)
    assert epoch(resumed, 3) == epoch(nxt, 3)
