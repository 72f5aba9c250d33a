"""The assignment's ``mnist_rgb`` folder: building it, checking it and reading it as a Dataset.

The layout is ``data/mnist_rgb/{0..9}/{index:05d}.png``: the 60,000 MNIST training images as 28×28
RGB PNGs (the gray value repeated in the three channels), one folder per digit, ``index`` being the
1-based position in the MNIST training set (``5/00001.png`` is the first training image, a 5).

Three ways to build it (``python -m ddpm_lib.data --help``):

- ``--source course-zip``: the course's ``mnist.zip`` from Hugging Face (or a local copy of it);
- ``--source mnist``: torchvision's MNIST download (md5-verified by torchvision);
- ``--source local --local DIR``: offline, from a folder holding the MNIST idx files (gzipped or
  not) or from a local copy of ``mnist.zip``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io
import os
import re
import shutil
import stat
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
import torch
import torchvision
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.mnist import read_image_file, read_label_file
from tqdm.auto import tqdm

DEFAULT_OUT_DIR = Path("data/mnist_rgb")
DEFAULT_DOWNLOAD_DIR = Path("data/downloads")
BUILD_COMMAND = "python -m ddpm_lib.data"
OFFLINE_HINT = (
    f"to build offline, run {BUILD_COMMAND} --source local --local DIR, where DIR holds the MNIST "
    "idx files (.gz or not) or DIR is a copy of the course mnist.zip; or set MNIST_DIR=DIR"
)

DIGIT_FOLDERS = tuple(str(digit) for digit in range(10))
MNIST_TRAIN_COUNTS = dict(enumerate([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]))

TRAIN_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_IDX_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_IDX_SHA256 = {  # of the uncompressed files
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

COURSE_ZIP_NAME = "mnist.zip"
COURSE_ZIP_URLS = (
    "https://huggingface.co/datasets/grandmaeatsadumpling/Generate-Images-Dataset/resolve/main/mnist.zip",
    "https://huggingface.co/grandmaeatsadumpling/Generate-Images-Dataset/resolve/main/mnist.zip",
)
LFS_POINTER_PREFIX = b"version https://git-lfs"
SOURCES = ("auto", "course-zip", "mnist", "local")
PNG_CHUNK_SIZE = 1000  # images per task of the PNG-writing process pool


class DownloadError(RuntimeError):
    """A download failed (no internet, server error); the message says how to work offline."""


class DatasetCheckError(ValueError):
    """The ``mnist_rgb`` folder failed its check; the message lists every problem."""


# --- reading -------------------------------------------------------------------------------------


def find_pngs(root: Path) -> list[Path]:
    """Every ``*.png`` under ``root``, recursively and sorted, hidden files (``.*``) left out."""
    return sorted(path for path in root.rglob("*.png") if not path.name.startswith("."))


def digit_label(path: Path, root: Path) -> int:
    """The digit named by the image's folder ``root/{0..9}/``, else -1 (flat layout, others)."""
    folder = path.parent
    return int(folder.name) if folder.parent == root and folder.name in DIGIT_FOLDERS else -1


def describe_image(size: tuple[int, int], mode: str) -> str:
    """``'32×32 L'``: width × height and PIL mode, as the error messages print them."""
    return f"{size[0]}×{size[1]} {mode}"


def read_rgb(path: Path, image_size: int | None = None) -> np.ndarray:
    """Decode one PNG into an H×W×3 uint8 array; refuse any image that is not RGB or not square
    ``image_size`` (when given), naming the file, what it is and what was expected."""
    with Image.open(path) as image:
        wrong_size = image_size is not None and image.size != (image_size, image_size)
        if image.mode != "RGB" or wrong_size:
            expected = f"{image_size}×{image_size} RGB" if image_size is not None else "RGB"
            raise ValueError(
                f"{path} is {describe_image(image.size, image.mode)}; expected {expected} — "
                f"rebuild the folder with {BUILD_COMMAND}"
            )
        return np.array(image)


class MnistRGBFolder(torch.utils.data.Dataset):
    """The PNGs under ``root`` (digit folders ``root/{0..9}/`` or one flat folder), sorted by path.

    ``dataset[i]`` is ``(image, label)``: a float tensor 3×H×W in [-1, 1] and the digit of the
    image's folder (-1 when the layout is flat). ``labels`` lists them all.
    """

    def __init__(self, root: str | Path, image_size: int | None = None) -> None:
        self.root = Path(root)
        self.image_size = image_size
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.root} does not exist: build it with {BUILD_COMMAND} (see data/README.md)"
            )
        self.paths = find_pngs(self.root)
        if not self.paths:
            raise FileNotFoundError(
                f"no PNG images under {self.root}: build the folder with {BUILD_COMMAND} "
                "(see data/README.md)"
            )
        self.labels = [digit_label(path, self.root) for path in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = torch.from_numpy(read_rgb(self.paths[index], self.image_size))
        image = pixels.permute(2, 0, 1).float() / 127.5 - 1.0
        return image, self.labels[index]

    def load_all(self, progress: bool = True) -> torch.Tensor:
        """Decode every image once: a uint8 tensor N×3×H×W (about 140 MB for MNIST).

        Without ``image_size`` every image must have the size of the first one.
        """
        image_size = self.image_size
        if image_size is None:
            with Image.open(self.paths[0]) as first:
                image_size = first.width
        paths = tqdm(self.paths, desc=f"loading {self.root}", unit="img", disable=not progress)
        arrays = [read_rgb(path, image_size) for path in paths]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


# --- checking ------------------------------------------------------------------------------------


@dataclass
class DatasetReport:
    """What ``check_mnist_rgb`` found: layout ("digit folders", "flat", "empty" or "missing"),
    images per digit, total, and one sentence per problem."""

    root: Path
    layout: str
    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """A few lines for people: what is there and what is wrong."""
        lines = [f"{self.root}: {self.total} PNGs, layout: {self.layout}"]
        if self.layout == "digit folders":
            lines.append("  per digit: " + ", ".join(f"{d}: {n}" for d, n in self.counts.items()))
        if self.layout == "flat":
            lines.append("  flat folder: the images carry no labels, per-digit counts not checked")
        lines += [f"  problem: {problem}" for problem in self.problems] or ["  all checks passed"]
        return "\n".join(lines)


def header_problem(path: Path, image_size: int) -> str | None:
    """``None`` for an ``image_size``-square RGB image, else what it is; reads only the header."""
    try:
        with Image.open(path) as image:
            size, mode = image.size, image.mode
    except (OSError, SyntaxError) as error:
        return f"{path} cannot be read ({error})"
    if mode != "RGB" or size != (image_size, image_size):
        return f"{path} is {describe_image(size, mode)}"
    return None


def count_problems(
    root: Path, counts: dict[int, int], expected_counts: Mapping[int, int] | None
) -> list[str]:
    """One sentence per digit whose folder is missing or empty, or whose count is not expected."""
    problems = []
    for digit, count in counts.items():
        expected = None if expected_counts is None else expected_counts.get(digit)
        if count == 0:
            problems.append(f"digit {digit}: no images ({root / str(digit)} is missing or empty)")
        elif expected is not None and count != expected:
            problems.append(f"digit {digit}: {count} images, expected {expected}")
    return problems


def check_mnist_rgb(
    root: str | Path = DEFAULT_OUT_DIR,
    expected_counts: Mapping[int, int] | None = MNIST_TRAIN_COUNTS,
    image_size: int = 28,
) -> DatasetReport:
    """Check a built folder: its layout, the images per digit against ``expected_counts`` (None
    skips counts; a flat folder is checked on its total) and that every image is
    ``image_size``-square RGB."""
    root = Path(root)
    build_it = f"build it with {BUILD_COMMAND}"
    if not root.is_dir():
        return DatasetReport(root, "missing", problems=[f"{root} does not exist; {build_it}"])
    paths = find_pngs(root)
    if not paths:
        return DatasetReport(root, "empty", problems=[f"no PNG images under {root}; {build_it}"])
    labels = [digit_label(path, root) for path in paths]
    problems = []
    if any(label >= 0 for label in labels):
        layout = "digit folders"
        found = Counter(labels)
        counts = {digit: found[digit] for digit in range(10)}
        problems += count_problems(root, counts, expected_counts)
        stray = [path for path, label in zip(paths, labels, strict=True) if label < 0]
    else:
        layout, counts = "flat", {}
        stray = [path for path in paths if path.parent != root]
        expected_total = None if expected_counts is None else sum(expected_counts.values())
        if expected_total is not None and len(paths) != expected_total:
            problems.append(f"{len(paths)} images, expected {expected_total}")
    if stray:
        problems.append(f"{len(stray)} PNGs outside the {layout} layout, first: {stray[0]}")
    bad = [problem for path in paths if (problem := header_problem(path, image_size))]
    if bad:
        problems.append(f"{len(bad)} files are not {image_size}×{image_size} RGB, first: {bad[0]}")
    return DatasetReport(root, layout, counts, len(paths), problems)


def raise_if_bad(report: DatasetReport) -> DatasetReport:
    """Return the report when it is ok, else raise ``DatasetCheckError`` listing its problems."""
    if not report.ok:
        raise DatasetCheckError(f"{report.root} failed the check:\n{report.summary()}")
    return report


# --- writing a folder safely ---------------------------------------------------------------------


def refuse_to_overwrite(out_dir: Path, overwrite: bool) -> None:
    """Stop before any work when ``out_dir`` holds something and ``overwrite`` is off."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is a file, not a folder")
    if not overwrite and out_dir.is_dir() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} already exists and is not empty: pass --overwrite (overwrite=True) to "
            "rebuild it, or --check-only to check it"
        )


@contextmanager
def staged_folder(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a hidden sibling ``.{name}.partial`` to write into; it replaces ``out_dir`` only when
    the block succeeds, so an interrupted build never leaves a half folder that looks complete."""
    refuse_to_overwrite(out_dir, overwrite)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)  # left by an earlier interrupted build
    staging.mkdir(parents=True)
    try:
        yield staging
        if out_dir.exists():
            previous = out_dir.with_name(f".{out_dir.name}.previous")
            shutil.rmtree(previous, ignore_errors=True)
            out_dir.rename(previous)
            staging.rename(out_dir)
            shutil.rmtree(previous)
        else:
            staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_rgb_pngs(paths: list[Path], grays: np.ndarray) -> int:
    """Save each H×W uint8 digit as an RGB PNG (gray repeated in 3 channels); returns the count."""
    for path, gray in zip(paths, grays, strict=True):
        Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2)).save(path)
    return len(paths)


def write_mnist_rgb(images: np.ndarray, labels: np.ndarray, out_dir: Path) -> None:
    """Write N×28×28 uint8 digits as ``out_dir/{label}/{index:05d}.png``, index 1-based, using a
    process per CPU core (about 10 s for MNIST on 2 cores)."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    paths = [
        out_dir / str(int(label)) / f"{index:05d}.png" for index, label in enumerate(labels, 1)
    ]
    for folder in sorted({path.parent for path in paths}):
        folder.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(paths), PNG_CHUNK_SIZE)
    path_chunks = [paths[start : start + PNG_CHUNK_SIZE] for start in starts]
    image_chunks = [images[start : start + PNG_CHUNK_SIZE] for start in starts]
    workers = max(1, min(os.cpu_count() or 1, len(path_chunks)))
    with (
        ProcessPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(paths), desc="writing PNGs", unit="img") as progress,
    ):
        for written in pool.map(write_rgb_pngs, path_chunks, image_chunks):
            progress.update(written)


def write_and_check(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: Path,
    overwrite: bool,
    expected_counts: Mapping[int, int] | None,
) -> DatasetReport:
    """Write the digits into ``out_dir`` through a staging folder, then check the result."""
    with staged_folder(out_dir, overwrite) as staging:
        write_mnist_rgb(images, labels, staging)
    print(f"wrote {len(images)} RGB PNGs into digit folders in {out_dir}")
    return check_mnist_rgb(out_dir, expected_counts)


# --- (a) the course's mnist.zip -----------------------------------------------------------------


class RecordRedirectHeaders(urllib.request.HTTPRedirectHandler):
    """Follow redirects as usual and keep each redirect's headers: Hugging Face sends the file's
    sha256 (``X-Linked-Etag``) and size (``X-Linked-Size``) on the redirect to its CDN."""

    def __init__(self) -> None:
        super().__init__()
        self.redirect_headers: list[Message] = []

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        self.redirect_headers.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def linked_sha256(etag: str | None) -> str | None:
    """The sha256 in an ``X-Linked-Etag`` header (quoted, maybe ``W/``), or None if none."""
    value = (etag or "").removeprefix("W/").strip('"').lower()
    return value if re.fullmatch(r"[0-9a-f]{64}", value) else None


def verify_zip(path: Path) -> None:
    """Refuse a Git LFS pointer, a file that is not a zip, and a zip whose CRCs do not match."""
    with path.open("rb") as file:
        head = file.read(len(LFS_POINTER_PREFIX))
    if head == LFS_POINTER_PREFIX:
        raise ValueError(
            f"{path} is a Git LFS pointer, not the zip: install git-lfs (git lfs pull) or "
            "download mnist.zip with the download button on the Hugging Face page"
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a zip file (corrupt or incomplete download?)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is a corrupt zip file: {error}") from error
    if bad_member is not None:
        raise ValueError(f"{path} is corrupt: {bad_member} fails its CRC check")


def download_file(url: str, destination: Path) -> None:
    """Stream ``url`` into ``destination.part`` with a progress bar, verify the sha256 and size
    that Hugging Face announces (else only the zip's CRCs), then rename it to ``destination``.
    A bad download is deleted, never left under its final name."""
    handler = RecordRedirectHeaders()
    partial = destination.with_name(destination.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "ddpm_lib"})
    try:
        with urllib.request.build_opener(handler).open(request, timeout=60) as response:
            headers = [*handler.redirect_headers, response.headers]
            expected_sha256 = next(
                (sha for h in headers if (sha := linked_sha256(h.get("X-Linked-Etag")))), None
            )
            sizes = [h.get("X-Linked-Size") for h in headers] + [response.headers["Content-Length"]]
            expected_size = next((int(size) for size in sizes if size), None)
            digest = hashlib.sha256()
            with (
                partial.open("wb") as file,
                tqdm(total=expected_size, unit="B", unit_scale=True, desc=destination.name) as bar,
            ):
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    file.write(chunk)
                    bar.update(len(chunk))
        size = partial.stat().st_size
        if expected_size is not None and size != expected_size:
            raise ValueError(f"{url}: got {size} bytes, the server announced {expected_size}")
        if expected_sha256 is None:
            print("the server sent no checksum (X-Linked-Etag): relying on the zip's own CRCs")
        elif digest.hexdigest() != expected_sha256:
            raise ValueError(
                f"{url}: sha256 {digest.hexdigest()} does not match the announced "
                f"{expected_sha256}; the download was deleted, try again"
            )
        else:
            print(f"sha256 verified: {expected_sha256}")
        verify_zip(partial)
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)


def download_course_zip(
    download_dir: str | Path = DEFAULT_DOWNLOAD_DIR, urls: tuple[str, ...] = COURSE_ZIP_URLS
) -> Path:
    """``download_dir/mnist.zip``, downloaded from the first of ``urls`` that answers (an earlier
    complete download is reused); ``DownloadError`` listing what was tried when none does."""
    destination = Path(download_dir) / COURSE_ZIP_NAME
    if destination.is_file():
        print(f"using the earlier download {destination}")
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        print(f"downloading {url}")
        try:
            download_file(url, destination)
            return destination
        except (OSError, http.client.HTTPException) as error:  # no network, HTTP errors, cut off
            failures.append(f"{url}: {error}")
    raise DownloadError(
        "could not download the course mnist.zip; tried\n  "
        + "\n  ".join(failures)
        + f"\n{OFFLINE_HINT}"
    )


def unsafe_member_reason(member: zipfile.ZipInfo) -> str | None:
    """Why extracting ``member`` could write outside the target folder, or None if it cannot."""
    name = member.filename
    if stat.S_ISLNK(member.external_attr >> 16):
        return "is a symbolic link"
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "climbs out of the folder with '..'"
    return None


def png_members(archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The PNG members and their normalised paths, skipping ``__MACOSX/`` and dot-files; raises
    ``ValueError`` naming the first member that could escape the target folder."""
    members = []
    for member in archive.infolist():
        reason = unsafe_member_reason(member)
        if reason is not None:
            raise ValueError(
                f"refusing to extract {archive.filename}: member {member.filename!r} {reason}"
            )
        path = PurePosixPath(member.filename.replace("\\", "/"))
        skipped = "__MACOSX" in path.parts or path.name.startswith(".")
        if not member.is_dir() and not skipped and path.suffix.lower() == ".png":
            members.append((member, path))
    return members


def zip_layout(paths: list[PurePosixPath]) -> tuple[bool, str]:
    """Whether the PNGs sit in digit folders, and the folder that holds them (or their digit
    folders), as ``'mnist/'`` or ``''`` for the top of the zip. Other layouts raise ValueError."""
    labelled = all(path.parent.name in DIGIT_FOLDERS for path in paths)
    holders = {path.parent.parent if labelled else path.parent for path in paths}
    if len(holders) != 1:
        examples = ", ".join(sorted(str(holder) for holder in holders)[:3])
        raise ValueError(
            f"the zip's PNGs are spread over {len(holders)} folders ({examples}, …); expected "
            "digit folders 0..9 or one flat folder"
        )
    holder = holders.pop()
    return labelled, "" if holder == PurePosixPath(".") else f"{holder}/"


def copy_as_rgb(data: bytes, target: Path, member_name: str) -> bool:
    """Write one PNG from the zip to ``target``, converting it to RGB if needed (returns whether
    it was converted); an RGB PNG is copied byte for byte."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode == "RGB" and image.format == "PNG":
                target.write_bytes(data)
                return False
            image.convert("RGB").save(target, format="PNG")
            return True
    except UnidentifiedImageError as error:
        raise ValueError(f"{member_name} in the zip is not a readable image") from error


def extract_course_zip(zip_path: Path, out_dir: Path) -> None:
    """Write the zip's PNGs into ``out_dir`` in the assignment's layout: digit folders become
    ``out_dir/{d}/`` (file names kept), a flat zip stays flat; non-RGB images become RGB."""
    with zipfile.ZipFile(zip_path) as archive:
        members = png_members(archive)
        if not members:
            raise ValueError(f"{zip_path} holds no PNG images")
        labelled, holder = zip_layout([path for _, path in members])
        where = f" under {holder}" if holder else ""
        if labelled:
            print(f"found {len(members)} PNGs in digit folders{where}")
            targets = [out_dir / path.parent.name / path.name for _, path in members]
        else:
            print(
                f"found {len(members)} PNGs with no digit folders{where}: a flat zip carries no "
                "labels. Training and FID work on a flat folder; per-digit checks need the "
                f"labelled build ({BUILD_COMMAND} --source mnist)"
            )
            targets = [out_dir / path.name for _, path in members]
        for folder in {target.parent for target in targets}:
            folder.mkdir(parents=True, exist_ok=True)
        converted = sum(
            copy_as_rgb(archive.read(member), target, member.filename)
            for (member, _), target in tqdm(
                zip(members, targets, strict=True),
                total=len(members),
                desc="extracting",
                unit="img",
            )
        )
    print(f"converted {converted} images to RGB" if converted else "all images were already RGB")


def build_from_course_zip(
    out_dir: str | Path = DEFAULT_OUT_DIR,
    zip_path: str | Path | None = None,
    download_dir: str | Path = DEFAULT_DOWNLOAD_DIR,
    overwrite: bool = False,
    expected_counts: Mapping[int, int] | None = MNIST_TRAIN_COUNTS,
) -> DatasetReport:
    """Build ``out_dir`` from the course's ``mnist.zip``: a local copy (``zip_path``, no network)
    or the Hugging Face download. Returns the check of the result."""
    out_dir = Path(out_dir)
    refuse_to_overwrite(out_dir, overwrite)
    zip_path = Path(zip_path) if zip_path is not None else download_course_zip(download_dir)
    if not zip_path.is_file():
        raise FileNotFoundError(f"{zip_path} does not exist (expected a copy of the course zip)")
    verify_zip(zip_path)
    with staged_folder(out_dir, overwrite) as staging:
        extract_course_zip(zip_path, staging)
    print(f"wrote the images of {zip_path} into {out_dir}")
    return check_mnist_rgb(out_dir, expected_counts)


# --- (b) torchvision's MNIST download and (c) local idx files -----------------------------------


def build_from_torchvision(
    out_dir: str | Path = DEFAULT_OUT_DIR,
    download_root: str | Path = DEFAULT_DOWNLOAD_DIR,
    overwrite: bool = False,
    expected_counts: Mapping[int, int] | None = MNIST_TRAIN_COUNTS,
) -> DatasetReport:
    """Build ``out_dir`` from ``torchvision.datasets.MNIST`` (downloaded and md5-verified into
    ``download_root/MNIST/raw``). Returns the check of the result."""
    out_dir = Path(out_dir)
    refuse_to_overwrite(out_dir, overwrite)
    try:
        mnist = torchvision.datasets.MNIST(str(download_root), train=True, download=True)
    except (RuntimeError, OSError) as error:
        raise DownloadError(
            f"torchvision could not download MNIST into {download_root}: {error}\n{OFFLINE_HINT}"
        ) from error
    return write_and_check(
        mnist.data.numpy(), mnist.targets.numpy(), out_dir, overwrite, expected_counts
    )


def read_idx_contents(path: Path) -> bytes:
    """The uncompressed bytes of an idx file, gzipped (``.gz``) or not."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as error:
        raise ValueError(f"{path} is not a valid gzip file: {error}") from error


def find_idx_file(source_dir: Path, name: str) -> Path | None:
    """``source_dir/name`` or ``source_dir/name.gz``, whichever exists."""
    for candidate in (source_dir / name, source_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def prepare_idx_files(
    source_dir: Path, raw_dir: Path, checksums: Mapping[str, str] | None = MNIST_IDX_SHA256
) -> None:
    """Decompress the idx files of ``source_dir`` into ``raw_dir`` (names without ``.gz``),
    checking the sha256 of each uncompressed file listed in ``checksums`` (None: no check).
    The train files are required, the t10k files optional."""
    if not source_dir.is_dir():
        raise FileNotFoundError(f"{source_dir} does not exist (expected the MNIST idx files)")
    found = {name: find_idx_file(source_dir, name) for name in TRAIN_IDX_FILES + TEST_IDX_FILES}
    missing = [name for name in TRAIN_IDX_FILES if found[name] is None]
    if missing:
        raise FileNotFoundError(
            f"missing in {source_dir}: {', '.join(missing)} (.gz or not); expected "
            f"{' and '.join(TRAIN_IDX_FILES)} (t10k files optional)"
        )
    contents = {name: read_idx_contents(path) for name, path in found.items() if path is not None}
    for name, uncompressed in contents.items():
        expected = (checksums or {}).get(name)
        actual = hashlib.sha256(uncompressed).hexdigest()
        if expected is not None and actual != expected:
            raise ValueError(
                f"{found[name]}: sha256 of the uncompressed contents is {actual}, expected "
                f"{expected} (not the original MNIST file)"
            )
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, uncompressed in contents.items():
        (raw_dir / name).write_bytes(uncompressed)
    print(f"{'verified and ' if checksums else ''}decompressed the idx files into {raw_dir}")


def load_mnist_idx(
    source_dir: str | Path, train: bool = True, download_root: str | Path = DEFAULT_DOWNLOAD_DIR
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from local idx files (sha256-checked): (N, 1, 28, 28) uint8 images, (N,) labels.

    ``train=False`` reads the 10,000 test images, which must then be in ``source_dir`` too.
    """
    raw_dir = Path(download_root) / "MNIST" / "raw"
    prepare_idx_files(Path(source_dir), raw_dir)
    names = TRAIN_IDX_FILES if train else TEST_IDX_FILES
    if not (raw_dir / names[0]).exists():
        raise FileNotFoundError(f"{source_dir} holds no {names[0]} (.gz or not)")
    images = read_image_file(str(raw_dir / names[0]))
    return images[:, None], read_label_file(str(raw_dir / names[1]))


def build_from_local_idx(
    out_dir: str | Path,
    source_dir: str | Path,
    download_root: str | Path = DEFAULT_DOWNLOAD_DIR,
    overwrite: bool = False,
    checksums: Mapping[str, str] | None = MNIST_IDX_SHA256,
    expected_counts: Mapping[int, int] | None = MNIST_TRAIN_COUNTS,
) -> DatasetReport:
    """Build ``out_dir`` offline from the MNIST idx files in ``source_dir``: verify them, put them
    where ``torchvision.datasets.MNIST(download_root)`` looks, read the train files with
    torchvision's own idx readers (the class itself insists on the optional t10k files too), then
    write the PNGs exactly as ``build_from_torchvision`` does. Returns the check of the result."""
    out_dir = Path(out_dir)
    refuse_to_overwrite(out_dir, overwrite)
    raw_dir = Path(download_root) / "MNIST" / "raw"
    prepare_idx_files(Path(source_dir), raw_dir, checksums)
    images = read_image_file(str(raw_dir / TRAIN_IDX_FILES[0]))
    labels = read_label_file(str(raw_dir / TRAIN_IDX_FILES[1]))
    return write_and_check(images.numpy(), labels.numpy(), out_dir, overwrite, expected_counts)


def build_from_local(
    out_dir: str | Path,
    local: str | Path,
    download_root: str | Path = DEFAULT_DOWNLOAD_DIR,
    overwrite: bool = False,
) -> DatasetReport:
    """Offline build from ``local``: a copy of the course zip, or a folder holding either the
    MNIST idx files or ``mnist.zip``."""
    local = Path(local)
    if local.is_file():
        return build_from_course_zip(out_dir, zip_path=local, overwrite=overwrite)
    has_idx = any(find_idx_file(local, name) for name in TRAIN_IDX_FILES)
    if local.is_dir() and not has_idx and (local / COURSE_ZIP_NAME).is_file():
        return build_from_course_zip(out_dir, zip_path=local / COURSE_ZIP_NAME, overwrite=overwrite)
    return build_from_local_idx(out_dir, local, download_root, overwrite)


def build_mnist_rgb(
    out_dir: str | Path = DEFAULT_OUT_DIR,
    source: str = "auto",
    local: str | Path | None = None,
    overwrite: bool = False,
) -> DatasetReport:
    """Build the folder from ``source``: "course-zip", "mnist" (torchvision), "local" (``local``
    or ``$MNIST_DIR``) or "auto" = local if given, else ``$MNIST_DIR``, else the course zip
    online, falling back to torchvision's MNIST download."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    out_dir = Path(out_dir)
    refuse_to_overwrite(out_dir, overwrite)
    if source in ("auto", "local"):
        local = local or os.environ.get("MNIST_DIR")
    if source == "local" and not local:
        raise ValueError("--source local needs --local PATH (or the MNIST_DIR variable)")
    if local and source in ("auto", "local"):
        return build_from_local(out_dir, local, overwrite=overwrite)
    if source == "course-zip":
        return build_from_course_zip(out_dir, zip_path=local, overwrite=overwrite)
    if source == "mnist":
        return build_from_torchvision(out_dir, overwrite=overwrite)
    try:
        return build_from_course_zip(out_dir, overwrite=overwrite)
    except (DownloadError, ValueError) as course_error:
        print(f"the course zip did not work ({course_error}); trying torchvision's MNIST")
        try:
            return build_from_torchvision(out_dir, overwrite=overwrite)
        except DownloadError as mnist_error:
            raise DownloadError(
                "could not download MNIST: tried the course mnist.zip from Hugging Face "
                f"({', '.join(COURSE_ZIP_URLS)}) and torchvision's MNIST mirrors.\n{OFFLINE_HINT}"
            ) from mnist_error


# --- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """``python -m ddpm_lib.data``: build (or ``--check-only``) the ``mnist_rgb`` folder."""
    parser = argparse.ArgumentParser(
        prog=BUILD_COMMAND, description="Build and check the assignment's data/mnist_rgb folder."
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT_DIR), help="folder to build or check")
    parser.add_argument("--source", choices=SOURCES, default="auto", help="where images come from")
    parser.add_argument(
        "--local", help="offline: a folder with the MNIST idx files (.gz or not), or mnist.zip"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    parser.add_argument("--check-only", action="store_true", help="check, build nothing")
    args = parser.parse_args(argv)
    try:
        if args.check_only:
            report = check_mnist_rgb(args.out)
        else:
            report = build_mnist_rgb(args.out, args.source, args.local, args.overwrite)
        print(raise_if_bad(report).summary())
    except (OSError, ValueError, DownloadError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
