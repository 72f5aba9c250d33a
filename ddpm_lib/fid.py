"""FID with pytorch-fid's own Inception network and arithmetic, so our numbers are the grader's.

The Fréchet Inception Distance compares two image sets through the 2048-d pool3 features of the
FID InceptionV3, each set summarised by a Gaussian N(μ, Σ) of its features:

    FID² = ||μ_gen − μ_ref||² + Tr(Σ_gen + Σ_ref − 2 (Σ_gen Σ_ref)^{1/2})

The grader runs ``python -m pytorch_fid generated_images data/mnist_rgb`` (or ``… mnist.npz``).
Everything here goes through pytorch-fid's functions; only the file listing (recursive), the
reference-statistics cache and the error messages are ours. A number is only ever reported as
an FID when it was made with pytorch-fid's FID weights. Its offline complement, which needs no
download, is the digit evaluator (``ddpm_lib.evaluator``, ``--digits`` here): an MNIST
classifier's "digit-FID", KID, precision/recall, digit shares and memorisation check, never under
the name FID. The file listing and the Fréchet distance live there, and this module imports them
(the evaluator imports nothing from here).

Command line::

    python -m ddpm_lib.fid generated_images data/mnist_rgb       # prints FID: 12.34
    python -m ddpm_lib.fid generated_images data/mnist_rgb --digits  # and the offline digit report
    python -m ddpm_lib.fid --save_stats data/mnist_rgb mnist.npz  # reference statistics
    python -m ddpm_lib.fid --check generated_images               # is it a valid submission?
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image
from pytorch_fid import inception as fid_inception
from pytorch_fid.fid_score import calculate_activation_statistics

from .evaluator import (
    DEFAULT_TRAIN_DIR,
    folder_report,
    frechet_distance,
    list_images,
)

DEFAULT_CACHE_DIR = Path("data/fid_stats")
GRADED_NUM_IMAGES = 10_000
MIN_UNBIASED_IMAGES = 2048
EXAMPLES_SHOWN = 5


class InceptionWeightsUnavailable(RuntimeError):
    """pytorch-fid could not obtain its FID Inception weights, so no FID was computed."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``; None means cuda when available, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _require_two_images(count: int, where: str | Path) -> None:
    """FID needs a covariance Σ, i.e. at least 2 images."""
    if count < 2:
        raise ValueError(f"FID needs at least 2 images, got {count} in {where}")


def _examples(items: Sequence[str]) -> str:
    """The first few items, comma-separated, with how many more there are."""
    shown = ", ".join(items[:EXAMPLES_SHOWN])
    more = len(items) - EXAMPLES_SHOWN
    return f"{shown}, … ({more} more)" if more > 0 else shown


def weights_file_name() -> str:
    """File name of pytorch-fid's weights, e.g. ``pt_inception-2015-12-05-6726825d.pth``."""
    return os.path.basename(urlparse(fid_inception.FID_WEIGHTS_URL).path)


def weights_cache_path() -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` looks: ``<hub dir>/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights_file_name()


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Create ``path`` (and its folder) through a temporary file and ``os.replace``, so a reader
    never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _install_weights(weights_path: str | Path) -> Path:
    """Check a local copy of the FID weights and copy it into torch hub's checkpoints folder.

    The hash prefix is the one in the URL's file name (torch hub's ``name-<sha256 prefix>.ext``).
    """
    source = Path(weights_path)
    if not source.is_file():
        raise FileNotFoundError(f"Inception weights file not found: {source}")
    match = torch.hub.HASH_REGEX.search(weights_file_name())
    prefix = match.group(1) if match else ""
    digest = _sha256(source)
    if not digest.startswith(prefix):
        raise ValueError(
            f"{source} is not pytorch-fid's {weights_file_name()}: its sha256 starts with "
            f"{digest[: len(prefix)]}, expected {prefix}"
        )
    with source.open("rb") as weights:
        return _write_atomically(weights_cache_path(), lambda out: shutil.copyfileobj(weights, out))


OFFLINE_COMPLEMENT_HINT = (
    "For an offline check of digit quality (an MNIST classifier's digit-FID, KID, precision/"
    "recall, digit shares, memorisation; not an FID), add --digits to python -m ddpm_lib.fid "
    "GENERATED REFERENCE, or run python -m ddpm_lib.evaluator GENERATED."
)


def _weights_unavailable_message(error: BaseException) -> str:
    """What failed, how to fix it, that no FID was computed, and the offline complement."""
    return (
        f"pytorch-fid could not obtain its Inception weights from {fid_inception.FID_WEIGHTS_URL} "
        f"({type(error).__name__}: {error}). To fix: run once where there is internet "
        f"(pytorch-fid caches them as {weights_cache_path()}), or download "
        f"{weights_file_name()} elsewhere and pass --inception_weights PATH "
        f"(weights_path=PATH in Python). No FID was computed. {OFFLINE_COMPLEMENT_HINT}"
    )


def load_fid_inception(
    device: str | torch.device | None = None,
    dims: int = 2048,
    weights_path: str | Path | None = None,
) -> fid_inception.InceptionV3:
    """pytorch-fid's InceptionV3 with the FID weights, returning ``dims``-d features, in eval mode.

    ``weights_path``: a local copy of the weights, checked and placed in torch hub's cache so
    pytorch-fid loads it without any network. Raises InceptionWeightsUnavailable otherwise.
    """
    if dims not in fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM:
        choices = sorted(fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM)
        raise ValueError(f"dims must be one of {choices}, got {dims}")
    if weights_path is not None:
        _install_weights(weights_path)
    block_index = fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[dims]
    try:
        model = fid_inception.InceptionV3([block_index])
    except (OSError, RuntimeError) as error:  # URLError, HTTPError, socket errors are OSErrors
        raise InceptionWeightsUnavailable(_weights_unavailable_message(error)) from error
    return model.to(resolve_device(device)).eval()


def _model_device(model: torch.nn.Module) -> torch.device:
    """The device holding the model's parameters."""
    return next(model.parameters()).device


def _require_one_size(files: Sequence[str | Path]) -> None:
    """pytorch-fid stacks each batch into one tensor, so all images must be readable and share
    one size (any size: its InceptionV3 resizes to 299×299)."""
    by_size: dict[tuple[int, int], list[str]] = {}
    for path in files:
        try:
            with Image.open(path) as image:
                by_size.setdefault(image.size, []).append(str(path))
        except OSError as error:
            raise ValueError(f"cannot read image {path}: {error}") from error
    if len(by_size) > 1:
        sizes = "; ".join(
            f"{width}×{height}: {len(paths)} image(s), e.g. {_examples(paths)}"
            for (width, height), paths in by_size.items()
        )
        raise ValueError(
            f"images of {len(by_size)} different sizes ({sizes}); pytorch-fid batches images "
            "and needs one size (python -m pytorch_fid fails on such a folder too)"
        )


def activation_statistics(
    files: Sequence[str | Path],
    model: torch.nn.Module,
    batch_size: int = 50,
    dims: int = 2048,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of the Inception features of ``files``: μ = mean_i f_i, Σ = cov_i f_i (N − 1).

    pytorch-fid's ``calculate_activation_statistics`` does the loading (``ImagePathDataset``:
    RGB, ToTensor) and the forward pass, so preprocessing is the grader's. ``device`` defaults
    to the model's. All images must share one size. μ: (dims,), Σ: (dims, dims).
    """
    _require_two_images(len(files), Path(files[0]).parent if files else "an empty file list")
    _require_one_size(files)
    device = _model_device(model) if device is None else resolve_device(device)
    batch_size = min(batch_size, len(files))  # pytorch-fid would print a warning and clip
    mu, sigma = calculate_activation_statistics(
        [str(path) for path in files], model, batch_size, dims, device, num_workers
    )
    return mu, sigma


def save_statistics(path: str | Path, mu: np.ndarray, sigma: np.ndarray) -> Path:
    """Write (μ, Σ) as an npz with keys ``mu`` and ``sigma`` (pytorch-fid's format), atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"statistics file must end in .npz (pytorch-fid needs it): {path}")
    return _write_atomically(path, lambda out: np.savez_compressed(out, mu=mu, sigma=sigma))


def load_statistics(npz_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) from an npz with keys ``mu`` and ``sigma`` (such as the course's mnist.npz)."""
    npz_path = Path(npz_path)
    if not npz_path.is_file():
        raise FileNotFoundError(f"statistics file not found: {npz_path}")
    with np.load(npz_path) as stats:
        missing = {"mu", "sigma"} - set(stats.files)
        if missing:
            raise ValueError(
                f"{npz_path} is not an FID statistics file: missing key(s) "
                f"{sorted(missing)}, has {sorted(stats.files)}"
            )
        return stats["mu"], stats["sigma"]


def _folder_fingerprint(folder: Path, files: Sequence[Path]) -> str:
    """SHA-256 over the resolved path, the file count and each file's relative name, size, mtime."""
    digest = hashlib.sha256(f"{folder.resolve()}\n{len(files)}\n".encode())
    for path in files:
        stat = path.stat()
        relative = path.relative_to(folder).as_posix()
        digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state: statistics from other weights must not share a cache."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _cache_path(
    cache_dir: Path, folder: Path, files: Sequence[Path], model: torch.nn.Module, dims: int
) -> Path:
    """``<cache_dir>/<folder name>-<N>img-<dims>d-<fingerprint>.npz``."""
    key = hashlib.sha256(
        f"{_folder_fingerprint(folder, files)}{_model_fingerprint(model)}".encode()
    ).hexdigest()
    return cache_dir / f"{folder.name}-{len(files)}img-{dims}d-{key[:16]}.npz"


def reference_statistics(
    reference: str | Path,
    model: torch.nn.Module,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    batch_size: int = 50,
    dims: int = 2048,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of the real data: read from an ``.npz``, or computed once per folder and cached.

    The cache file in ``cache_dir`` is named by a fingerprint of the folder (path, file count,
    names, sizes, mtimes) and of the model, so a changed folder is recomputed. It is an
    mu/sigma npz that ``python -m pytorch_fid`` reads too.
    """
    reference = Path(reference)
    if reference.suffix == ".npz":
        return load_statistics(reference)
    if reference.is_file():
        raise ValueError(f"reference must be an image folder or an .npz file: {reference}")
    folder = reference.resolve()
    files = list_images(folder)
    _require_two_images(len(files), folder)
    cached = _cache_path(Path(cache_dir), folder, files, model, dims)
    if cached.is_file():
        return load_statistics(cached)
    mu, sigma = activation_statistics(files, model, batch_size, dims, device, num_workers)
    save_statistics(cached, mu, sigma)
    return mu, sigma


def image_format_problems(files: Sequence[Path], root: Path, image_size: int = 28) -> list[str]:
    """Which ``files`` are not ``image_size``×``image_size`` RGB (or cannot be read), named
    relative to ``root``, one line per kind of problem."""
    wrong_size, wrong_mode, unreadable = [], [], []
    for path in files:
        name = path.relative_to(root).as_posix()
        try:
            with Image.open(path) as image:
                size, mode = image.size, image.mode
        except OSError as error:
            unreadable.append(f"{name} ({error})")
            continue
        if size != (image_size, image_size):
            wrong_size.append(f"{name} ({size[0]}×{size[1]})")
        if mode != "RGB":
            wrong_mode.append(f"{name} (mode {mode})")
    problems = []
    if wrong_size:
        problems.append(
            f"{len(wrong_size)} image(s) not {image_size}×{image_size}: {_examples(wrong_size)}"
        )
    if wrong_mode:
        problems.append(f"{len(wrong_mode)} image(s) not RGB: {_examples(wrong_mode)}")
    if unreadable:
        problems.append(f"{len(unreadable)} file(s) unreadable: {_examples(unreadable)}")
    return problems


def check_submission(
    folder: str | Path, num_images: int = GRADED_NUM_IMAGES, image_size: int = 28
) -> list[str]:
    """Problems with a submission folder: it must hold exactly ``00001.png`` … ``{num_images}.png``
    (5-digit names), each ``image_size``×``image_size`` RGB. An empty list means valid."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"submission folder not found: {folder}")
    expected = [f"{index:05d}.png" for index in range(1, num_images + 1)]
    present = {entry.name for entry in folder.iterdir()}
    missing = [name for name in expected if name not in present]
    extra = sorted(present - set(expected))
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} of {num_images} expected images missing: {_examples(missing)}"
        )
    if extra:
        problems.append(
            f"{len(extra)} unexpected entr(y/ies) besides {expected[0]}…{expected[-1]}: "
            f"{_examples(extra)}"
        )
    found = [folder / name for name in expected if name in present]
    return problems + image_format_problems(found, folder, image_size)


def _warn_about_generated(folder: Path, files: Sequence[Path]) -> None:
    """Warn when the generated set is small (biased FID) or not 28×28 RGB (FID still defined)."""
    if len(files) < MIN_UNBIASED_IMAGES:
        warnings.warn(
            f"only {len(files)} images in {folder}: FID from fewer than {MIN_UNBIASED_IMAGES} "
            f"images is biased (upwards) and not comparable with the graded "
            f"{GRADED_NUM_IMAGES:,}-image FID",
            stacklevel=3,
        )
    for problem in image_format_problems(files, folder):
        warnings.warn(f"{folder}: {problem} (the FID is still computed)", stacklevel=3)


def compute_fid(
    generated_dir: str | Path,
    reference: str | Path,
    device: str | torch.device | None = None,
    batch_size: int = 50,
    dims: int = 2048,
    weights_path: str | Path | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    num_workers: int = 0,
) -> float:
    """FID between a folder of generated images and a reference folder or ``.npz``.

    FID = ||μ_gen − μ_ref||² + Tr(Σ_gen + Σ_ref − 2 (Σ_gen Σ_ref)^{1/2}) on pytorch-fid's
    FID-weight features; raises InceptionWeightsUnavailable rather than use other weights.
    """
    generated_dir = Path(generated_dir)
    files = list_images(generated_dir)
    _require_two_images(len(files), generated_dir)
    if not Path(reference).exists():
        raise FileNotFoundError(f"reference folder or statistics file not found: {reference}")
    _warn_about_generated(generated_dir, files)
    model = load_fid_inception(device, dims, weights_path)
    mu_gen, sigma_gen = activation_statistics(files, model, batch_size, dims, None, num_workers)
    mu_ref, sigma_ref = reference_statistics(
        reference, model, cache_dir, batch_size, dims, None, num_workers
    )
    return frechet_distance(mu_gen, sigma_gen, mu_ref, sigma_ref)


def _parser() -> argparse.ArgumentParser:
    """The ``python -m ddpm_lib.fid`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m ddpm_lib.fid",
        description="FID with pytorch-fid's Inception (the grader's numbers).",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="GENERATED REFERENCE",
        help="generated folder, and a reference folder or .npz",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--save_stats",
        nargs=2,
        metavar=("FOLDER", "OUT_NPZ"),
        help="compute the reference statistics of FOLDER into OUT_NPZ",
    )
    mode.add_argument(
        "--check", metavar="GENERATED", help="check that GENERATED is a valid submission folder"
    )
    parser.add_argument(
        "--digits",
        action="store_true",
        help="with GENERATED REFERENCE: first print the offline digit evaluator's table on "
        "GENERATED (as python -m ddpm_lib.evaluator: an MNIST classifier's digit-FID, KID, "
        "precision/recall, digit shares, memorisation, each beside its real-data floor and "
        "noise; not an FID) against the training images in --train_dir. It needs no download and "
        "does not read REFERENCE, so it is printed even when the FID cannot be computed; the exit "
        "status is then still 1",
    )
    parser.add_argument(
        "--train_dir",
        default=DEFAULT_TRAIN_DIR,
        help="with --digits: MNIST's training set as PNGs (default %(default)s)",
    )
    parser.add_argument("--num_images", type=int, default=GRADED_NUM_IMAGES)
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--batch_size", type=int, default=50)
    parser.add_argument(
        "--dims",
        type=int,
        default=2048,
        choices=sorted(fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM),
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument(
        "--inception_weights",
        default=None,
        metavar="PATH",
        help=f"local copy of {weights_file_name()}",
    )
    parser.add_argument("--cache_dir", default=str(DEFAULT_CACHE_DIR))
    parser.add_argument("--num_workers", type=int, default=0)
    return parser


def _run_check(args: argparse.Namespace) -> None:
    """Print the problems of a submission folder; fail when there are any."""
    problems = check_submission(args.check, args.num_images, args.image_size)
    for problem in problems:
        print(problem)
    if problems:
        raise SystemExit(
            f"error: {args.check} is not a valid submission ({len(problems)} problem(s))"
        )
    print(
        f"OK: {args.check} holds {args.num_images} {args.image_size}×{args.image_size} "
        "RGB PNGs named 00001.png onwards"
    )


def _run_save_stats(args: argparse.Namespace) -> None:
    """Compute a folder's reference statistics with the FID weights and save them."""
    folder, out = args.save_stats
    files = list_images(folder)
    _require_two_images(len(files), folder)
    model = load_fid_inception(args.device, args.dims, args.inception_weights)
    mu, sigma = activation_statistics(
        files, model, args.batch_size, args.dims, None, args.num_workers
    )
    print(f"saved statistics of {len(files)} images to {save_statistics(out, mu, sigma)}")


def _run_fid(args: argparse.Namespace) -> None:
    """Print the FID of GENERATED against REFERENCE, as its last line. With --digits, the digit
    evaluator's report on GENERATED comes first, so it is there even when the FID fails."""
    generated, reference = args.paths
    if args.digits:
        _require_two_images(len(list_images(generated)), generated)  # the FID's own errors
        print(folder_report([generated], args.train_dir, str(resolve_device(args.device))),
              flush=True)
    value = compute_fid(
        generated,
        reference,
        device=args.device,
        batch_size=args.batch_size,
        dims=args.dims,
        weights_path=args.inception_weights,
        cache_dir=args.cache_dir,
        num_workers=args.num_workers,
    )
    print(f"FID: {value:.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m ddpm_lib.fid``; errors end as one ``error: …`` line."""
    parser = _parser()
    args = parser.parse_args(argv)
    modes = (args.check is not None) + (args.save_stats is not None) + bool(args.paths)
    if modes != 1 or len(args.paths) not in (0, 2):
        parser.error("give GENERATED REFERENCE, or --save_stats FOLDER OUT_NPZ, or --check DIR")
    if args.digits and not args.paths:
        parser.error("--digits goes with GENERATED REFERENCE (or run python -m ddpm_lib.evaluator)")
    try:
        if args.check is not None:
            _run_check(args)
        elif args.save_stats is not None:
            _run_save_stats(args)
        else:
            _run_fid(args)
    except (InceptionWeightsUnavailable, FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
