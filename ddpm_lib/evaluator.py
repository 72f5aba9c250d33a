"""An offline judge of generated digits: an MNIST classifier (99.7 %) trained by this project.

pytorch-fid's Inception weights cannot always be downloaded, and on 28×28 digits its features are
a stranger's. This evaluator needs no download: its weights (``weights/digit_classifier.pt``) are
made by ``tools/train_digit_classifier.py`` from MNIST's training set, with a fixed seed, and hold
the training set's feature statistics and every measure's **real-data floor** (MNIST's test set
scored as if it were samples) and **real-data noise** (the spread of that score over disjoint
10,000-image blocks of the training set). Every measure uses the classifier's 256-d penultimate
features, against MNIST's training set:

- **digit-FID**: the Fréchet distance of Gaussians fitted to the features (FID's formula, other
  features: it is *not* an FID, and not comparable with the graded number);
- **KID**: unbiased MMD² with the kernel k(x, y) = (xᵀy/d + 1)³, averaged over subsets;
- **precision / recall** (Kynkäänniemi et al. 2019): the share of samples inside the real data's
  k-NN balls, and of real images inside the samples' balls (k = 3, 10,000 real images);
- **class balance**: total-variation distance of the predicted digits' shares to MNIST's, the
  largest single-digit gap, and the mean confidence (largest softmax probability);
- **memorisation**: the share of samples closer in pixels to a training image than all but 1 % of
  MNIST's test images are.

``python -m ddpm_lib.evaluator DIR [DIR ...]`` prints the table (several folders, e.g. sampling
seeds: mean ± std); ``python -m ddpm_lib.fid GENERATED REFERENCE --digits`` prints it beside the
FID. ``ddpm_lib.fid`` imports this module (its file listing and Fréchet distance live here).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_fid.fid_score import calculate_frechet_distance
from torch import nn

from .data import MnistRGBFolder

WEIGHTS_PATH = Path(__file__).parent / "weights" / "digit_classifier.pt"
FEATURE_DIM = 256
IMAGE_SIZE = 28
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
REFERENCE_SIZE = 10_000  # real images for KID and precision/recall
REFERENCE_SEED = 0
HASH_PRIME = 2**31 - 1
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
NEIGHBOURS = 3  # k of precision/recall
MEMORISATION_PERCENTILE = 1.0
DISTANCE_CHUNK_ELEMENTS = 1 << 25  # entries of one block of a distance matrix (128 MB float32)
DEFAULT_TRAIN_DIR = "data/mnist_rgb"
BUILD_HINT = "build it with python -m ddpm_lib.data (see data/README.md)"


def conv_block(channels_in: int, channels_out: int) -> list[nn.Module]:
    """3×3 convolution, BatchNorm, ReLU; the size is kept."""
    return [nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out), nn.ReLU()]


class DigitClassifier(nn.Module):
    """conv32 → pool → conv64 → conv64 → pool → conv96 → pool (28 → 14 → 7 → 3), each conv with
    BatchNorm and ReLU; a linear layer with BatchNorm gives the 256-d features; ReLU, 10 logits.

    Input: (B, 1 or 3, 28, 28) images in [-1, 1]; RGB is averaged to gray.
    """

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            *conv_block(1, 32), nn.MaxPool2d(2),
            *conv_block(32, 64), *conv_block(64, 64), nn.MaxPool2d(2),
            *conv_block(64, 96), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(96 * 3 * 3, FEATURE_DIM, bias=False),
            nn.BatchNorm1d(FEATURE_DIM),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIM, 10))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate layer, before its ReLU (dense, well-conditioned): (B, 256)."""
        if images.shape[1] == 3:
            images = images.mean(dim=1, keepdim=True)
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def load_digit_classifier(
    path: str | Path = WEIGHTS_PATH, device: torch.device | str = "cpu"
) -> tuple[DigitClassifier, dict]:
    """The trained classifier (eval mode) and the facts stored with it (seed, floors, noise…)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: train it with python tools/train_digit_classifier.py"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = DigitClassifier()
    model.load_state_dict(state["model"])
    return model.to(device).eval(), {k: v for k, v in state.items() if k != "model"}


# --- image sets ----------------------------------------------------------------------------------


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → floats in [-1, 1]; floats are passed through. (B, C, 28, 28)."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()


def unit_gray_pixels(images: torch.Tensor) -> torch.Tensor:
    """(N, C, 28, 28) uint8 or [-1, 1] → (N, 784) gray values in [0, 1] (channels averaged)."""
    return ((to_model_input(images).mean(dim=1) + 1) / 2).flatten(1)


def list_images(folder: str | Path) -> list[Path]:
    """All PNG/JPG files under ``folder``, searched recursively (digit subfolders too), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(path for path in folder.rglob("*")
                  if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


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


def load_training_images(train_dir: str | Path = DEFAULT_TRAIN_DIR) -> torch.Tensor:
    """MNIST's training set from the built folder: uint8 (60000, 3, 28, 28)."""
    if not Path(train_dir).is_dir():
        raise FileNotFoundError(f"training images not found in {train_dir}: {BUILD_HINT}")
    return MnistRGBFolder(train_dir).load_all(progress=False)


def reference_subset(train_images: torch.Tensor, size: int = REFERENCE_SIZE) -> torch.Tensor:
    """Indices of a fixed, seeded choice of ``size`` images (N, C, 28, 28): the smallest hashes
    h = (Σ_p w_p·x_p) mod (2³¹ − 1) of the gray pixels x (w seeded), ordered by h; neither the
    choice nor its order depends on the order the images were read in (idx files, PNG folder)."""
    pixels = (unit_gray_pixels(train_images) * 255).round().long().cpu()
    generator = torch.Generator().manual_seed(REFERENCE_SEED)
    weights = torch.randint(0, 2**31, (pixels.shape[1],), generator=generator)
    return torch.argsort((pixels * weights).sum(dim=1) % HASH_PRIME, stable=True)[:size]


# --- features and the measures ------------------------------------------------------------------


@torch.no_grad()
def classify(
    model: DigitClassifier, images: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, 256), softmax probabilities (N, 10)), float32 on the model's device."""
    device = next(model.parameters()).device
    features = [model.features(to_model_input(images[start: start + batch_size].to(device)))
                for start in range(0, len(images), batch_size)]
    features = torch.cat(features)
    return features, F.softmax(model.head(features), dim=1)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """d² = ||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2}), by pytorch-fid's own function.

    That is what pytorch-fid reports as "FID" (the squared distance, as everyone does).
    """
    if np.shape(mu1) != np.shape(mu2) or np.shape(sigma1) != np.shape(sigma2):
        raise ValueError(
            f"statistics do not match: mu {np.shape(mu1)} vs {np.shape(mu2)}, "
            f"sigma {np.shape(sigma1)} vs {np.shape(sigma2)} (same --dims on both sides?)"
        )
    try:
        return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))
    except TypeError as error:  # pytorch-fid 0.3 with SciPy ≥ 1.18: sqrtm lost its disp argument
        if "disp" not in str(error):
            raise
        return frechet_distance_without_disp(mu1, sigma1, mu2, sigma2)


def frechet_distance_without_disp(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """The same d² for SciPy ≥ 1.18, where pytorch-fid 0.3's call ``sqrtm(..., disp=False)``
    fails: (Σ1 Σ2)^{1/2} by ``scipy.linalg.sqrtm``, retried with ε·I added to both covariances if
    it is not finite, and its real part kept (an imaginary part above 1e-3 on the diagonal is an
    error), as pytorch-fid does. The package pins SciPy < 1.18; this keeps older environments
    (such as a GPU image with a newer SciPy) working."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        largest = np.max(np.abs(np.diagonal(covmean).imag))
        if largest > 1e-3:
            raise ValueError(f"(Σ1 Σ2)^(1/2) has an imaginary component {largest}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def gaussian_of(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """μ (d,) and Σ (d, d) of features (N, d), float64, as pytorch-fid fits them."""
    array = features.double().cpu().numpy()
    return array.mean(axis=0), np.cov(array, rowvar=False)


def kernel_inception_distance(
    fake: torch.Tensor, real: torch.Tensor, subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE, seed: int = 0,
) -> float:
    """KID: the mean over ``subsets`` random subsets (m = min(subset_size, N, M) images each side)
    of the unbiased MMD² with k(x, y) = (xᵀy/d + 1)³, features fake (N, d) and real (M, d):

        MMD²_u = Σ_{i≠j} [k(x_i, x_j) + k(y_i, y_j)] / (m(m−1)) − 2 Σ_{i,j} k(x_i, y_j) / m²
    """
    m, d = min(subset_size, len(fake), len(real)), fake.shape[1]
    generator = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(subsets):
        x = fake[torch.randperm(len(fake), generator=generator)[:m].to(fake.device)]
        y = real[torch.randperm(len(real), generator=generator)[:m].to(real.device)]
        k_xx, k_yy, k_xy = ((a @ b.T / d + 1).double() ** 3 for a, b in ((x, x), (y, y), (x, y)))
        within = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (m * (m - 1))
        estimates.append(within - 2 * k_xy.mean())
    return torch.stack(estimates).mean().item()


def squared_distances(queries: torch.Tensor, base: torch.Tensor):
    """Yield ||a − b||² = ||a||² + ||b||² − 2aᵀb for queries (N, D) against base (M, D), in blocks
    (rows, M) of at most ``DISTANCE_CHUNK_ELEMENTS`` entries: one matmul each, on CPU or CUDA."""
    base_norms = (base * base).sum(dim=1)
    for chunk in queries.split(max(1, DISTANCE_CHUNK_ELEMENTS // len(base))):
        query_norms = (chunk * chunk).sum(dim=1, keepdim=True)
        yield torch.addmm(base_norms, chunk, base.T, alpha=-2) + query_norms


def nearest_distances(
    queries: torch.Tensor, base: torch.Tensor, k: int = 1, skip_self: bool = False
) -> torch.Tensor:
    """Distance (N,) of each query to its k-th nearest row of ``base``; ``skip_self`` when queries
    are the base (its own zero distance is not a neighbour)."""
    rank = k + int(skip_self)
    kth = [block.min(dim=1).values if rank == 1
           else block.topk(rank, dim=1, largest=False).values[:, -1]
           for block in squared_distances(queries, base)]
    return torch.cat(kth).clamp_min(0).sqrt()


def inside_any_ball(points: torch.Tensor, centres: torch.Tensor,
                    radii: torch.Tensor) -> torch.Tensor:
    """Whether each point (N, d) lies in some ball ||p − c_j|| ≤ r_j: bool (N,)."""
    radii_squared = radii.square()
    return torch.cat([(block <= radii_squared).any(dim=1)
                      for block in squared_distances(points, centres)])


def precision_recall(fake: torch.Tensor, real: torch.Tensor, real_radii: torch.Tensor | None = None,
                     k: int = NEIGHBOURS) -> tuple[float, float]:
    """Kynkäänniemi et al.'s improved precision and recall, with ρ_k(x) the distance from x to its
    k-th nearest neighbour in its own set (k ≤ N − 1):

        precision = 1/N Σ_f 1[∃ r: ||f − r|| ≤ ρ_k(r)],  recall = 1/M Σ_r 1[∃ f: ||r − f|| ≤ ρ_k(f)]
    """
    k = min(k, len(fake) - 1, len(real) - 1)
    if real_radii is None:
        real_radii = nearest_distances(real, real, k, skip_self=True)
    fake_radii = nearest_distances(fake, fake, k, skip_self=True)
    precision = inside_any_ball(fake, real, real_radii).double().mean().item()
    return precision, inside_any_ball(real, fake, fake_radii).double().mean().item()


def class_balance(class_share: np.ndarray, reference_share: np.ndarray) -> tuple[float, float]:
    """(total variation ½ Σ_c |p_c − q_c|, largest gap max_c |p_c − q_c|) of two digit shares."""
    gaps = np.abs(np.asarray(class_share) - np.asarray(reference_share))
    return float(gaps.sum() / 2), float(gaps.max())


# --- a set of samples against MNIST's training set -----------------------------------------------


@dataclass
class Reference:
    """What the measures need of a real image set (MNIST's training set), made once per process."""

    pixels: torch.Tensor
    """(M, 784) gray values in [0, 1] of all its images, for the memorisation check."""
    features: torch.Tensor
    """(R, 256) features of its fixed ``reference_subset``, for KID and precision/recall."""
    radii: torch.Tensor
    """(R,) distance of each of those to its k-th nearest neighbour among them."""
    mu: np.ndarray
    sigma: np.ndarray
    class_share: np.ndarray
    memorisation_threshold: float


def build_reference(
    images: torch.Tensor, classifier: DigitClassifier, mu: np.ndarray, sigma: np.ndarray,
    class_share: np.ndarray, memorisation_threshold: float,
) -> Reference:
    """A ``Reference`` from real images (M, C, 28, 28) and the statistics stored for them."""
    device = next(classifier.parameters()).device
    features, _ = classify(classifier, images[reference_subset(images)])
    return Reference(unit_gray_pixels(images).to(device), features,
                     nearest_distances(features, features, NEIGHBOURS, skip_self=True),
                     mu, sigma, class_share, memorisation_threshold)


_last_reference: dict = {}  # {ids of (images, classifier, facts): (those, Reference)}


def reference_for(train_images: torch.Tensor, classifier: DigitClassifier,
                  facts: dict) -> Reference:
    """MNIST's training set as a ``Reference``, built once for the same images, classifier and
    facts (the last one is kept, with them, so that their ids stay theirs)."""
    key = (id(train_images), id(classifier), id(facts))
    if key not in _last_reference:
        reference = build_reference(
            train_images, classifier, facts["train_mu"].numpy(), facts["train_sigma"].numpy(),
            facts["train_class_share"].double().numpy(), float(facts["memorisation_threshold"]))
        _last_reference.clear()
        _last_reference[key] = (train_images, classifier, facts, reference)
    return _last_reference[key][-1]


def measure(
    images: torch.Tensor, classifier: DigitClassifier, reference: Reference, seed: int = 0
) -> dict:
    """Every measure of ``images`` (N ≥ 2, C, 28, 28) against ``reference``; the digit shares."""
    if len(images) < 2:
        raise ValueError(f"the digit evaluator needs at least 2 images, got {len(images)}")
    features, probabilities = classify(classifier, images)
    share = np.bincount(probabilities.argmax(dim=1).cpu().numpy(), minlength=10) / len(images)
    class_tv, largest_gap = class_balance(share, reference.class_share)
    precision, recall = precision_recall(features, reference.features, reference.radii)
    pixels = unit_gray_pixels(images).to(reference.pixels.device)
    memorised = nearest_distances(pixels, reference.pixels) < reference.memorisation_threshold
    return {"digit_fid": frechet_distance(*gaussian_of(features), reference.mu, reference.sigma),
            "kid": kernel_inception_distance(features, reference.features, seed=seed),
            "precision": precision, "recall": recall, "class_tv": class_tv,
            "largest_share_gap": largest_gap,
            "mean_confidence": probabilities.max(dim=1).values.mean().item(),
            "memorised_share": memorised.double().mean().item(), "class_share": share}


# (key, label, scale, decimals, with its ratio to the floor). KID's floor is nearly 0 and ten
# times smaller than its noise: a ratio to it would mislead, so KID is read against its noise.
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


@dataclass
class SampleReport:
    """The evaluator's verdict on a set of samples, beside the real-data floor and noise."""

    count: int
    digit_fid: float
    kid: float
    precision: float
    recall: float
    class_tv: float
    largest_share_gap: float
    mean_confidence: float
    memorised_share: float
    class_share: np.ndarray
    mnist_class_share: np.ndarray
    floors: dict = field(default_factory=dict)
    noise: dict = field(default_factory=dict)

    @property
    def digit_fid_floor(self) -> float:
        return self.floors["digit_fid"]

    def measures(self) -> dict[str, float]:
        """{measure key: value} for the keys of ``MEASURES``."""
        return {key: getattr(self, key) for key, *_ in MEASURES}

    def summary(self) -> str:
        """The measure table, each digit's share next to MNIST's."""

        def shares(values: np.ndarray) -> str:
            return " ".join(f"{d}: {100 * s:4.1f}%" for d, s in enumerate(values))

        return (f"{measure_table([self])}\npredicted digits: {shares(self.class_share)}\n"
                f"MNIST's training: {shares(self.mnist_class_share)}")


def evaluate_samples(
    images: torch.Tensor, train_images: torch.Tensor, classifier: DigitClassifier | None = None,
    facts: dict | None = None, seed: int = 0,
) -> SampleReport:
    """Score samples (N, C, 28, 28), uint8 or [-1, 1], against MNIST's training images (60000,
    C, 28, 28) in the classifier's feature space; ``seed`` draws the KID subsets."""
    if classifier is None or facts is None:
        classifier, facts = load_digit_classifier()
    values = measure(images, classifier, reference_for(train_images, classifier, facts), seed)
    return SampleReport(count=len(images), **values,
                        mnist_class_share=facts["train_class_share"].double().numpy(),
                        floors=dict(facts["floors"]), noise=dict(facts["noise"]))


def summarise(reports: list[SampleReport]) -> dict[str, tuple[float, float]]:
    """{measure: (mean, standard deviation)} over several reports (e.g. sampling seeds); the
    standard deviation is the sample one (n − 1), 0 for one report."""
    table = np.array([list(report.measures().values()) for report in reports])
    spread = table.std(axis=0, ddof=1) if len(reports) > 1 else np.zeros(table.shape[1])
    return {key: (float(mean), float(std))
            for (key, *_), mean, std in zip(MEASURES, table.mean(0), spread, strict=True)}


def measure_table(reports: list[SampleReport]) -> str:
    """One row per measure: the samples' value (mean ± std over several reports), the real-data
    floor (MNIST's test set), the real-data noise (std over training blocks), the ratio to the
    floor for digit-FID and KID."""
    stats, first = summarise(reports), reports[0]
    what = f"{first.count:,} images" + (f", mean ± std of {len(reports)} sets" if len(reports) > 1
                                        else "")
    lines = [f"{'measure (MNIST classifier features)':36} {'samples':>17} {'floor':>8} "
             f"{'noise':>7} {'×floor':>7}   ({what})"]
    for key, label, scale, decimals, ratio in MEASURES:
        mean, std = stats[key]
        value = f"{scale * mean:.{decimals}f}" + (f" ± {scale * std:.{decimals}f}"
                                                  if len(reports) > 1 else "")
        times = f"{mean / first.floors[key]:.2f}" if ratio else ""
        lines.append(f"{label:36} {value:>17} {scale * first.floors[key]:8.{decimals}f} "
                     f"{scale * first.noise[key]:7.{decimals}f} {times:>7}")
    return "\n".join(lines)


def folder_report(folders: list[str | Path], train_dir: str | Path = DEFAULT_TRAIN_DIR,
                  device: str = "cpu") -> str:
    """The evaluator's table for one folder of samples or mean ± std over several."""
    sample_sets = [load_folder(folder) for folder in folders]
    classifier, facts = load_digit_classifier(device=device)
    train_images = load_training_images(train_dir)
    reports = [evaluate_samples(images, train_images, classifier, facts) for images in sample_sets]
    listing = ", ".join(str(folder) for folder in folders)
    shares = reports[0].summary().splitlines()[-2:] if len(reports) == 1 else []
    return "\n".join([
        f"Offline digit evaluator on {listing} (an MNIST classifier's {FEATURE_DIM}-d features; "
        "its digit-FID is not the Inception FID)",
        "floor: MNIST's test set scored against its training set; noise: std over 5 disjoint "
        "10,000-image training blocks, each against the rest", measure_table(reports), *shares])


def main(argv: list[str] | None = None) -> None:
    """``python -m ddpm_lib.evaluator DIR [DIR ...]``: the offline digit evaluation of folders."""
    parser = argparse.ArgumentParser(prog="python -m ddpm_lib.evaluator", description=main.__doc__)
    parser.add_argument("generated_dirs", nargs="+", metavar="DIR",
                        help="folders of 28×28 PNGs or JPGs (searched recursively); several: "
                             "mean ± std across them")
    parser.add_argument("--train_dir", default=DEFAULT_TRAIN_DIR,
                        help="MNIST's training set as PNGs (default %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        print(folder_report(args.generated_dirs, args.train_dir, args.device))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
