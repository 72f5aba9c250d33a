"""Shared fixtures: small data made by the tests, and the real MNIST copy where present."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def mnist_dir() -> Path:
    """The real MNIST idx files' folder (``MNIST_DIR``, default ``../shared/data/mnist``)."""
    path = Path(os.environ.get("MNIST_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist"))
    if not (path / "train-images-idx3-ubyte.gz").exists() and not (
        path / "train-images-idx3-ubyte"
    ).exists():
        pytest.skip(f"real MNIST idx files not found in {path} (set MNIST_DIR)")
    return path


def write_digit_folder(root: Path, per_digit: int = 4, size: int = 28, seed: int = 0) -> Path:
    """Write a tiny ``root/{0..9}/*.png`` folder of 28×28 RGB images; returns ``root``."""
    rng = np.random.default_rng(seed)
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True, exist_ok=True)
        for i in range(per_digit):
            gray = np.zeros((size, size), dtype=np.uint8)
            gray[4 + digit : 10 + digit, 6:22] = rng.integers(128, 256, size=(6, 16))
            rgb = np.repeat(gray[:, :, None], 3, axis=2)
            Image.fromarray(rgb).save(root / str(digit) / f"{digit}_{i:05d}.png")
    return root


@pytest.fixture
def tiny_mnist_rgb(tmp_path: Path) -> Path:
    """A 40-image folder in the assignment's layout, made by the test."""
    return write_digit_folder(tmp_path / "mnist_rgb")
