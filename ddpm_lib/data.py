"""``data/mnist_rgb/{0..9}/{index:05d}.png``, MNIST's 60,000 training digits as 28×28 RGB PNGs
(``index`` 1-based): built from the course's mnist.zip, torchvision's MNIST or a local copy."""

import argparse
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PureWindowsPath

import numpy as np
import torch
import torchvision
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from PIL import Image
from torchvision.datasets.mnist import read_image_file, read_label_file
from tqdm.auto import tqdm

from . import __version__

DEFAULT_OUT_DIR = Path("data/mnist_rgb")
DEFAULT_DOWNLOAD_DIR = Path("data/downloads")
BUILD_COMMAND = "python -m ddpm_lib.data"
OFFLINE_HINT = (f"offline: {BUILD_COMMAND} --source local --local DIR, DIR holding the MNIST idx "
                "files (.gz or not) or the course's mnist.zip; or set MNIST_DIR=DIR")
COURSE_REPO = "grandmaeatsadumpling/Generate-Images-Dataset"  # holds mnist.zip
DIGIT_FOLDERS = tuple("0123456789")
MANIFEST = "MANIFEST.txt"  # in the built folder: what the build made, all --overwrite deletes
BUILT_PNG_NAME = re.compile(r"[0-9]{5}\.png")  # a build's PNGs: {index:05d}.png, or a zip's such
MAX_ZIP_MEMBER_BYTES = 64 * 1024  # uncompressed; a 28×28 RGB PNG is at most about 2.5 KB
PNG_END = b"IEND\xaeB`\x82"  # the last chunk of every complete PNG
MNIST_TRAIN_COUNTS = dict(enumerate([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]))
MNIST_IDX_SHA256 = {  # of the uncompressed idx files
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def read_rgb(path: Path, image_size: int, shown_as: Path | None = None) -> np.ndarray:
    """One PNG decoded whole as an H×W×3 uint8 array; ValueError naming the file (as
    ``shown_as`` if given) unless it is a complete ``image_size``² RGB PNG."""
    shown_as = path if shown_as is None else shown_as
    try:
        if not (contents := path.read_bytes()).endswith(PNG_END):
            raise OSError(f"{len(contents)} bytes, truncated or not a PNG")
        with Image.open(io.BytesIO(contents)) as image:
            if image.mode != "RGB" or image.size != (image_size, image_size):
                raise ValueError(f"{shown_as} is {image.width}×{image.height} {image.mode}, "
                                 f"expected {image_size}×{image_size} RGB: rebuild it with "
                                 f"{BUILD_COMMAND}")
            return np.array(image)
    except OSError as error:  # truncated or not an image
        raise ValueError(f"cannot read {shown_as} ({error}): rebuild it with {BUILD_COMMAND}"
                         ) from None


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels {0 … 255} → floats in [-1, 1], the range the UNet learns in."""
    return images.float() / 127.5 - 1.0


def find_pngs(root: Path) -> list[Path]:
    """The PNGs under ``root``, sorted, hidden ones left out. Digit folders ``root/{0..9}`` that
    are symlinks are followed (``rglob`` follows none); FileNotFoundError if there is no PNG."""
    if not root.is_dir():
        state = "is a file, not a folder of PNGs" if root.exists() else "does not exist"
        raise FileNotFoundError(f"{root} {state}: build it with {BUILD_COMMAND}")
    linked = [root / d for d in DIGIT_FOLDERS if (root / d).is_symlink() and (root / d).is_dir()]
    found = {*root.rglob("*.png"), *(path for link in linked for path in link.rglob("*.png"))}
    if not (paths := sorted(path for path in found if not path.name.startswith("."))):
        raise FileNotFoundError(f"{root} holds no PNGs: build it with {BUILD_COMMAND}")
    return paths


def digit_label(root: Path, path: Path) -> int:
    """The digit of the folder ``root/{0..9}/`` that holds ``path`` directly, else -1."""
    in_digit_folder = path.parent.parent == root and path.parent.name in DIGIT_FOLDERS
    return int(path.parent.name) if in_digit_folder else -1


def outside_layout(root: Path, paths: list[Path], labels: list[int]) -> list[Path]:
    """The PNGs outside the layout: with digit folders, those not directly in one of them;
    without (flat), those not directly in ``root``."""
    flat = set(labels) == {-1}
    return [path for path, label in zip(paths, labels, strict=True)
            if (path.parent != root if flat else label < 0)]


class MnistRGBFolder(torch.utils.data.Dataset):
    """The PNGs under ``root`` (digit folders ``root/{0..9}/`` or one flat folder), sorted.
    ``dataset[i]`` is a float 3×H×W image in [-1, 1] and the digit of its folder (-1: flat).
    Digit folders that are symlinks are followed; PNGs outside the layout (beside digit folders:
    in a subfolder, a folder ``10/``, the top; in a flat folder: in any subfolder) are refused,
    naming the first, as ``check_mnist_rgb`` reports them."""

    def __init__(self, root: str | Path, image_size: int = 28) -> None:
        self.root, self.image_size = Path(root), image_size
        self.paths = find_pngs(self.root)
        self.labels = [digit_label(self.root, path) for path in self.paths]
        if stray := outside_layout(self.root, self.paths, self.labels):
            layout = ("digit folders 0..9" if max(self.labels) >= 0
                      else "PNGs directly in it (a flat folder)")
            raise ValueError(f"{self.root} mixes {layout} with {len(stray)} PNGs outside "
                             f"them, first: {stray[0]}: move those out, or rebuild it with "
                             f"{BUILD_COMMAND}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = torch.from_numpy(read_rgb(self.paths[index], self.image_size))
        return to_model_range(pixels.permute(2, 0, 1)), self.labels[index]

    def load_all(self, progress: bool = True) -> torch.Tensor:
        """Every image decoded once, as uint8 N×3×H×W."""
        paths = tqdm(self.paths, desc=f"loading {self.root}", unit="img", disable=not progress)
        arrays = [read_rgb(path, self.image_size) for path in paths]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@dataclass
class DatasetReport:
    """What ``check_mnist_rgb`` found; layout: "digit folders" or "flat"."""

    root: Path
    layout: str
    counts: dict[int, int]
    total: int
    problems: list[str]

    def summary(self) -> str:
        lines = [f"{self.root}: {self.total} PNGs, layout: {self.layout}"]
        if self.counts:
            lines.append("  per digit: " + ", ".join(f"{d}: {n}" for d, n in self.counts.items()))
        lines += [f"  problem: {problem}" for problem in self.problems] or ["  all checks passed"]
        return "\n".join(lines)


def digit_folder_problem(folder: Path, shown_as: Path, count: int, expected: int | str) -> str:
    """What is wrong with the digit folder ``folder`` (named as ``shown_as``) that holds
    ``count`` PNGs where ``expected`` were expected."""
    if folder.is_dir():  # a symlink to a folder included: it is followed
        return f"folder {shown_as} holds {count} PNGs, expected {expected}"
    if folder.is_symlink():
        return f"folder {shown_as} is a symlink to {folder.readlink()}, which is not a folder"
    return f"folder {shown_as} is missing"


def unreadable_pngs(paths: list[Path], shown_as: list[Path], desc: str) -> list[str]:
    """Why each of ``paths`` that is not a complete 28×28 RGB PNG fails, named as ``shown_as``."""
    bad = []
    for path, shown in tqdm(zip(paths, shown_as, strict=True), desc, len(paths), unit="img"):
        try:
            read_rgb(path, 28, shown)
        except ValueError as error:
            bad.append(str(error))
    return bad


def check_mnist_rgb(root: str | Path = DEFAULT_OUT_DIR,
                    expected_counts: dict[int, int] | None = MNIST_TRAIN_COUNTS,
                    *, shown_as: Path | None = None) -> DatasetReport:
    """Check a folder: digit folders holding ``expected_counts`` (None: any; a flat folder: their
    total), no PNG outside that layout, and only 28×28 RGB images, every one decoded. Its paths
    are named under ``shown_as`` in place of ``root`` (``Path()``: relative to it)."""
    root = Path(root)
    paths = find_pngs(root)  # FileNotFoundError if it holds no PNG

    def show(path: Path) -> Path:
        return path if shown_as is None else shown_as / path.relative_to(root)

    labels = [digit_label(root, path) for path in paths]
    expected, flat = expected_counts or {}, set(labels) == {-1}
    counts = {} if flat else {digit: labels.count(digit) for digit in range(10)}
    problems = [f"digit {d}: " + digit_folder_problem(root / str(d), show(root / str(d)), n,
                                                      expected.get(d, ">0"))
                for d, n in counts.items() if not n or expected.get(d, n) != n]
    if flat and expected and len(paths) != sum(expected.values()):
        problems.append(f"{len(paths)} images, expected {sum(expected.values())}")
    stray = outside_layout(root, paths, labels)
    bad = unreadable_pngs(paths, [show(path) for path in paths],
                          "checking" + ("" if shown_as == Path() else f" {show(root)}"))
    problems += [f"{len(stray)} PNGs outside the layout, first: {show(stray[0])}"] if stray else []
    problems += bad[:5] + [f"{len(bad)} PNGs unreadable or not 28×28 RGB in all"] * (len(bad) > 5)
    layout = "flat" if flat else "digit folders"
    return DatasetReport(root, layout, counts, len(paths), problems)


def raise_if_bad(report: DatasetReport) -> DatasetReport:
    """The report when it is ok, else ValueError listing its problems."""
    if report.problems:
        raise ValueError(f"{report.root} failed the check:\n{report.summary()}")
    return report


def zip_pngs(zip_path: Path, archive: zipfile.ZipFile) -> dict[zipfile.ZipInfo, PureWindowsPath]:
    """The archive's PNG members (macOS litter left out), each with its path; ValueError, before
    anything is read, for a member that could land outside (link, absolute, '..') or a PNG far
    larger, uncompressed, than a 28×28 one (declared size, ``ZipInfo.file_size``)."""
    members = {member: PureWindowsPath(member.filename) for member in archive.infolist()}
    for member, path in members.items():  # PureWindowsPath: / and \\, C:, leading slashes
        if stat.S_ISLNK(member.external_attr >> 16) or path.anchor or ".." in path.parts:
            raise ValueError(f"refusing to extract {zip_path}, unsafe: {member.filename!r}")
    pngs = {m: p for m, p in members.items() if p.suffix.lower() == ".png" and not m.is_dir()
            and "__MACOSX" not in p.parts and not p.name.startswith(".")}
    if too_big := next((m for m in pngs if m.file_size > MAX_ZIP_MEMBER_BYTES), None):
        raise ValueError(f"{zip_path}: member {too_big.filename!r} is {too_big.file_size:,} bytes "
                         f"uncompressed, far more than a 28×28 PNG (at most "
                         f"{MAX_ZIP_MEMBER_BYTES:,} here): not the course's mnist.zip")
    return pngs


def extract_png(archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path) -> None:
    """One 28×28 PNG member saved as RGB at ``target``; ValueError naming it otherwise."""
    try:
        with Image.open(io.BytesIO(archive.read(member))) as image:
            if image.size != (28, 28):  # read from its header: not decoded
                raise ValueError(f"{archive.filename}: member {member.filename!r} is "
                                 f"{image.width}×{image.height}, not 28×28: not the course's "
                                 f"mnist.zip")
            image.convert("RGB").save(target, "PNG")
    except (OSError, zipfile.BadZipFile, Image.DecompressionBombError) as error:  # CRC mismatch
        raise ValueError(f"{archive.filename}: member {member.filename!r} is not a readable "
                         f"image ({type(error).__name__})") from None


def extract_zip(out_dir: Path, zip_path: Path) -> None:
    """The zip's PNGs as RGB into ``out_dir``: in digit folders ``{d}/`` if the zip has them,
    else flat. Any member that could land outside (link, absolute, '..') refuses the zip, and
    so does a PNG member too large to be a 28×28 one, before any member is read."""
    if not zipfile.is_zipfile(zip_path):
        raise ValueError(f"{zip_path} is not a zip file (a Git LFS pointer? run git lfs pull)")
    with zipfile.ZipFile(zip_path) as archive:
        pngs = zip_pngs(zip_path, archive)
        flat = not all(path.parent.name in DIGIT_FOLDERS for path in pngs.values())
        targets = {m: out_dir / ("" if flat else p.parent.name) / p.name for m, p in pngs.items()}
        if not pngs or len(set(targets.values())) < len(targets):
            outside = next((m.filename for m, p in pngs.items()
                            if p.parent.name not in DIGIT_FOLDERS), "no PNG")
            raise ValueError(f"{zip_path}: expected PNGs in digit folders 0..9 or one flat folder "
                             f"(outside the digit folders: {outside})")
        for member, target in tqdm(targets.items(), "extracting"):
            target.parent.mkdir(exist_ok=True)
            extract_png(archive, member, target)


def download_course_zip(download_dir: Path) -> Path:
    """The course's mnist.zip via huggingface_hub (size-checked): dataset repo, else model repo."""
    failures = []
    for repo_type in ("dataset", "model"):
        try:
            return Path(hf_hub_download(COURSE_REPO, "mnist.zip", repo_type=repo_type,
                                        local_dir=download_dir))
        except (OSError, EntryNotFoundError) as error:
            failures.append(f"{repo_type} {COURSE_REPO}: {str(error).splitlines()[0]}")
    raise ConnectionError(f"no course mnist.zip: {'; '.join(failures)}\n{OFFLINE_HINT}")


def load_mnist_idx(
    source_dir: str | Path, train: bool = True, download_root: str | Path = DEFAULT_DOWNLOAD_DIR
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's training (or test) set from the idx files in ``source_dir`` (.gz or not), sha256-
    checked, read by torchvision from ``download_root/MNIST/raw``: N×1×28×28 uint8, N labels."""
    names = [name for name in MNIST_IDX_SHA256 if name.startswith("train" if train else "t10k")]
    raw_dir = Path(download_root) / "MNIST" / "raw"
    for name in names:
        path = Path(source_dir) / name
        path = path if path.is_file() else path.with_name(f"{name}.gz")
        if not path.is_file():
            raise FileNotFoundError(f"{source_dir} holds no {name} (.gz or not): name its folder")
        contents = path.read_bytes()
        try:
            contents = gzip.decompress(contents) if path.suffix == ".gz" else contents
        except (OSError, EOFError) as error:
            raise ValueError(f"{path} is not a valid gzip file ({error}): copy it again") from None
        if (actual := hashlib.sha256(contents).hexdigest()) != MNIST_IDX_SHA256[name]:
            raise ValueError(f"{path}: sha256 of the uncompressed contents is {actual}, expected "
                             f"{MNIST_IDX_SHA256[name]}: not MNIST's original, copy that instead")
        raw_dir.mkdir(parents=True, exist_ok=True)
        (raw_dir / f".{name}.partial").write_bytes(contents)  # then renamed: never a half file
        os.replace(raw_dir / f".{name}.partial", raw_dir / name)
    images = read_image_file(str(raw_dir / names[0]))
    return images[:, None], read_label_file(str(raw_dir / names[1]))


def build_into(staging: Path, source: str, local: Path | None, download_dir: Path) -> None:
    """Fill ``staging`` from ``local`` if given, else from ``source`` (see ``build_mnist_rgb``)."""
    if local and local.is_file() and local.suffix.lower() != ".zip":
        raise ValueError(f"--local {local} is a file, not mnist.zip: give the folder that holds "
                         f"the idx files")
    if local and (local.is_file() or (local / "mnist.zip").is_file()):
        return extract_zip(staging, local / "mnist.zip" if local.is_dir() else local)
    if local:
        images, labels = load_mnist_idx(local, True, download_dir)
        images, labels = images[:, 0].numpy(), labels.numpy()
    else:
        if source != "mnist":
            try:
                return extract_zip(staging, download_course_zip(download_dir))
            except (ConnectionError, ValueError) as error:
                if source == "course-zip":
                    raise
                print(f"the course zip did not work ({error}); trying torchvision's MNIST")
                shutil.rmtree(staging)  # what the zip may have left
                staging.mkdir()
        try:  # torchvision md5-checks its download
            mnist = torchvision.datasets.MNIST(download_dir, train=True, download=True)
        except (RuntimeError, OSError) as error:
            message = f"torchvision's MNIST download failed: {error}\n{OFFLINE_HINT}"
            raise ConnectionError(message) from error
        images, labels = mnist.data.numpy(), mnist.targets.numpy()
    pairs = tqdm(zip(images, labels, strict=True), "writing PNGs", total=len(images))
    for index, (gray, label) in enumerate(pairs, start=1):  # one process: a pool was no faster
        (staging / str(label)).mkdir(exist_ok=True)
        Image.fromarray(gray).convert("RGB").save(staging / str(label) / f"{index:05d}.png")


def made_by_a_build(out_dir: Path) -> set[Path]:
    """What in ``out_dir`` a build made: what its manifest lists; in a folder built before
    manifests, its digit folders (not symlinks) and the PNGs named as a build names them
    (``NNNNN.png``) in them or on top. Nothing else (a user's ``3/my_drawing.png``) counts."""
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        return {out_dir / line for line in manifest.read_text().splitlines()}
    folders = {p for p in out_dir.glob("[0-9]") if p.is_dir() and not p.is_symlink()}
    pngs = {path for folder in (out_dir, *folders) for path in folder.glob("*.png")
            if BUILT_PNG_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink()}
    return folders | pngs


def refuse_to_replace(out_dir: Path, overwrite: bool) -> None:
    """FileExistsError unless ``out_dir`` is missing, empty or, with ``overwrite``, holds only what
    a build made (``made_by_a_build``). The error names the first thing that would be lost and
    what to do."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"--out {out_dir} is a file: choose another --out")
    if not overwrite and out_dir.is_dir() and any(out_dir.iterdir()):
        raise FileExistsError(f"--out {out_dir} exists: --check-only checks it; --overwrite "
                              f"deletes the files {BUILD_COMMAND} made there and builds it again")
    made = made_by_a_build(out_dir) if out_dir.is_dir() else set()
    if foreign := next((path for path in sorted(out_dir.rglob("*")) if path not in made), None):
        raise FileExistsError(f"--overwrite would delete {foreign}, which {BUILD_COMMAND} did not "
                              f"make: move it out of {out_dir}, or choose another --out")


def write_manifest(staging: Path, source: str) -> None:
    """List every file and folder the build made in ``staging/MANIFEST.txt``."""
    made = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*"))
    (staging / MANIFEST).write_text("\n".join([f"# {BUILD_COMMAND} {__version__} --source "
                                               f"{source} made these:", MANIFEST, *made, ""]))


def failed_build(out_dir: Path, origin: str, report: DatasetReport) -> ValueError:
    """The error for a build that failed its check: ``out_dir`` as it was, the report's paths
    relative to the build (removed), headed by where the images came from."""
    state = "left as it was" if out_dir.exists() else "not made"
    summary = replace(report, root=Path(origin)).summary()
    return ValueError(f"the build failed its check, so {out_dir} was {state} (paths below are "
                      f"inside the build, now removed):\n{summary}")


def build_mnist_rgb(out_dir: str | Path = DEFAULT_OUT_DIR, source: str = "auto",
                    local: str | Path | None = None, overwrite: bool = False,
                    download_dir: str | Path | None = None) -> DatasetReport:
    """Build ``out_dir`` in a hidden sibling, list its files in its manifest, swap it in by renames
    if it passes its check (else ValueError, ``out_dir`` left as it was); return its check.
    "auto" tries the course zip, then torchvision's MNIST. ``local`` (auto and local: default
    ``$MNIST_DIR``): mnist.zip, or a folder of it or of the idx files.
    Downloads and checked idx copies go to ``download_dir`` (default: ``downloads`` beside it)."""
    out_dir = Path(out_dir)
    download_dir = Path(download_dir) if download_dir else out_dir.parent / "downloads"
    refuse_to_replace(out_dir, overwrite)
    if local and source == "mnist":
        raise ValueError(f"--source mnist would ignore --local {local}: drop one of the two")
    named = "--local" if local else "MNIST_DIR"
    local = local or (os.environ.get("MNIST_DIR") if source in ("auto", "local") else None)
    if source == "local" and not local:
        raise ValueError("--source local needs --local DIR (or the MNIST_DIR variable)")
    if local and not Path(local).exists():
        raise FileNotFoundError(f"{named} {local} does not exist")
    work = out_dir.with_name(f".{out_dir.name}.partial")  # holds the new build, then the old one
    shutil.rmtree(work, ignore_errors=True)  # an interrupted build's
    try:
        (staging := work / "new").mkdir(parents=True)
    except OSError as error:
        raise OSError(f"--out {out_dir} cannot be made ({error.strerror}): pick another") from None
    try:
        build_into(staging, source, Path(local) if local else None, download_dir)
        write_manifest(staging, source)
        report = check_mnist_rgb(staging, shown_as=Path())
        if report.problems:  # a bad build is never installed
            raise failed_build(out_dir, str(local) if local else f"--source {source}", report)
        refuse_to_replace(out_dir, overwrite)  # again: files may have come in meanwhile
        if out_dir.exists():
            out_dir.rename(work / "old")  # renames, so out_dir is never half there
        staging.rename(out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return replace(report, root=out_dir)


def main(argv: list[str] | None = None) -> None:
    """``python -m ddpm_lib.data``: build the mnist_rgb folder, or only check it."""
    parser = argparse.ArgumentParser(prog=BUILD_COMMAND, description=__doc__)
    parser.add_argument("--out", default=str(DEFAULT_OUT_DIR), help="folder to build or check")
    parser.add_argument("--source", choices=("auto", "course-zip", "mnist", "local"),
                        default="auto", help="where images come from")
    parser.add_argument("--local", help="offline: a folder of the MNIST idx files (.gz or not) or "
                        "of mnist.zip, or mnist.zip (auto and local: default $MNIST_DIR)")
    parser.add_argument("--overwrite", action="store_true", help=f"rebuild a folder: deletes "
                        f"what a build made (its {MANIFEST}), refuses if it holds anything else")
    parser.add_argument("--check-only", action="store_true", help="check, build nothing")
    args = parser.parse_args(argv)
    if args.check_only and (args.overwrite or args.local or args.source != "auto"):
        parser.error("--check-only builds nothing: drop --overwrite, --source and --local")
    try:
        report = check_mnist_rgb(args.out) if args.check_only else build_mnist_rgb(
            args.out, args.source, args.local, args.overwrite)
        print(raise_if_bad(report).summary())
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
