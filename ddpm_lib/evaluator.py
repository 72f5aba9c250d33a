"""The offline digit evaluator: an MNIST classifier's 256-d features judge generated digits.

No download: ``weights/digit_classifier.pt`` (``tools/train_digit_classifier.py``) holds the
classifier, the training set's feature statistics and each measure's real-data floor (MNIST's
test set scored as samples) and noise (std over five 10,000-image training blocks)::

    python -m ddpm_lib.evaluator DIR [DIR ...] [--train_dir data/mnist_rgb]   # several: mean ± std
"""

import argparse
import functools
import sys
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_fid import fid_score
from torch import nn

from .data import MNIST_TRAIN_COUNTS, MnistRGBFolder, to_model_range
from .runtime import pick_device

WEIGHTS_PATH = Path(__file__).parent / "weights" / "digit_classifier.pt"
FEATURE_DIM, REFERENCE_SIZE, NEIGHBOURS = 256, 10_000, 3  # REFERENCE_SIZE: for KID and P/R
FLOOR_SET_SIZE = 10_000  # images in each set that the floors and noise were measured on
MEMORISATION_PERCENTILE = 1.0  # memorised: nearer a training image than 99 % of test images
DEFAULT_TRAIN_DIR = "data/mnist_rgb"


class DigitClassifier(nn.Module):
    """3×3 convolutions with BatchNorm and ReLU, pooled 28 → 14 → 7 → 3, a linear layer with
    BatchNorm to the 256-d features, ReLU, 10 logits. Input (B, 1 or 3, 28, 28) in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 96, 3, padding=1, bias=False), nn.BatchNorm2d(96), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(96 * 3 * 3, FEATURE_DIM, bias=False),
            nn.BatchNorm1d(FEATURE_DIM))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIM, 10))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate layer before its ReLU: (B, 256); RGB is averaged to gray first."""
        return self.body(images.mean(dim=1, keepdim=True) if images.shape[1] == 3 else images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def load_digit_classifier(device: torch.device | str = "cpu") -> tuple[DigitClassifier, dict]:
    """The trained classifier (eval mode) and the facts stored with it (seed, floors, noise…)."""
    if not WEIGHTS_PATH.is_file():
        raise FileNotFoundError(f"{WEIGHTS_PATH} missing: python tools/train_digit_classifier.py")
    state = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    model = DigitClassifier()
    model.load_state_dict(state.pop("model"))
    return model.to(device).eval(), state


def list_images(folder: str | Path) -> list[Path]:
    """All PNG/JPG files under ``folder`` and its subfolders, sorted."""
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(path for path in Path(folder).rglob("*")
                  if path.suffix.lower() in (".png", ".jpg", ".jpeg") and path.is_file())


def load_folder(folder: str | Path) -> torch.Tensor:
    """The images under ``folder`` that the FID reads too, made RGB: uint8 (N, 3, 28, 28)."""
    files, arrays = list_images(folder), []
    if len(files) < 2:
        raise ValueError(f"the evaluator needs at least 2 images, got {len(files)} in {folder}")
    for path in files:
        try:
            with Image.open(path) as image:
                arrays.append(np.array(image.convert("RGB")))
        except OSError as error:
            raise ValueError(f"cannot read image {path}: {error}") from error
        if arrays[-1].shape != (28, 28, 3):
            raise ValueError(f"{path} is {arrays[-1].shape[1]}×{arrays[-1].shape[0]}, not 28×28")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def load_training_images(train_dir: str | Path = DEFAULT_TRAIN_DIR) -> torch.Tensor:
    """MNIST's training set, read by ``data.MnistRGBFolder``: uint8 (60000, 3, 28, 28)."""
    if not Path(train_dir).is_dir():
        raise FileNotFoundError(f"training images not found in {train_dir}: build them with "
                                "python -m ddpm_lib.data (see data/README.md)")
    return MnistRGBFolder(train_dir).load_all(progress=False)


def unit_gray_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, 28, 28) → (N, 784) gray values in [0, 1] (channels averaged)."""
    return ((to_model_range(images).mean(dim=1) + 1) / 2).flatten(1)


def reference_subset(train_images: torch.Tensor, size: int = REFERENCE_SIZE) -> torch.Tensor:
    """Indices of the ``size`` images of smallest hash h = (Σ_p w_p·x_p) mod (2³¹ − 1) of the gray
    pixels x (w seeded with 0), in the order of h: neither depends on the order of reading."""
    pixels = (unit_gray_pixels(train_images) * 255).round().long().cpu()
    generator = torch.Generator().manual_seed(0)
    weights = torch.randint(0, 2**31, (pixels.shape[1],), generator=generator)
    return torch.argsort((pixels * weights).sum(dim=1) % (2**31 - 1), stable=True)[:size]


@torch.no_grad()
def classify(model: DigitClassifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, 28, 28) → (features (N, 256), softmax probabilities (N, 10))."""
    if images.dtype != torch.uint8:
        raise ValueError(f"the digit evaluator reads uint8 pixels, got {images.dtype}")
    device = next(model.parameters()).device
    features = torch.cat([model.features(to_model_range(batch.to(device)))
                          for batch in images.split(1000)])
    return features, F.softmax(model.head(features), dim=1)


def label_fidelity(images: torch.Tensor, labels: torch.Tensor, classifier: DigitClassifier
                   ) -> float:
    """The share of uint8 ``images`` (N, C, 28, 28) that the classifier assigns to the digit
    asked for, ``labels`` (N,): 1/N Σ_i 1[argmax_c p(c | x_i) = c_i]."""
    _, probabilities = classify(classifier, images)
    return (probabilities.argmax(dim=1).cpu() == labels.cpu()).double().mean().item()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """d² = ||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2}) by pytorch-fid's own function."""
    if np.shape(sigma1) != np.shape(sigma2):
        raise ValueError(f"statistics of {len(mu1)} and {len(mu2)} dimensions: the same --dims?")
    # pytorch-fid 0.3 calls sqrtm(A, disp=False), but SciPy 1.18 dropped ``disp``: lend it a
    # ``linalg`` whose sqrtm takes ``disp`` and calls any SciPy's sqrtm(A).
    linalg = SimpleNamespace(sqrtm=lambda A, disp=True: scipy.linalg.sqrtm(A) if disp
                             else (scipy.linalg.sqrtm(A), None))
    with mock.patch.object(fid_score, "linalg", linalg):
        return float(fid_score.calculate_frechet_distance(mu1, sigma1, mu2, sigma2))


def gaussian_of(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """μ (d,) and Σ (d, d) of features (N, d), in float64."""
    array = features.double().cpu().numpy()
    return array.mean(axis=0), np.cov(array, rowvar=False)


def kernel_inception_distance(fake: torch.Tensor, real: torch.Tensor, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> float:
    """KID of features (N, d), (M, d): the mean over subsets of m = min(subset_size, N, M) a side
    of the unbiased MMD² Σ_{i≠j} [k(x_i, x_j) + k(y_i, y_j)] / (m(m−1)) − 2 Σ_{i,j} k(x_i, y_j) / m²
    with k(x, y) = (xᵀy/d + 1)³."""
    m, d = min(subset_size, len(fake), len(real)), fake.shape[1]
    generator, estimates = torch.Generator().manual_seed(seed), []
    for _ in range(subsets):
        x = fake[torch.randperm(len(fake), generator=generator)[:m].to(fake.device)]
        y = real[torch.randperm(len(real), generator=generator)[:m].to(real.device)]
        k_xx, k_yy, k_xy = ((a @ b.T / d + 1).double() ** 3 for a, b in ((x, x), (y, y), (x, y)))
        within = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (m * (m - 1))
        estimates.append(within - 2 * k_xy.mean())
    return torch.stack(estimates).mean().item()


def squared_distances(queries: torch.Tensor, base: torch.Tensor):
    """Yield ||a − b||² = ||a||² + ||b||² − 2aᵀb of queries (N, D) to base (M, D) in row blocks."""
    base_norms = (base * base).sum(dim=1)
    for chunk in queries.split(max(1, (1 << 25) // len(base))):  # 2²⁵ entries, 128 MB a block
        query_norms = (chunk * chunk).sum(dim=1, keepdim=True)
        yield torch.addmm(base_norms, chunk, base.T, alpha=-2) + query_norms


def nearest_distances(queries: torch.Tensor, base: torch.Tensor, k: int = 1,
                      skip_self: bool = False) -> torch.Tensor:
    """Distance (N,) of each query to its k-th nearest row of ``base``, itself not counted when
    ``skip_self`` (queries that are the base)."""
    kth = [block.topk(k + int(skip_self), dim=1, largest=False).values[:, -1]
           for block in squared_distances(queries, base)]
    return torch.cat(kth).clamp_min(0).sqrt()


def precision_recall(fake: torch.Tensor, real: torch.Tensor, real_radii: torch.Tensor | None = None,
                     k: int = NEIGHBOURS) -> tuple[float, float]:
    """precision = 1/N Σ_f 1[∃ r: ||f − r|| ≤ ρ_k(r)], recall likewise with fake and real swapped;
    ρ_k(x): the distance from x to its k-th neighbour in its own set (Kynkäänniemi et al. 2019)."""
    k = min(k, len(fake) - 1, len(real) - 1)
    if real_radii is None:
        real_radii = nearest_distances(real, real, k, skip_self=True)
    fake_radii = nearest_distances(fake, fake, k, skip_self=True)
    return tuple(torch.cat([(block <= radii.square()).any(dim=1)
                            for block in squared_distances(points, centres)]).double().mean().item()
                 for points, centres, radii in ((fake, real, real_radii), (real, fake, fake_radii)))


# Real side: gray pixels (M, 784), ``reference_subset`` features (R, 256), radii (R,), stored stats.
Reference = namedtuple("Reference", "pixels features radii mu sigma class_share threshold")


@functools.lru_cache(maxsize=1)  # the last images and classifier, by identity (as they hash)
def real_neighbourhood(images: torch.Tensor, classifier: DigitClassifier) -> tuple:
    """(gray pixels, subset features, their k-th neighbour radii) of real images."""
    features, _ = classify(classifier, images[reference_subset(images)])
    return (unit_gray_pixels(images).to(features.device), features,
            nearest_distances(features, features, NEIGHBOURS, skip_self=True))


def build_reference(images: torch.Tensor, classifier: DigitClassifier, mu: np.ndarray,
                    sigma: np.ndarray, class_share: np.ndarray, threshold: float) -> Reference:
    """A ``Reference`` from real images (M, C, 28, 28) and the statistics stored for them."""
    return Reference(*real_neighbourhood(images, classifier), mu, sigma, class_share, threshold)


def measure(images: torch.Tensor, classifier: DigitClassifier, reference: Reference,
            seed: int = 0) -> dict:
    """Every measure of uint8 ``images`` (N ≥ 2, C, 28, 28) against ``reference``; digit shares."""
    if len(images) < 2:
        raise ValueError(f"the digit evaluator needs at least 2 images, got {len(images)}")
    features, probabilities = classify(classifier, images)
    share = np.bincount(probabilities.argmax(dim=1).cpu().numpy(), minlength=10) / len(images)
    gaps = np.abs(share - reference.class_share)  # total variation: ½ Σ_c |p_c − q_c|
    precision, recall = precision_recall(features, reference.features, reference.radii)
    pixels = unit_gray_pixels(images).to(reference.pixels.device)
    memorised = nearest_distances(pixels, reference.pixels) < reference.threshold
    return {"digit_fid": frechet_distance(*gaussian_of(features), reference.mu, reference.sigma),
            "kid": kernel_inception_distance(features, reference.features, seed=seed),
            "precision": precision, "recall": recall, "class_tv": float(gaps.sum() / 2),
            "largest_share_gap": float(gaps.max()),
            "mean_confidence": probabilities.max(dim=1).values.mean().item(),
            "memorised_share": memorised.double().mean().item(), "class_share": share}


# (key, label, scale, decimals, ratio to the floor?); KID's floor is ~0: read it against its noise.
MEASURES = (
    ("digit_fid", "digit-FID (not an FID)", 1, 3, True),
    ("kid", "KID ×10³", 1e3, 3, False),
    ("precision", "precision (k=3)", 1, 3, False),
    ("recall", "recall (k=3)", 1, 3, False),
    ("class_tv", "digit shares: TV, points", 100, 2, False),
    ("largest_share_gap", "largest digit gap, points", 100, 2, False),
    ("mean_confidence", "mean confidence", 1, 3, False),
    ("memorised_share", "memorised, % of images", 100, 2, False),
)


class SampleReport(namedtuple("SampleReport", ["count", *(key for key, *_ in MEASURES),
                                               "class_share", "mnist_class_share", "floors",
                                               "noise"])):
    """The evaluator's verdict on a set of samples, with the real-data floors and noise."""

    @property
    def digit_fid_floor(self) -> float:
        return self.floors["digit_fid"]

    def summary(self) -> str:
        """The measure table, then each digit's share next to MNIST's."""
        shares = [" ".join(f"{d}: {100 * s:4.1f}%" for d, s in enumerate(values))
                  for values in (self.class_share, self.mnist_class_share)]
        return f"{measure_table([self])}\npredicted digits: {shares[0]}\n" \
               f"MNIST's training: {shares[1]}"


def evaluate_samples(images: torch.Tensor, train_images: torch.Tensor,
                     classifier: DigitClassifier | None = None, facts: dict | None = None,
                     seed: int = 0) -> SampleReport:
    """Score uint8 samples (N, C, 28, 28) against MNIST's training images; ``seed``: KID's draws."""
    if classifier is None or facts is None:
        classifier, facts = load_digit_classifier()
    mnist_share = facts["train_class_share"].double().numpy()
    reference = build_reference(train_images, classifier, facts["train_mu"].numpy(),
                                facts["train_sigma"].numpy(), mnist_share,
                                float(facts["memorisation_threshold"]))
    return SampleReport(len(images), **measure(images, classifier, reference, seed),
                        mnist_class_share=mnist_share, floors=dict(facts["floors"]),
                        noise=dict(facts["noise"]))


def summarise(reports: list[SampleReport]) -> dict[str, tuple[float, float]]:
    """{measure: (mean, sample standard deviation)} over reports (e.g. seeds); std 0 for one."""
    table = np.array([[getattr(report, key) for key, *_ in MEASURES] for report in reports])
    spread = table.std(axis=0, ddof=1) if len(reports) > 1 else np.zeros(table.shape[1])
    return {key: (float(mean), float(std))
            for (key, *_), mean, std in zip(MEASURES, table.mean(0), spread, strict=True)}


def measure_table(reports: list[SampleReport]) -> str:
    """A row a measure: the samples (mean ± std of several), floor, noise, digit-FID ÷ floor."""
    stats, first, several = summarise(reports), reports[0], len(reports) > 1
    what = f"{first.count:,} images" + (f", mean ± std of {len(reports)} sets" if several else "")
    lines = [f"{'measure (MNIST classifier features)':36} {'samples':>17} {'floor':>8} "
             f"{'noise':>7} {'×floor':>7}   ({what})"]
    for key, label, scale, decimals, ratio in MEASURES:
        (mean, std), floor = stats[key], first.floors[key]
        value = f"{scale * mean:.{decimals}f}" + (f" ± {scale * std:.{decimals}f}" if several
                                                  else "")
        lines.append(f"{label:36} {value:>17} {scale * floor:8.{decimals}f} "
                     f"{scale * first.noise[key]:7.{decimals}f} "
                     f"{f'{mean / floor:.2f}' if ratio else '':>7}")
    return "\n".join(lines)


def folder_report(folders: list[str | Path], train_dir: str | Path = DEFAULT_TRAIN_DIR,
                  device: str = "cpu") -> str:
    """The evaluator's table for one folder of samples, or mean ± std over several."""
    sample_sets = [load_folder(folder) for folder in folders]
    classifier, facts = load_digit_classifier(device=device)
    train_images = load_training_images(train_dir)
    reports = [evaluate_samples(images, train_images, classifier, facts) for images in sample_sets]
    return "\n".join([
        f"Offline digit evaluator on {', '.join(map(str, folders))} (an MNIST classifier's "
        f"{FEATURE_DIM}-d features; its digit-FID is not the Inception FID)",
        "floor: MNIST's test set scored against its training set; noise: std over 5 disjoint "
        "10,000-image training blocks, each against the rest",
        reports[0].summary() if len(reports) == 1 else measure_table(reports),
        *incomparable(min(map(len, sample_sets)), len(train_images), train_dir)])


def incomparable(num_samples: int, num_train: int, train_dir: str | Path) -> list[str]:
    """Notes for a table whose floors and noise (10,000 samples against MNIST's 60,000 training
    images) do not fit the sets measured."""
    notes = []
    if num_samples < FLOOR_SET_SIZE:
        notes.append(f"note: {num_samples:,} images, not {FLOOR_SET_SIZE:,}: the floors and noise "
                     f"are for {FLOOR_SET_SIZE:,}, and fewer images raise the digit-FID (its bias "
                     f"grows as 1/N); compare only sets of one size")
    if num_train != sum(MNIST_TRAIN_COUNTS.values()):
        notes.append(f"note: {train_dir} holds {num_train:,} images, not MNIST's 60,000 training "
                     f"digits: precision, recall, KID and memorisation are measured against "
                     f"them and are not comparable with the floors")
    return notes


def main(argv: list[str] | None = None) -> None:
    """``python -m ddpm_lib.evaluator DIR [DIR ...]``: the offline digit evaluation of folders."""
    parser = argparse.ArgumentParser(prog="python -m ddpm_lib.evaluator", description=main.__doc__)
    parser.add_argument("generated_dirs", nargs="+", metavar="DIR",
                        help="folders of 28×28 PNGs or JPGs; several: mean ± std across them")
    parser.add_argument("--train_dir", default=DEFAULT_TRAIN_DIR, help="MNIST's training PNGs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        print(folder_report(args.generated_dirs, args.train_dir, pick_device(args.device)))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
