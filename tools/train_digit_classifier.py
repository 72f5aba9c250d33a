"""Train the offline digit evaluator's classifier and measure every measure's floor and noise.

Reads the four MNIST idx files (gzipped or not, sha256-checked) from ``--mnist_dir`` and trains on
the 60,000 training images on the CPU, reproducibly bit for bit: a fixed seed, deterministic
algorithms, ``--threads`` threads, every random draw from a seeded ``torch.Generator``. Each image
of a batch gets its own random affine map (rotation ±10°, scale 0.9–1.1, shift ±2 px); AdamW with
a one-cycle learning rate; label smoothing 0.1. Then it measures, with the evaluator's own code:

- the accuracy on the 10,000 test images;
- the training set's feature mean μ and covariance Σ, and its share of each digit (labels);
- the memorisation threshold: the 1st percentile, over the test images, of the pixel distance
  (gray in [0, 1]) to the nearest training image;
- each measure's **floor**: the test set scored like a set of samples against the training set;
- each measure's **noise**: the training set's images 0–9,999, 10,000–19,999, …, 40,000–49,999
  (idx order) are 5 disjoint blocks; each is scored like a set of samples against the other 50,000
  training images (their μ, Σ, digit shares, fixed 10,000-image reference subset and pixels; the
  same threshold); the noise is the standard deviation (n − 1) of the 5 scores.

All of it goes into ``ddpm_lib/weights/digit_classifier.pt``::

    python tools/train_digit_classifier.py --mnist_dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ddpm_lib import __version__
from ddpm_lib.checkpoint import save_checkpoint
from ddpm_lib.data import load_mnist_idx
from ddpm_lib.evaluator import (
    MEASURES,
    MEMORISATION_PERCENTILE,
    WEIGHTS_PATH,
    DigitClassifier,
    build_reference,
    classify,
    gaussian_of,
    measure,
    nearest_distances,
    unit_gray_pixels,
)

NOISE_BLOCKS, BLOCK_SIZE = 5, 10_000


def random_affine(count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 2, 3) maps for ``F.affine_grid``: rotation θ ~ U(±10°), scale s ~ U(0.9, 1.1),
    shift t ~ U(±2 px) per image: [[cos θ/s, −sin θ/s, t_x], [sin θ/s, cos θ/s, t_y]]."""
    angle = (torch.rand(count, generator=generator) * 2 - 1) * math.radians(10)
    scale = 0.9 + 0.2 * torch.rand(count, generator=generator)
    shift = (torch.rand(count, 2, generator=generator) * 2 - 1) * 2 / 14  # 2 px of 28 in [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                        torch.stack([sin, cos, shift[:, 1]], 1)], 1)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 (B, 1, 28, 28) → each image moved by its own random affine map, in [-1, 1]."""
    unit = images.float() / 255  # the background, 0, is what grid_sample pads with
    maps = random_affine(len(images), generator)
    grid = F.affine_grid(maps, list(unit.shape), align_corners=False)
    return F.grid_sample(unit, grid, align_corners=False) * 2 - 1


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, epochs: int = 8, batch_size: int = 128,
    max_lr: float = 3e-3, seed: int = 0,
) -> DigitClassifier:
    """Train a ``DigitClassifier`` on uint8 images (N, 1, 28, 28) and labels (N,); eval mode."""
    torch.manual_seed(seed)  # the initial weights
    generator = torch.Generator().manual_seed(seed)  # the order and the augmentation
    model = DigitClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=max_lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(images) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr, epochs=epochs,
                                                   steps_per_epoch=steps_per_epoch)
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(model(augment(images[batch], generator)), labels[batch],
                                   label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.4f}", flush=True)
    return model.eval()


def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` whose largest logit is their label."""
    _, probabilities = classify(model, images)
    return (probabilities.argmax(dim=1) == labels).double().mean().item()


def reference_of(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor,
                 threshold: float):
    """Real images (M, 1, 28, 28) as the evaluator's ``Reference``, Σ rounded as it is stored."""
    features, _ = classify(model, images)
    mu, sigma = gaussian_of(features)
    share = (torch.bincount(labels, minlength=10).double() / len(labels)).numpy()
    return build_reference(images, model, mu, sigma.astype(np.float32).astype(np.float64),
                           share, threshold)


def real_data_facts(model: DigitClassifier, train_images: torch.Tensor, train_labels: torch.Tensor,
                    test_images: torch.Tensor) -> dict:
    """Memorisation threshold, floors and noise of every measure, the training set's statistics."""
    test_pixels, train_pixels = unit_gray_pixels(test_images), unit_gray_pixels(train_images)
    test_distances = nearest_distances(test_pixels, train_pixels)
    threshold = torch.quantile(test_distances.double(), MEMORISATION_PERCENTILE / 100).item()
    reference = reference_of(model, train_images, train_labels, threshold)
    floors = measure(test_images, model, reference)
    blocks = []
    for block in range(NOISE_BLOCKS):
        inside = torch.zeros(len(train_images), dtype=torch.bool)
        inside[block * BLOCK_SIZE: (block + 1) * BLOCK_SIZE] = True
        rest = reference_of(model, train_images[~inside], train_labels[~inside], threshold)
        blocks.append(measure(train_images[inside], model, rest))
        print(f"noise block {block + 1}/{NOISE_BLOCKS} scored", flush=True)
    keys = [key for key, *_ in MEASURES]
    return {"train_mu": torch.from_numpy(reference.mu),
            "train_sigma": torch.from_numpy(reference.sigma).float(),
            "train_class_share": torch.from_numpy(reference.class_share).float(),
            "memorisation_threshold": threshold,
            "floors": {key: float(floors[key]) for key in keys},
            "noise": {key: float(np.std([b[key] for b in blocks], ddof=1)) for key in keys},
            "noise_blocks": {key: [float(b[key]) for b in blocks] for key in keys},
            "feature_condition_number": float(np.linalg.cond(reference.sigma))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist_dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--max_lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    scratch = Path(tempfile.mkdtemp(prefix="mnist_"))
    train_images, train_labels = load_mnist_idx(args.mnist_dir, True, scratch)
    test_images, test_labels = load_mnist_idx(args.mnist_dir, False, scratch)
    started = time.perf_counter()
    model = train_classifier(train_images, train_labels, args.epochs, args.batch_size,
                             args.max_lr, args.seed)
    training_seconds = time.perf_counter() - started
    test_accuracy = accuracy(model, test_images, test_labels)
    print(f"test accuracy {test_accuracy:.4f}; training {training_seconds:.0f} s on "
          f"{args.threads} CPU threads", flush=True)
    facts = real_data_facts(model, train_images, train_labels, test_images)
    for key, label, scale, decimals, _ in MEASURES:
        print(f"{label:30} floor {scale * facts['floors'][key]:8.{decimals + 1}f}  "
              f"noise {scale * facts['noise'][key]:8.{decimals + 1}f}")
    print(f"memorisation threshold {facts['memorisation_threshold']:.4f}; Σ's condition number "
          f"{facts['feature_condition_number']:.3g}; {time.perf_counter() - started:.0f} s in all")
    save_checkpoint({"model": model.state_dict(), "seed": args.seed, "epochs": args.epochs,
                     "batch_size": args.batch_size, "max_lr": args.max_lr,
                     "threads": args.threads, "test_accuracy": test_accuracy,
                     "training_seconds": training_seconds, **facts,
                     "parameters": sum(p.numel() for p in model.parameters()),
                     "trained_by": f"tools/train_digit_classifier.py, ddpm_lib {__version__}"},
                    args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
