"""Shared pytest setup: make the repository root importable even without an editable install."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
for p in (str(ROOT), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

import os  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def mnist_root() -> Path:
    """The real-digit dataset root (torchvision layout), from MNIST_ROOT; .ci/run points it at mnist-mini."""
    root = os.environ.get("MNIST_ROOT")
    if not root:
        pytest.skip("MNIST_ROOT is not set; point it at a folder holding MNIST/raw (e.g. ../shared/mnist-mini)")
    if not (Path(root) / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST_ROOT={root} holds no MNIST/raw folder")
    return Path(root)
