"""How the digit evaluator's measures move when real digits are spoiled: its sensitivity table.

Every row is scored by ``ddpm_lib.evaluator.evaluate_samples`` against MNIST's 60,000 training
images (read from the idx files in ``--mnist_dir``), each with ``--num_images`` (10,000) images:

- **MNIST test**: the test set itself, which scores the stored real-data floor;
- **noise σ**: the test images with Gaussian pixel noise of standard deviation σ (of the [0, 1]
  range) added, clamped to [0, 1] and rounded back to 8 bits (one seeded draw);
- **blur σ**: the test images blurred by a Gaussian of σ pixels (torchvision's ``gaussian_blur``,
  kernel 2⌈3σ⌉ + 1, reflected edges);
- **digits 0–4 only**: MNIST's 5,139 test images of digits 0–4, each once, then a seeded choice
  of the rest of the rows' size among them again (no image a third time);
- ``--samples NAME=a.npz[,b.npz,…]``: generated images (npz key ``images``: uint8 (N, 3, 28, 28)
  or (N, 28, 28)); several files (e.g. sampling seeds) give mean ± std.

It prints a markdown table (every measure, digit-FID and KID as multiples of the floor, then the
stored floor and noise) and writes it as JSON with ``--json``::

    python bench/bench_evaluator.py --mnist_dir ../shared/data/mnist \\
        --samples ddpm=samples_seed0.npz,samples_seed1.npz --json bench/results/evaluator.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from ddpm_lib.data import load_mnist_idx
from ddpm_lib.evaluator import (
    MEASURES,
    SampleReport,
    evaluate_samples,
    load_digit_classifier,
    summarise,
)

DEFAULT_MNIST_DIR = os.environ.get("MNIST_DIR", "../shared/data/mnist")


def with_pixel_noise(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """uint8 images + N(0, σ²) per pixel on the [0, 1] scale, clamped, rounded to uint8."""
    generator = torch.Generator().manual_seed(seed)
    noisy = images.float() / 255 + sigma * torch.randn(images.shape, generator=generator)
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8)


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """uint8 images (N, C, 28, 28) blurred by a Gaussian of ``sigma`` pixels, rounded to uint8."""
    kernel = 2 * math.ceil(3 * sigma) + 1
    smooth = gaussian_blur(images.float(), [kernel, kernel], [sigma, sigma])
    return smooth.round().clamp(0, 255).to(torch.uint8)


def only_digits(images: torch.Tensor, labels: torch.Tensor, digits: range, count: int,
                seed: int = 0) -> torch.Tensor:
    """``count`` images of the given digits: each once, then a seeded choice among them again."""
    pool = images[torch.isin(labels, torch.tensor(list(digits)))]
    generator = torch.Generator().manual_seed(seed)
    repeats = [torch.randperm(len(pool), generator=generator)
               for _ in range(max(0, math.ceil(count / len(pool)) - 1))]
    return pool[torch.cat([torch.arange(len(pool)), *repeats])[:count]]


def load_npz_images(path: str | Path) -> torch.Tensor:
    """The ``images`` array of an npz file as uint8 (N, C, 28, 28)."""
    with np.load(path) as archive:
        if "images" not in archive:
            raise ValueError(f"{path} holds no array named 'images' (has {list(archive)})")
        images = torch.from_numpy(archive["images"])
    if images.dtype != torch.uint8 or images.shape[-2:] != (28, 28) or images.ndim not in (3, 4):
        raise ValueError(f"{path}: images must be uint8 (N, 3, 28, 28) or (N, 28, 28), got "
                         f"{images.dtype} {tuple(images.shape)}")
    return images[:, None] if images.ndim == 3 else images


def parse_samples(specs: list[str]) -> dict[str, list[Path]]:
    """``["NAME=a.npz,b.npz", …]`` → {NAME: [a.npz, b.npz]}."""
    parsed = {}
    for spec in specs:
        name, _, paths = spec.partition("=")
        if not name or not paths:
            raise SystemExit(f"error: --samples wants NAME=path.npz[,path.npz…], got {spec!r}")
        parsed[name] = [Path(path) for path in paths.split(",")]
    return parsed


def cell(mean: float, std: float, sets: int, scale: float, decimals: int) -> str:
    """``1.234`` or ``1.234 ± 0.056`` (several sets)."""
    text = f"{scale * mean:.{decimals}f}"
    return f"{text} ± {scale * std:.{decimals}f}" if sets > 1 else text


def markdown_table(rows: dict[str, list[SampleReport]], floors: dict, noise: dict) -> str:
    """One row per image set (mean ± std over its sets), then the stored floor and noise."""
    header = ["set", "images"]
    for _, label, _, _, ratio in MEASURES:
        header += [label, "×floor"] if ratio else [label]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, reports in rows.items():
        stats, cells = summarise(reports), [name, f"{reports[0].count:,}"]
        for key, _, scale, decimals, ratio in MEASURES:
            cells.append(cell(*stats[key], len(reports), scale, decimals))
            cells += [f"{stats[key][0] / floors[key]:.2f}"] if ratio else []
        lines.append("| " + " | ".join(cells) + " |")
    for name, values in (("stored floor (test vs train)", floors),
                         ("real-data noise (std, 5 blocks)", noise)):
        cells = [name, ""]
        for key, _, scale, decimals, ratio in MEASURES:
            cells += [f"{scale * values[key]:.{decimals}f}"] + ([""] if ratio else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spoiled_sets(test_images: torch.Tensor, test_labels: torch.Tensor, count: int,
                 noise_sigmas: list[float], blur_sigma: float) -> dict[str, torch.Tensor]:
    """The real rows: the test set, noisy, blurred and with digits 5–9 dropped."""
    test = test_images[:count]
    sets = {"MNIST test": test}
    for sigma in noise_sigmas:
        sets[f"test + noise σ={sigma:g}"] = with_pixel_noise(test, sigma)
    sets[f"test blurred σ={blur_sigma:g} px"] = blurred(test, blur_sigma)
    sets["test digits 0–4 only"] = only_digits(test_images, test_labels, range(5), count)
    return sets


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist_dir", default=DEFAULT_MNIST_DIR)
    parser.add_argument("--samples", action="append", default=[], metavar="NAME=a.npz[,b.npz]")
    parser.add_argument("--num_images", type=int, default=10_000)
    parser.add_argument("--noise_sigmas", type=float, nargs="*", default=[0.1, 0.3])
    parser.add_argument("--blur_sigma", type=float, default=1.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    samples = parse_samples(args.samples)

    started = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="mnist_")
    train_images, _ = load_mnist_idx(args.mnist_dir, train=True, download_root=scratch)
    test_images, test_labels = load_mnist_idx(args.mnist_dir, train=False, download_root=scratch)
    classifier, facts = load_digit_classifier(device=args.device)
    rows: dict[str, list[SampleReport]] = {}
    sets = spoiled_sets(test_images, test_labels, args.num_images, args.noise_sigmas,
                        args.blur_sigma)
    for name, images in sets.items():
        rows[name] = [evaluate_samples(images, train_images, classifier, facts)]
    for name, paths in samples.items():
        rows[name] = [evaluate_samples(load_npz_images(path), train_images, classifier, facts)
                      for path in paths]
    table = markdown_table(rows, facts["floors"], facts["noise"])
    seconds = time.perf_counter() - started
    print(f"{table}\n\n(digit evaluator: an MNIST classifier's features, test accuracy "
          f"{facts['test_accuracy']:.4f}; digit-FID is not the Inception FID; {seconds:.0f} s "
          f"on {args.device})")
    result = {
        "rows": [{"name": name, "count": reports[0].count, "sets": len(reports),
                  "measures": {key: {"mean": mean, "std": std}
                               for key, (mean, std) in summarise(reports).items()}}
                 for name, reports in rows.items()],
        "floors": facts["floors"], "noise": facts["noise"],
        "classifier": {"test_accuracy": facts["test_accuracy"], "trained_by": facts["trained_by"]},
        "device": args.device, "seconds": seconds,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
