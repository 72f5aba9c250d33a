"""The assignment's ``data/mnist_rgb/{0..9}/{index:05d}.png``: the 60,000 MNIST training digits
as 28×28 RGB PNGs, ``index`` 1-based in the training set. Build it (from the course's mnist.zip,
torchvision's MNIST or, offline, a local copy), check it, and read it as a Dataset."""

import argparse
import gzip
import hashlib
import io
import os
import shutil
import stat
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import numpy as np
import torch
import torchvision
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from PIL import Image
from torchvision.datasets.mnist import read_image_file, read_label_file
from tqdm.auto import tqdm

DEFAULT_OUT_DIR = Path("data/mnist_rgb")
DEFAULT_DOWNLOAD_DIR = Path("data/downloads")
BUILD_COMMAND = "python -m ddpm_lib.data"
OFFLINE_HINT = (f"offline: {BUILD_COMMAND} --source local --local DIR, DIR holding the MNIST idx "
                "files (.gz or not) or the course's mnist.zip; or set MNIST_DIR=DIR")
SOURCES = ("auto", "course-zip", "mnist", "local")
COURSE_REPO = "grandmaeatsadumpling/Generate-Images-Dataset"  # holds mnist.zip
DIGIT_FOLDERS = tuple("0123456789")
MNIST_TRAIN_COUNTS = dict(enumerate([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]))
MNIST_IDX_SHA256 = {  # of the uncompressed idx files
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def read_rgb(path: Path, image_size: int | None = None) -> np.ndarray:
    """One PNG as an H×W×3 uint8 array; ValueError naming the file unless it is RGB (and
    ``image_size``-square when given)."""
    with Image.open(path) as image:
        if image.mode != "RGB" or image.size != ((image_size,) * 2 if image_size else image.size):
            raise ValueError(f"{path} is {image.width}×{image.height} {image.mode}, expected "
                             f"{image_size or 'H'}×{image_size or 'W'} RGB: rebuild the folder "
                             f"with {BUILD_COMMAND}")
        return np.array(image)


class MnistRGBFolder(torch.utils.data.Dataset):
    """The PNGs under ``root`` (digit folders ``root/{0..9}/`` or one flat folder), sorted.
    ``dataset[i]`` is a float 3×H×W image in [-1, 1] and the digit of its folder (-1: flat)."""

    def __init__(self, root: str | Path, image_size: int | None = None) -> None:
        self.root, self.image_size = Path(root), image_size
        pngs = self.root.rglob("*.png") if self.root.is_dir() else []
        self.paths = sorted(path for path in pngs if not path.name.startswith("."))
        if not self.paths:
            raise FileNotFoundError(f"{self.root} does not exist or holds no PNG images: build "
                                    f"it with {BUILD_COMMAND} (see data/README.md)")
        self.labels = [int(path.parent.name) if path.parent.parent == self.root
                       and path.parent.name in DIGIT_FOLDERS else -1 for path in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = torch.from_numpy(read_rgb(self.paths[index], self.image_size))
        return pixels.permute(2, 0, 1).float() / 127.5 - 1.0, self.labels[index]

    def load_all(self, progress: bool = True) -> torch.Tensor:
        """Every image decoded once: uint8 N×3×H×W, all of the first image's size."""
        size = self.image_size or read_rgb(self.paths[0]).shape[1]
        paths = tqdm(self.paths, desc=f"loading {self.root}", unit="img", disable=not progress)
        arrays = [read_rgb(path, size) for path in paths]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@dataclass
class DatasetReport:
    """What ``check_mnist_rgb`` found: layout ("digit folders", "flat" or "missing"), images per
    digit, total, and one sentence per problem."""

    root: Path
    layout: str
    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"{self.root}: {self.total} PNGs, layout: {self.layout}"]
        if self.counts:
            lines.append("  per digit: " + ", ".join(f"{d}: {n}" for d, n in self.counts.items()))
        lines += [f"  problem: {problem}" for problem in self.problems] or ["  all checks passed"]
        return "\n".join(lines)


def check_mnist_rgb(
    root: str | Path = DEFAULT_OUT_DIR,
    expected_counts: Mapping[int, int] | None = MNIST_TRAIN_COUNTS,
    image_size: int = 28,
) -> DatasetReport:
    """Check a folder: digit folders holding ``expected_counts`` (None: any; a flat folder: their
    total) and only ``image_size``-square RGB images, every one decoded."""
    try:
        folder = MnistRGBFolder(root)
    except FileNotFoundError as error:
        return DatasetReport(Path(root), "missing", problems=[str(error)])
    found, expected = Counter(folder.labels), dict(expected_counts or {})
    counts = {} if set(found) == {-1} else {digit: found[digit] for digit in range(10)}
    problems = [f"digit {d}: {n} images, expected {expected.get(d)}" if n else
                f"digit {d}: no images in {folder.root / str(d)}"
                for d, n in counts.items() if not n or expected.get(d, n) != n]
    if not counts and expected and len(folder) != sum(expected.values()):
        problems.append(f"{len(folder)} images, expected {sum(expected.values())}")
    stray = [path for path in folder.paths if path.parent != folder.root] if not counts else [
        path for path, label in zip(folder.paths, folder.labels, strict=True) if label < 0]
    if stray:
        problems.append(f"{len(stray)} PNGs outside the layout, first: {stray[0]}")
    bad = []
    for path in tqdm(folder.paths, desc=f"checking {folder.root}", unit="img"):
        try:
            read_rgb(path, image_size)
        except (OSError, ValueError) as error:
            bad.append(str(error))
    if bad:
        problems.append(f"{len(bad)} unreadable or not {image_size}×{image_size} RGB: {bad[0]}")
    layout = "digit folders" if counts else "flat"
    return DatasetReport(folder.root, layout, counts, len(folder), problems)


def raise_if_bad(report: DatasetReport) -> DatasetReport:
    """The report when it is ok, else ValueError listing its problems."""
    if not report.ok:
        raise ValueError(f"{report.root} failed the check:\n{report.summary()}")
    return report


@contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A hidden sibling folder to build in; it replaces ``out_dir`` only when the block succeeds,
    so a failed build leaves no half-built folder."""
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted build
    staging.mkdir(parents=True)
    try:
        yield staging
        shutil.rmtree(out_dir, ignore_errors=True)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_pngs(out_dir: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """N×28×28 uint8 digits as RGB ``out_dir/{label}/{index:05d}.png``, index 1-based. One
    process: a pool of two was no faster on 2 cores."""
    for digit in np.unique(labels):
        (out_dir / str(digit)).mkdir()
    pairs = tqdm(zip(images, labels, strict=True), "writing PNGs", total=len(images))
    for index, (gray, label) in enumerate(pairs, start=1):
        Image.fromarray(gray).convert("RGB").save(out_dir / str(label) / f"{index:05d}.png")


def extract_zip(out_dir: Path, zip_path: Path) -> None:
    """The zip's PNGs as RGB into ``out_dir``: in digit folders ``{d}/`` if the zip has them,
    else flat. Any member that could land outside (link, absolute, '..') refuses the zip."""
    if not zipfile.is_zipfile(zip_path):
        raise ValueError(f"{zip_path} is not a zip file (a Git LFS pointer? run git lfs pull)")
    with zipfile.ZipFile(zip_path) as archive:
        members = {member: PureWindowsPath(member.filename) for member in archive.infolist()}
        for member, path in members.items():  # PureWindowsPath: / and \\, C:, leading slashes
            if stat.S_ISLNK(member.external_attr >> 16) or path.anchor or ".." in path.parts:
                raise ValueError(f"refusing to extract {zip_path}: member {member.filename!r} "
                                 "is a link, an absolute path or has '..'")
        pngs = {m: p for m, p in members.items() if p.suffix.lower() == ".png" and not m.is_dir()
                and "__MACOSX" not in p.parts and not p.name.startswith(".")}
        flat = not all(path.parent.name in DIGIT_FOLDERS for path in pngs.values())
        targets = {m: out_dir / ("" if flat else p.parent.name) / p.name for m, p in pngs.items()}
        if not pngs or len(set(targets.values())) < len(targets):
            raise ValueError(f"{zip_path}: expected PNGs in digit folders 0..9 or one flat folder")
        print(f"{zip_path}: {len(pngs)} PNGs" + (", no digit folders: no labels" if flat else ""))
        for member, target in tqdm(targets.items(), "extracting"):
            target.parent.mkdir(exist_ok=True)
            try:
                Image.open(io.BytesIO(archive.read(member))).convert("RGB").save(target, "PNG")
            except (OSError, zipfile.BadZipFile) as error:  # not an image, CRC mismatch
                raise ValueError(f"{zip_path}: member {member.filename!r}: {error}") from error


def download_course_zip(download_dir: Path) -> Path:
    """The course's mnist.zip in ``download_dir`` (Hugging Face dataset repo, else model repo);
    huggingface_hub checks its size, resolves LFS and reuses an earlier download."""
    failures = []
    for repo_type in ("dataset", "model"):
        try:
            return Path(hf_hub_download(COURSE_REPO, "mnist.zip", repo_type=repo_type,
                                        local_dir=download_dir))
        except (OSError, EntryNotFoundError) as error:
            failures.append(f"{repo_type} {COURSE_REPO}: {str(error).splitlines()[0]}")
    raise ConnectionError(f"no course mnist.zip: {'; '.join(failures)}\n{OFFLINE_HINT}")


def mnist_from_torchvision(download_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's training digits and labels, downloaded and md5-checked by torchvision."""
    try:
        mnist = torchvision.datasets.MNIST(download_dir, train=True, download=True)
    except (RuntimeError, OSError) as error:
        message = f"torchvision's MNIST download failed: {error}\n{OFFLINE_HINT}"
        raise ConnectionError(message) from error
    return mnist.data.numpy(), mnist.targets.numpy()


def read_idx(source_dir: Path, name: str) -> bytes:
    """The uncompressed contents of ``source_dir/name`` (or ``name.gz``), sha256-checked."""
    path = source_dir / name if (source_dir / name).is_file() else source_dir / f"{name}.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{source_dir} holds no {name} (.gz or not)")
    try:
        contents = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path} is not a valid gzip file: {error}") from error
    if (actual := hashlib.sha256(contents).hexdigest()) != MNIST_IDX_SHA256[name]:
        raise ValueError(f"{path}: sha256 of the uncompressed contents is {actual}, expected "
                         f"{MNIST_IDX_SHA256[name]} (not the original MNIST file)")
    return contents


def load_mnist_idx(
    source_dir: str | Path, train: bool = True, download_root: str | Path = DEFAULT_DOWNLOAD_DIR
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from idx files, checked, then read by torchvision from ``download_root/MNIST/raw``:
    N×1×28×28 uint8 images and N labels, of the training set or (``train=False``) the test set."""
    names = [name for name in MNIST_IDX_SHA256 if name.startswith("train" if train else "t10k")]
    contents = [read_idx(Path(source_dir), name) for name in names]
    raw_dir = Path(download_root) / "MNIST" / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, uncompressed in zip(names, contents, strict=True):
        (raw_dir / name).write_bytes(uncompressed)
    images = read_image_file(str(raw_dir / names[0]))
    return images[:, None], read_label_file(str(raw_dir / names[1]))


def build_into(staging: Path, source: str, local: Path | None, download_dir: Path) -> None:
    """Fill ``staging`` from ``local`` (mnist.zip, or a folder of it or of the idx files), else
    from ``source``; "auto" tries the course zip, then torchvision's MNIST."""
    if local and not local.exists():
        raise FileNotFoundError(f"--local {local} does not exist")
    if local and (local.is_file() or (local / "mnist.zip").is_file()):
        return extract_zip(staging, local / "mnist.zip" if local.is_dir() else local)
    if local:
        images, labels = load_mnist_idx(local, True, download_dir)
        return write_pngs(staging, images[:, 0].numpy(), labels.numpy())
    if source != "mnist":
        try:
            return extract_zip(staging, download_course_zip(download_dir))
        except (ConnectionError, ValueError) as error:
            if source == "course-zip":
                raise
            print(f"the course zip did not work ({error}); trying torchvision's MNIST")
            shutil.rmtree(staging)  # what the zip may have left
            staging.mkdir()
    write_pngs(staging, *mnist_from_torchvision(download_dir))


def build_mnist_rgb(
    out_dir: str | Path = DEFAULT_OUT_DIR,
    source: str = "auto",
    local: str | Path | None = None,
    overwrite: bool = False,
    download_dir: str | Path = DEFAULT_DOWNLOAD_DIR,
) -> DatasetReport:
    """Build ``out_dir`` from one of ``SOURCES`` and return its check; ``local`` (for "auto" and
    "local" also ``$MNIST_DIR``) is an offline copy, used by all sources but "mnist"."""
    out_dir = Path(out_dir)
    if out_dir.is_file() or not overwrite and out_dir.is_dir() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists (a file, or a folder not empty): pass --overwrite "
                              "to rebuild a folder, or --check-only to check it")
    if source in ("auto", "local"):
        local = local or os.environ.get("MNIST_DIR")
    if source == "local" and not local:
        raise ValueError("--source local needs --local DIR (or the MNIST_DIR variable)")
    local = Path(local) if local and source != "mnist" else None
    with staged_folder(out_dir) as staging:
        build_into(staging, source, local, Path(download_dir))
    return check_mnist_rgb(out_dir)


def main(argv: list[str] | None = None) -> None:
    """``python -m ddpm_lib.data``: build the mnist_rgb folder, or only check it."""
    parser = argparse.ArgumentParser(prog=BUILD_COMMAND, description=__doc__)
    parser.add_argument("--out", default=str(DEFAULT_OUT_DIR), help="folder to build or check")
    parser.add_argument("--source", choices=SOURCES, default="auto", help="where images come from")
    parser.add_argument("--local", help="offline: a folder of the MNIST idx files (.gz or not) or "
                        "of mnist.zip, or mnist.zip (auto and local: default $MNIST_DIR)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    parser.add_argument("--check-only", action="store_true", help="check, build nothing")
    args = parser.parse_args(argv)
    try:
        report = check_mnist_rgb(args.out) if args.check_only else build_mnist_rgb(
            args.out, args.source, args.local, args.overwrite)
        print(raise_if_bad(report).summary())
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
