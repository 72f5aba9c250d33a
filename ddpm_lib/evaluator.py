"""An offline judge of generated digits: a small MNIST classifier trained by this project.

pytorch-fid's Inception weights cannot always be downloaded. This evaluator needs no download:
its weights (``ddpm_lib/weights/digit_classifier.pt``) are made by
``tools/train_digit_classifier.py`` from the MNIST training set, with a fixed seed. It gives

- the **digit-FID**: the Fréchet distance between Gaussians fitted to the classifier's 128-d
  penultimate features of two image sets (the same formula as FID, other features: it is *not*
  an FID, and its numbers are not comparable with the graded one);
- the **class balance** of a set of samples (the share predicted as each digit) and the mean
  confidence of those predictions.

``python -m ddpm_lib.evaluator DIR`` prints it for a folder; ``python -m ddpm_lib.fid GENERATED
REFERENCE --digits`` prints the same report next to the Inception FID.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .fid import frechet_distance, list_images

WEIGHTS_PATH = Path(__file__).parent / "weights" / "digit_classifier.pt"
FEATURE_DIM = 128
IMAGE_SIZE = 28


class DigitClassifier(nn.Module):
    """Three conv–ReLU–max-pool stages (28 → 14 → 7 → 3), a 128-d feature layer, 10 logits.

    Input: (B, 1 or 3, 28, 28) images in [-1, 1]; RGB is averaged to gray.
    """

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 3 * 3, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: (B, 128)."""
        if images.shape[1] == 3:
            images = images.mean(dim=1, keepdim=True)
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def load_digit_classifier(
    path: str | Path = WEIGHTS_PATH, device: torch.device | str = "cpu"
) -> tuple[DigitClassifier, dict]:
    """The trained classifier (eval mode) and the facts stored with it (seed, test accuracy…)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: train it with python tools/train_digit_classifier.py"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = DigitClassifier()
    model.load_state_dict(state["model"])
    return model.to(device).eval(), {k: v for k, v in state.items() if k != "model"}


@dataclass
class DigitStatistics:
    """What the evaluator sees in a set of images."""

    mu: np.ndarray
    sigma: np.ndarray
    class_share: np.ndarray
    """Share of the images predicted as each digit 0–9 (sums to 1)."""
    mean_confidence: float
    """Mean over images of the largest softmax probability."""
    count: int


@torch.no_grad()
def digit_statistics(
    model: DigitClassifier, images: torch.Tensor, batch_size: int = 1000
) -> DigitStatistics:
    """Features' mean and covariance, class shares and confidence of ``images``.

    ``images``: (N, C, 28, 28), uint8 pixels or floats in [-1, 1]. N ≥ 2.
    """
    if len(images) < 2:
        raise ValueError(f"digit statistics need at least 2 images, got {len(images)}")
    device = next(model.parameters()).device
    features, probabilities = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        if batch.dtype == torch.uint8:
            batch = batch.float() / 127.5 - 1
        batch_features = model.features(batch)
        features.append(batch_features.double().cpu())
        probabilities.append(F.softmax(model.head(batch_features), dim=1).double().cpu())
    features_array = torch.cat(features).numpy()
    probs = torch.cat(probabilities)
    predictions = probs.argmax(dim=1)
    return DigitStatistics(
        mu=features_array.mean(axis=0),
        sigma=np.cov(features_array, rowvar=False),
        class_share=np.bincount(predictions.numpy(), minlength=10) / len(predictions),
        mean_confidence=probs.max(dim=1).values.mean().item(),
        count=len(images),
    )


def digit_fid(first: DigitStatistics, second: DigitStatistics) -> float:
    """The digit-FID: pytorch-fid's Fréchet distance, on the classifier's features."""
    return frechet_distance(first.mu, first.sigma, second.mu, second.sigma)


@dataclass
class SampleReport:
    """The evaluator's verdict on a folder of samples, next to the real-data floor."""

    count: int
    digit_fid: float
    digit_fid_floor: float
    class_share: np.ndarray
    mnist_class_share: np.ndarray
    mean_confidence: float

    @property
    def largest_share_gap(self) -> float:
        """max over digits of |share in the samples − share in MNIST's training set|."""
        return float(np.abs(self.class_share - self.mnist_class_share).max())

    def summary(self) -> str:
        """Digit-FID next to its floor, each digit's share next to MNIST's, the confidence."""

        def shares(values: np.ndarray) -> str:
            return " ".join(f"{d}: {100 * s:4.1f}%" for d, s in enumerate(values))

        return (
            f"digit-FID {self.digit_fid:.3f} against MNIST's training set (real-data floor, test "
            f"set vs training set: {self.digit_fid_floor:.3f}; ratio "
            f"{self.digit_fid / self.digit_fid_floor:.2f}) over {self.count:,} images\n"
            f"predicted digits: {shares(self.class_share)}\n"
            f"MNIST's training: {shares(self.mnist_class_share)}\n"
            f"largest gap to MNIST's shares: {100 * self.largest_share_gap:.1f} points; "
            f"mean confidence {self.mean_confidence:.3f}\n"
            f"(a small MNIST classifier's features: an offline complement to FID, not an FID)"
        )


def evaluate_samples(
    images: torch.Tensor, model: DigitClassifier | None = None, facts: dict | None = None
) -> SampleReport:
    """Compare samples (N, C, 28, 28) with MNIST's training set through the classifier."""
    if model is None or facts is None:
        model, facts = load_digit_classifier()
    stats = digit_statistics(model, images)
    return SampleReport(
        count=stats.count,
        digit_fid=frechet_distance(stats.mu, stats.sigma, facts["train_mu"].numpy(),
                                   facts["train_sigma"].numpy()),
        digit_fid_floor=facts["digit_fid_floor"],
        class_share=stats.class_share,
        mnist_class_share=facts["train_class_share"].double().numpy(),
        mean_confidence=stats.mean_confidence,
    )


def load_folder(folder: str | Path) -> torch.Tensor:
    """The images under ``folder`` that the FID reads too (PNG/JPG, recursively, sorted) as a
    uint8 tensor (N, 3, 28, 28). Any colour mode is made RGB; any size but 28×28 is refused."""
    folder = Path(folder)
    files = list_images(folder)
    if len(files) < 2:
        raise ValueError(
            f"the digit evaluator needs at least 2 images, got {len(files)} in {folder}"
        )
    arrays, wrong_size = [], []
    for path in files:
        try:
            with Image.open(path) as image:
                if image.size == (IMAGE_SIZE, IMAGE_SIZE):
                    arrays.append(np.array(image.convert("RGB")))
                else:
                    name = path.relative_to(folder).as_posix()
                    wrong_size.append(f"{name} ({image.width}×{image.height})")
        except OSError as error:
            raise ValueError(f"cannot read image {path}: {error}") from error
    if wrong_size:
        raise ValueError(
            f"{len(wrong_size)} of {len(files)} images in {folder} are not {IMAGE_SIZE}×"
            f"{IMAGE_SIZE}, the size the digit evaluator reads, e.g. {wrong_size[0]}"
        )
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def folder_report(folder: str | Path) -> str:
    """The evaluator's report on a folder of samples, headed so that it is never read as FID."""
    report = evaluate_samples(load_folder(folder))
    return (
        f"Offline digit evaluator on {folder} (a small MNIST classifier; its digit-FID is not "
        f"the Inception FID):\n{report.summary()}"
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m ddpm_lib.evaluator GENERATED_DIR``: the offline digit evaluation of a folder."""
    parser = argparse.ArgumentParser(prog="python -m ddpm_lib.evaluator", description=main.__doc__)
    parser.add_argument("generated_dir", help="folder of 28×28 PNGs or JPGs (searched recursively)")
    args = parser.parse_args(argv)
    try:
        print(folder_report(args.generated_dir))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
