"""FID = ||μ_gen − μ_ref||² + Tr(Σ_gen + Σ_ref − 2 (Σ_gen Σ_ref)^{1/2}) of Gaussians fitted to
Inception-v3 pool3 features, by pytorch-fid's own network, statistics and formula. Ours adds what
``python -m pytorch_fid`` lacks: recursive folders (data/mnist_rgb/{0..9}/), the submission check,
one-line errors; ``--save-stats`` writes an ``.npz`` (pytorch-fid's) that stands in for a folder::

    python -m ddpm_lib.fid GENERATED REFERENCE [--digits]   # REFERENCE: a folder or an .npz
    python -m ddpm_lib.fid --save-stats FOLDER OUT.npz
    python -m ddpm_lib.fid --check GENERATED    # 00001.png … 10000.png, 28×28 RGB, one source?
"""

import argparse
import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_fid.fid_score import calculate_activation_statistics
from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3

from .evaluator import DEFAULT_TRAIN_DIR, folder_report, frechet_distance, list_images
from .generate import first_difference, read_provenance, same_set, set_key
from .runtime import pick_device, writable_folder

GRADED_NUM_IMAGES = 10_000


class InceptionWeightsUnavailable(RuntimeError):
    """pytorch-fid's FID Inception weights are neither cached nor downloadable: no FID."""


def load_fid_inception(device: str | torch.device | None = None, dims: int = 2048) -> InceptionV3:
    """pytorch-fid's InceptionV3 (``dims``-d features), its FID weights cached or downloaded."""
    try:
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
    except (OSError, RuntimeError) as error:  # no network, or a broken download
        cached = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_URL.rsplit("/", 1)[1]
        raise InceptionWeightsUnavailable(
            f"pytorch-fid's Inception weights are not in {cached} and could not be downloaded "
            f"({type(error).__name__}: {error}): copy {FID_WEIGHTS_URL} there. No FID was "
            "computed; offline, python -m ddpm_lib.evaluator DIR scores the digits.") from error
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()


def read_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) from pytorch-fid's ``.npz`` (arrays mu and sigma); ValueError if it is not one."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"statistics file not found: {path}")
    try:
        stats = np.load(path, allow_pickle=False)
        if not isinstance(stats, np.lib.npyio.NpzFile):
            raise TypeError("one array, not an archive")
        with stats:
            return stats["mu"], stats["sigma"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not an .npz of FID statistics (arrays mu and sigma, as "
                         f"--save-stats writes; {type(error).__name__})") from None


def image_files(folder: str | Path) -> list[Path]:
    """A folder's images for the FID, checked before any network loads: at least 2, each
    decodable (else ValueError naming it), all of one size (pytorch-fid stacks batches)."""
    files = list_images(folder)
    if len(files) < 2:
        raise ValueError(f"FID needs at least 2 images, got {len(files)} in {folder}")
    sizes = {}
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()  # decoded whole: a truncated file is named here, not mid-network
                sizes.setdefault(image.size, str(file))
        except (OSError, SyntaxError) as error:
            raise ValueError(f"{file} is unreadable ({error}): delete or replace it") from None
    if len(sizes) > 1:
        raise ValueError(f"images of {len(sizes)} sizes in {folder}, e.g. {list(sizes.values())}")
    return files


def fid_input(path: str | Path) -> tuple[np.ndarray, np.ndarray] | list[Path]:
    """What the FID reads of ``path``: an ``.npz``'s (μ, Σ) or a folder's checked images."""
    return read_statistics(path) if Path(path).suffix == ".npz" else image_files(path)


def statistics(source: tuple[np.ndarray, np.ndarray] | list[Path], model: InceptionV3,
               batch_size: int = 50, dims: int = 2048,
               num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(μ (dims,), Σ (dims, dims)) of a :func:`fid_input`: stored, or of its images."""
    if isinstance(source, tuple):
        return source
    return calculate_activation_statistics([str(file) for file in source], model, min(
        batch_size, len(source)), dims, next(model.parameters()).device, num_workers)


def compute_fid(generated_dir: str | Path, reference: str | Path,
                device: str | torch.device | None = None, batch_size: int = 50,
                dims: int = 2048, num_workers: int = 0) -> float:
    """FID between a folder of generated images and a reference folder or ``.npz``."""
    inputs = [fid_input(generated_dir), fid_input(reference)]  # checked before the network
    for path, source in zip((generated_dir, reference), inputs, strict=True):
        if isinstance(source, tuple) and source[0].shape != (dims,):
            raise ValueError(f"{path} holds statistics of {source[0].shape} features, not "
                             f"--dims {dims}: give --dims {source[0].shape[0]} or other statistics")
    model = load_fid_inception(device, dims)
    return frechet_distance(*statistics(inputs[0], model, batch_size, dims, num_workers),
                            *statistics(inputs[1], model, batch_size, dims, num_workers))


def check_submission(folder: str | Path, num_images: int = GRADED_NUM_IMAGES,
                     image_size: int = 28) -> list[str]:
    """A submission folder's problems, a line a file; [] when it is exactly ``00001.png`` …
    ``{num_images:05d}.png``, each a whole ``image_size``² RGB PNG whose provenance (what made
    it: checkpoint, sampler, steps, seed …; see ``generate.provenance``) is the majority's, and
    that of an unconditional set or a balanced one (``--digit all``), not of one digit."""
    expected = {f"{index:05d}.png" for index in range(1, num_images + 1)}
    present = {path.name for path in Path(folder).iterdir()}  # a missing folder: OSError
    problems = [f"{name}: missing" for name in sorted(expected - present)]
    problems += [f"{name}: unexpected" for name in sorted(present - expected)]
    made = {}
    for name in sorted(expected & present):
        try:
            made[name] = read_provenance(Path(folder) / name, image_size)
        except (OSError, SyntaxError, ValueError) as error:  # cut short, damaged, not ours
            problems.append(f"{name}: {error}")
    if not made:
        return problems
    votes = Counter(set_key(provenance) for provenance in made.values())
    winner, count = votes.most_common(1)[0]
    majority = next(p for p in made.values() if set_key(p) == winner)
    problems += [f"{name}: made otherwise than the other {count} ({first_difference(majority, p)})"
                 for name, p in made.items() if not same_set(p, majority)]
    if majority.get("digit") not in (None, "all"):
        problems.append(f"the set: the digit {majority['digit']} alone (generate --digit "
                        f"{majority['digit']}), not a set like MNIST's: leave --digit out, or "
                        f"give --digit all")
    return problems


def main(argv: list[str] | None = None) -> None:
    """``python -m ddpm_lib.fid``: the FID, reference statistics, or the submission check."""
    parser = argparse.ArgumentParser(prog="python -m ddpm_lib.fid", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", metavar="GENERATED REFERENCE")
    parser.add_argument("--save-stats", "--save_stats", nargs=2, metavar=("FOLDER", "OUT_NPZ"))
    parser.add_argument("--check", metavar="GENERATED")
    parser.add_argument("--digits", action="store_true", help="first, the digit evaluator's table")
    parser.add_argument("--train_dir", default=DEFAULT_TRAIN_DIR)
    parser.add_argument("--num_images", type=int, default=GRADED_NUM_IMAGES)  # --check's
    parser.add_argument("--image_size", type=int, default=28)  # --check's
    parser.add_argument("--batch_size", type=int, default=50)
    parser.add_argument("--dims", type=int, default=2048, choices=InceptionV3.BLOCK_INDEX_BY_DIM)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num_workers", type=int, default=0)
    args = parser.parse_args(argv)
    if [len(args.paths) == 2, bool(args.save_stats), bool(args.check)].count(True) != 1 or \
            len(args.paths) not in (0, 2) or (args.digits and not args.paths) or \
            (args.save_stats and not args.save_stats[1].endswith(".npz")):
        parser.error("give GENERATED REFERENCE [--digits], --save-stats FOLDER OUT.npz or --check")
    if args.num_images < 1:
        parser.error(f"--num_images {args.num_images}: need >= 1")
    try:
        args.device = pick_device(args.device)
        if args.check:
            problems = check_submission(args.check, args.num_images, args.image_size)
            if problems:
                print("\n".join(problems[:20]))  # the first 20; the error says how many in all
                raise ValueError(f"{args.check}: not one valid submission ({len(problems)} "
                                 f"problems); the first: {problems[0]}")
            print(f"OK: {args.check} holds {args.num_images} {args.image_size}×{args.image_size} "
                  "RGB PNGs, 00001.png onwards, all of one provenance")
        elif args.save_stats:
            files, out = image_files(args.save_stats[0]), Path(args.save_stats[1])
            writable_folder(out.parent, "OUT_NPZ's folder")  # made now, before the network
            if out.exists():
                raise ValueError(f"{out} exists: delete it first, or give another OUT_NPZ")
            mu, sigma = statistics(files, load_fid_inception(args.device, args.dims),
                                   args.batch_size, args.dims, args.num_workers)
            temporary = out.with_name(f".{out.stem}.tmp.npz")  # whole, or not there at all
            np.savez_compressed(temporary, mu=mu, sigma=sigma)
            temporary.replace(out)
            print(f"saved the statistics of {args.save_stats[0]} to {args.save_stats[1]}")
        else:
            if args.digits:  # printed even when the FID then fails
                print(folder_report(args.paths[:1], args.train_dir, args.device), flush=True)
            fid = compute_fid(*args.paths, args.device, args.batch_size, args.dims,
                              args.num_workers)
            print(f"FID: {fid:.2f}")
    except (InceptionWeightsUnavailable, OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
