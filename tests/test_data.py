"""Tests of ddpm_lib.data on tiny zips, idx files and folders made here; the network is mocked."""

import gzip
import hashlib
import io
import os
import shutil
import stat
import struct
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from PIL import Image

from ddpm_lib import data
from ddpm_lib.data import (
    MnistRGBFolder,
    build_mnist_rgb,
    check_mnist_rgb,
    load_mnist_idx,
    main,
    raise_if_bad,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG-encode an H×W (mode L) or H×W×3 (mode RGB) uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def random_digits(count: int, size: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size), dtype=np.uint8)


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.array(image)


def write_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, contents in members.items():
            archive.writestr(name, contents)
    return path


def digit_folder_members(top: str = "mnist/") -> dict[str, bytes]:
    """Two RGB images per digit in ``{top}{d}/`` plus macOS litter that must be skipped."""
    grays = random_digits(20)
    members = {f"{top}{i % 10}/{i + 1:05d}.png": png_bytes(rgb(g)) for i, g in enumerate(grays)}
    members[f"__MACOSX/{top}0/._00001.png"] = b"resource fork"
    members[f"{top}.DS_Store"] = b"finder"
    return members


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, gz: bool) -> dict[str, str]:
    """Write the two MNIST train files with real idx headers (magic 2051 / 2049, big-endian);
    returns the sha256 of their uncompressed contents by name."""
    folder.mkdir(parents=True, exist_ok=True)
    count, rows, cols = images.shape
    files = {
        "train-images-idx3-ubyte": struct.pack(">IIII", 2051, count, rows, cols) + images.tobytes(),
        "train-labels-idx1-ubyte": struct.pack(">II", 2049, count) + labels.tobytes(),
    }
    for name, contents in files.items():
        path = folder / (f"{name}.gz" if gz else name)
        path.write_bytes(gzip.compress(contents) if gz else contents)
    return {name: hashlib.sha256(contents).hexdigest() for name, contents in files.items()}


@pytest.fixture
def tiny_idx(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, dict[str, str]]:
    """20 random digits as gzipped idx files (not MNIST's: the real checksums refuse them)."""
    images = random_digits(20, seed=1)
    labels = (np.arange(20) * 7 % 10).astype(np.uint8)
    return tmp_path / "idx", images, labels, write_idx(tmp_path / "idx", images, labels, True)


@pytest.fixture
def accept_tiny_idx(tiny_idx, monkeypatch):
    """Make the tiny idx files' checksums the expected ones, so the check runs and passes."""
    monkeypatch.setattr(data, "MNIST_IDX_SHA256", {**data.MNIST_IDX_SHA256, **tiny_idx[3]})
    return tiny_idx


def expect_counts(monkeypatch, counts: dict[int, int]) -> None:
    """Make ``counts`` (a flat folder: their total) what the check expects by default, so a
    build of tiny data passes its check and is installed."""
    monkeypatch.setattr(data.check_mnist_rgb, "__defaults__", (data.DEFAULT_OUT_DIR, counts))


def expect_per_digit(monkeypatch, count: int) -> None:
    """Make ``count`` images per digit what the check expects by default (not MNIST's counts)."""
    expect_counts(monkeypatch, dict.fromkeys(range(10), count))


# --- zips: a local copy of the course's mnist.zip -----------------------------------------------


def test_zip_with_digit_folders_becomes_rgb_pngs_in_digit_folders(tmp_path, monkeypatch):
    expect_counts(monkeypatch, {**dict.fromkeys(range(10), 2), 3: 3})
    members = digit_folder_members()
    gray_member = random_digits(1, seed=5)[0]
    members["mnist/3/00099.png"] = png_bytes(gray_member)  # mode L: must become RGB
    zip_path = write_zip(tmp_path / "mnist.zip", members)

    report = build_mnist_rgb(tmp_path / "mnist_rgb", source="local", local=zip_path)

    out = tmp_path / "mnist_rgb"
    assert report.counts == {**dict.fromkeys(range(10), 2), 3: 3} and report.total == 21
    assert sorted(p.name for p in (out / "3").iterdir()) == ["00004.png", "00014.png", "00099.png"]
    assert np.array_equal(pixels(out / "0" / "00001.png"), rgb(random_digits(20)[0]))
    assert np.array_equal(pixels(out / "3" / "00099.png"), rgb(gray_member))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.zip", "mnist_rgb"]  # no staging


def test_flat_zip_in_a_folder_given_to_local_stays_flat(tmp_path, monkeypatch):
    expect_counts(monkeypatch, {0: 12})  # a flat folder: their total
    grays = random_digits(12)
    members = {f"mnist/{i + 1:05d}.png": png_bytes(rgb(g)) for i, g in enumerate(grays)}
    (tmp_path / "copy").mkdir()
    write_zip(tmp_path / "copy" / "mnist.zip", members)

    report = build_mnist_rgb(tmp_path / "out", source="course-zip", local=tmp_path / "copy")

    assert report.layout == "flat" and report.total == 12 and report.counts == {}
    assert report.problems == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        *(f"{i:05d}.png" for i in range(1, 13)), "MANIFEST.txt"
    ]


def symlink_member() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("mnist/0/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "evil_name",
    ["../evil.png", "mnist/0/../../../evil.png", "ABSOLUTE", "C:/evil.png", "..\\evil.png",
     "SYMLINK"],
)
def test_unsafe_zip_members_are_refused_and_nothing_is_written(tmp_path, evil_name):
    work = tmp_path / "work"
    work.mkdir()
    zip_path = write_zip(work / "mnist.zip", digit_folder_members())
    with zipfile.ZipFile(zip_path, "a") as archive:
        if evil_name == "SYMLINK":
            archive.writestr(symlink_member(), str(tmp_path / "evil.png"))
            evil_name = "mnist/0/link.png"
        else:
            evil_name = str(tmp_path / "evil.png") if evil_name == "ABSOLUTE" else evil_name
            archive.writestr(evil_name, png_bytes(random_digits(1)[0]))

    with pytest.raises(ValueError, match="refusing to extract") as error:
        build_mnist_rgb(work / "mnist_rgb", source="local", local=zip_path)

    assert repr(evil_name) in str(error.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mnist.zip", "work"]


def test_not_a_zip_and_a_corrupt_member_name_the_file_and_leave_nothing(tmp_path):
    pointer = tmp_path / "pointer.zip"  # a Git LFS pointer where the zip should be
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n")
    bad_crc = write_zip(tmp_path / "bad.zip", {"00001.png": b"x" * 64}, zipfile.ZIP_STORED)
    bad_crc.write_bytes(bad_crc.read_bytes().replace(b"x" * 64, b"y" * 64))

    with pytest.raises(ValueError, match="pointer.zip is not a zip file.*git lfs"):
        build_mnist_rgb(tmp_path / "a", source="local", local=pointer)
    with pytest.raises(ValueError, match="bad.zip: member '00001.png'"):
        build_mnist_rgb(tmp_path / "b", source="local", local=bad_crc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip", "pointer.zip"]


def test_a_failed_overwrite_keeps_the_previous_folder(built, tmp_path):
    out = built[0]
    before = tree(out)
    broken = write_zip(tmp_path / "broken.zip", {"0/00001.png": b"not a png"})

    with pytest.raises(ValueError, match="'0/00001.png'"):
        build_mnist_rgb(out, source="local", local=broken, overwrite=True)

    assert tree(out) == before
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_a_zip_member_too_large_for_a_28x28_png_is_refused_before_any_is_read(
    tmp_path, monkeypatch
):
    members = {**digit_folder_members(), "mnist/1/00002.png": bytes(2**20)}  # 1 MiB of zeros
    zip_path = write_zip(tmp_path / "z.zip", members)
    reads = []
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda archive, member: reads.append(member))

    with pytest.raises(ValueError, match="'mnist/1/00002.png' is 1,048,576 bytes") as error:
        build_mnist_rgb(tmp_path / "out", source="local", local=zip_path)

    assert "z.zip" in str(error.value) and "not the course's mnist.zip" in str(error.value)
    assert reads == [] and sorted(p.name for p in tmp_path.iterdir()) == ["z.zip"]


def test_a_zip_png_that_is_not_28x28_is_named(tmp_path):
    members = {**digit_folder_members(), "mnist/3/00099.png": png_bytes(random_digits(1, 32)[0])}

    with pytest.raises(ValueError, match="'mnist/3/00099.png' is 32×32, not 28×28"):
        build_mnist_rgb(tmp_path / "out", source="local",
                        local=write_zip(tmp_path / "z.zip", members))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.zip"]


def test_a_zip_build_that_fails_its_check_installs_nothing_and_names_no_staging_path(tmp_path):
    one_each = {f"mnist/{d}/{d + 1:05d}.png": png_bytes(random_digits(1, seed=d)[0])
                for d in range(10)}
    zip_path = write_zip(tmp_path / "z.zip", one_each)

    with pytest.raises(SystemExit) as failed:
        main(["--out", str(tmp_path / "out_z"), "--source", "local", "--local", str(zip_path)])

    message = failed.value.code
    assert message.startswith("error: ") and f"{tmp_path / 'out_z'} was not made" in message
    assert f"{zip_path}: 10 PNGs" in message and "folder 0 holds 1 PNGs, expected 5923" in message
    assert ".partial" not in message and str(tmp_path / "out_z" / "0") not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.zip"]  # no --out, no staging


# --- downloads (mocked): the course zip through huggingface_hub, MNIST through torchvision ------


def fake_torchvision_mnist(images: np.ndarray, labels: np.ndarray, calls: list):
    def mnist(root, train, download):
        calls.append((Path(root), train, download))
        return SimpleNamespace(data=torch.from_numpy(images), targets=torch.from_numpy(labels))

    return mnist


def test_course_zip_tries_the_dataset_repo_then_the_model_repo(tmp_path, monkeypatch):
    expect_per_digit(monkeypatch, 2)
    source_zip = write_zip(tmp_path / "source.zip", digit_folder_members())
    calls = []

    def hf_hub_download(repo_id, filename, repo_type, local_dir):
        calls.append((repo_id, filename, repo_type, Path(local_dir)))
        if repo_type == "dataset":
            raise EntryNotFoundError("404: no such repository")
        return str(source_zip)

    monkeypatch.setattr(data, "hf_hub_download", hf_hub_download)

    report = build_mnist_rgb(tmp_path / "out", "course-zip", download_dir=tmp_path / "dl")

    repo = "grandmaeatsadumpling/Generate-Images-Dataset"
    assert calls == [(repo, "mnist.zip", kind, tmp_path / "dl") for kind in ("dataset", "model")]
    assert report.counts == dict.fromkeys(range(10), 2)


def test_auto_falls_back_to_torchvision_when_the_course_zip_fails(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot reach huggingface.co")

    images, labels, calls = random_digits(10, seed=3), np.arange(10, dtype=np.int64), []
    expect_per_digit(monkeypatch, 1)
    monkeypatch.delenv("MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "hf_hub_download", offline)
    fake_mnist = fake_torchvision_mnist(images, labels, calls)
    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)

    report = build_mnist_rgb(tmp_path / "out", download_dir=tmp_path / "dl")

    assert calls == [(tmp_path / "dl", True, True)]  # download=True: torchvision md5-checks
    assert report.counts == dict.fromkeys(range(10), 1)
    assert np.array_equal(pixels(tmp_path / "out" / "7" / "00008.png"), rgb(images[7]))


def test_no_internet_at_all_says_how_to_build_offline(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot reach huggingface.co")

    def no_mirror(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.delenv("MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "hf_hub_download", offline)
    monkeypatch.setattr(torchvision.datasets, "MNIST", no_mirror)

    with pytest.raises(ConnectionError, match="torchvision") as error:
        build_mnist_rgb(tmp_path / "out", download_dir=tmp_path / "dl")
    with pytest.raises(ConnectionError, match="mnist.zip") as course_error:
        build_mnist_rgb(tmp_path / "out", "course-zip", download_dir=tmp_path / "dl")

    for message in (str(error.value), str(course_error.value)):
        assert "--local DIR" in message and "MNIST_DIR" in message
    assert list(tmp_path.iterdir()) == []


# --- idx files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_local_idx_files_become_rgb_pngs_named_by_index(tmp_path, monkeypatch, gz):
    expect_per_digit(monkeypatch, 2)
    images = random_digits(20, seed=2)
    labels = (np.arange(20) * 3 % 10).astype(np.uint8)
    checksums = write_idx(tmp_path / "idx", images, labels, gz)
    monkeypatch.setattr(data, "MNIST_IDX_SHA256", {**data.MNIST_IDX_SHA256, **checksums})

    report = build_mnist_rgb(tmp_path / "out", "local", tmp_path / "idx", download_dir=tmp_path)

    assert report.counts == {d: Counter(labels.tolist())[d] for d in range(10)}
    for index, (gray, label) in enumerate(zip(images, labels, strict=True), start=1):
        assert np.array_equal(pixels(tmp_path / "out" / str(label) / f"{index:05d}.png"), rgb(gray))


def test_idx_checksum_mismatch_names_the_file_and_writes_nothing(tiny_idx, tmp_path):
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: sha256") as error:
        build_mnist_rgb(tmp_path / "out", "local", tiny_idx[0], download_dir=tmp_path / "dl")

    assert data.MNIST_IDX_SHA256["train-images-idx3-ubyte"] in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_missing_idx_file_and_missing_folder_are_named(accept_tiny_idx, tmp_path):
    source = accept_tiny_idx[0]
    (source / "train-labels-idx1-ubyte.gz").unlink()

    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        build_mnist_rgb(tmp_path / "out", "local", source, download_dir=tmp_path / "dl")
    with pytest.raises(FileNotFoundError, match="--local .*nowhere"):
        build_mnist_rgb(tmp_path / "out", "local", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist_idx(source, train=False, download_root=tmp_path / "dl")


def test_a_truncated_gzip_is_named(accept_tiny_idx, tmp_path):
    source = accept_tiny_idx[0]
    gz = source / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:30])

    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is not a valid gzip"):
        build_mnist_rgb(tmp_path / "out", "local", source, download_dir=tmp_path / "dl")


def test_auto_uses_mnist_dir_from_the_environment(accept_tiny_idx, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(accept_tiny_idx[0]))
    expect_per_digit(monkeypatch, 2)
    monkeypatch.setattr(data, "hf_hub_download", None)  # the network must not be used

    report = build_mnist_rgb(tmp_path / "out", download_dir=tmp_path / "dl")

    assert report.total == 20


def test_load_mnist_idx_returns_the_images_and_labels(accept_tiny_idx, tmp_path):
    source, images, labels, _ = accept_tiny_idx

    loaded_images, loaded_labels = load_mnist_idx(source, download_root=tmp_path / "dl")

    assert loaded_images.shape == (20, 1, 28, 28) and loaded_images.dtype == torch.uint8
    assert np.array_equal(loaded_images[:, 0].numpy(), images)
    assert loaded_labels.tolist() == labels.tolist()


# --- --overwrite, --out and leftovers -----------------------------------------------------------


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its contents, by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def built(accept_tiny_idx, tmp_path, monkeypatch):
    """A folder built from the tiny idx files, and the arguments that build it again (the check
    expects their 2 images per digit)."""
    expect_per_digit(monkeypatch, 2)
    out = tmp_path / "mnist_rgb"
    build_mnist_rgb(out, "local", accept_tiny_idx[0], download_dir=tmp_path / "dl")
    return out, ["--out", str(out), "--source", "local", "--local", str(accept_tiny_idx[0])]


def test_a_build_lists_what_it_made_in_its_manifest(built):
    out = built[0]

    header, *listed = (out / "MANIFEST.txt").read_text().splitlines()

    assert header.startswith("# python -m ddpm_lib.data 0.1.0 --source local")
    assert sorted(listed) == sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert len(listed) == 1 + 10 + 20  # itself, the digit folders, the PNGs


def test_existing_folder_needs_overwrite_which_replaces_the_builds_files(
    built, accept_tiny_idx, tmp_path, monkeypatch
):
    out, args = built
    monkeypatch.chdir(tmp_path)  # the default download folder is relative: data/downloads
    expect_per_digit(monkeypatch, 2)
    (out / "7" / "00002.png").write_bytes(b"")  # tiny_idx's second image is a 7

    with pytest.raises(SystemExit) as refused:
        main(args)
    assert "--overwrite" in refused.value.code and "--check-only" in refused.value.code
    assert (out / "7" / "00002.png").read_bytes() == b""
    main([*args, "--overwrite"])

    assert np.array_equal(pixels(out / "7" / "00002.png"), rgb(accept_tiny_idx[1][1]))
    assert len(tree(out)) == 21 and not (tmp_path / ".mnist_rgb.partial").exists()


@pytest.mark.parametrize(
    ("users", "named"),
    [("notes.txt", "notes.txt"), ("3/mine.png", "3/mine.png"), ("old/a.png", "old"),
     (".DS_Store", ".DS_Store")],
)
def test_overwrite_refuses_before_building_when_the_folder_holds_a_users_file(
    built, monkeypatch, users, named
):
    out, args = built
    (out / users).parent.mkdir(exist_ok=True)
    (out / users).write_text("mine")
    before = tree(out)
    monkeypatch.setattr(data, "build_into", None)  # refused before any building

    with pytest.raises(SystemExit) as refused:
        main([*args, "--overwrite"])

    assert str(out / named) + "," in refused.value.code and "\n" not in refused.value.code
    assert tree(out) == before


@pytest.mark.parametrize(
    ("users", "named"),
    [("3/my_drawing.png", "3/my_drawing.png"), ("mine.png", "mine.png"), ("3/1.png", "3/1.png"),
     ("10/00001.png", "10"), ("0/00001.PNG", "0/00001.PNG")],
)
def test_overwrite_without_a_manifest_keeps_pngs_a_build_would_not_have_named(
    built, users, named
):
    out, args = built
    (out / "MANIFEST.txt").unlink()  # as built before manifests
    (out / users).parent.mkdir(exist_ok=True)
    (out / users).write_bytes(b"mine")
    before = tree(out)

    with pytest.raises(SystemExit) as refused:
        main([*args, "--overwrite"])

    assert refused.value.code.startswith("error: --overwrite would delete ")
    assert str(out / named) + "," in refused.value.code and "\n" not in refused.value.code
    assert tree(out) == before


def test_a_folder_of_pngs_not_named_as_a_build_names_them_is_not_overwritten(
    accept_tiny_idx, tiny_mnist_rgb, tmp_path
):
    before = tree(tiny_mnist_rgb)  # {digit}/{digit}_{i:05d}.png: a user's, not a build's

    with pytest.raises(FileExistsError, match="--overwrite would delete .*0_00000.png"):
        build_mnist_rgb(tiny_mnist_rgb, "local", accept_tiny_idx[0], overwrite=True,
                        download_dir=tmp_path / "dl")
    assert tree(tiny_mnist_rgb) == before


def test_a_folder_built_before_manifests_is_replaced_unless_it_holds_other_files(
    built, accept_tiny_idx, tmp_path
):
    out = built[0]
    (out / "MANIFEST.txt").unlink()  # as built before manifests: {digit}/{index:05d}.png
    (out / "7" / "00002.png").write_bytes(b"old")
    local = dict(source="local", local=accept_tiny_idx[0], download_dir=tmp_path / "dl")
    (out / "README.md").write_text("mine")

    with pytest.raises(FileExistsError, match="README.md"):
        build_mnist_rgb(out, overwrite=True, **local)
    assert len(list(out.rglob("*.png"))) == 20
    (out / "README.md").unlink()
    report = build_mnist_rgb(out, overwrite=True, **local)

    assert report.total == 20 and (out / "7" / "00002.png").read_bytes() != b"old"


def test_overwrite_deletes_a_digit_folder_symlink_not_what_it_points_to(built, tmp_path):
    out, args = built
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(out / "5", elsewhere)
    shutil.rmtree(out / "5")
    (out / "5").symlink_to(elsewhere, target_is_directory=True)
    kept = tree(elsewhere)

    main([*args, "--overwrite"])

    assert not (out / "5").is_symlink() and len(list((out / "5").iterdir())) == 2
    assert tree(elsewhere) == kept


def test_an_out_that_is_a_file_or_cannot_be_written_is_named(accept_tiny_idx, tmp_path):
    local = dict(source="local", local=accept_tiny_idx[0], download_dir=tmp_path / "dl")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")

    with pytest.raises(FileExistsError, match="--out .*a_file is a file"):
        build_mnist_rgb(a_file, overwrite=True, **local)
    with pytest.raises(OSError, match="--out .*a_file/mnist_rgb cannot be made"):
        build_mnist_rgb(a_file / "mnist_rgb", **local)
    assert a_file.read_text() == "mine"


def test_an_interrupted_builds_leftovers_are_removed_by_the_next(accept_tiny_idx, tmp_path,
                                                                 monkeypatch):
    expect_per_digit(monkeypatch, 2)
    for leftover in (".out.partial/new/0/00001.png", "dl/MNIST/raw/.train-images-idx3-"
                     "ubyte.partial", ".out.partial/old/MANIFEST.txt"):
        (tmp_path / leftover).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / leftover).write_bytes(b"half")

    build_mnist_rgb(tmp_path / "out", "local", accept_tiny_idx[0], download_dir=tmp_path / "dl")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["dl", "idx", "out"]
    raw = sorted(p.name for p in (tmp_path / "dl" / "MNIST" / "raw").iterdir())
    assert raw == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]


# --- the Dataset ---------------------------------------------------------------------------------


def test_dataset_gives_images_in_minus_one_to_one_with_folder_labels(tiny_mnist_rgb):
    dataset = MnistRGBFolder(tiny_mnist_rgb, image_size=28)

    image, label = dataset[13]
    everything = dataset.load_all(progress=False)

    assert len(dataset) == 40 and dataset.labels == [d for d in range(10) for _ in range(4)]
    assert image.shape == (3, 28, 28) and image.dtype == torch.float32 and label == 3
    assert image.min() == -1.0 and 0.0 < image.max() <= 1.0
    assert everything.shape == (40, 3, 28, 28) and everything.dtype == torch.uint8
    assert torch.allclose(everything[13].float() / 127.5 - 1.0, image)


def test_flat_folder_has_labels_minus_one(tmp_path):
    for index, gray in enumerate(random_digits(3), start=1):
        Image.fromarray(rgb(gray)).save(tmp_path / f"{index:05d}.png")

    dataset = MnistRGBFolder(tmp_path)

    assert dataset.labels == [-1, -1, -1] and dataset[0][1] == -1


@pytest.mark.parametrize(
    ("pixels_", "found"),
    [(rgb(random_digits(1, size=32)[0]), "32×32 RGB"), (random_digits(1)[0], "28×28 L")],
)
def test_wrong_size_or_mode_names_the_file(tiny_mnist_rgb, pixels_, found):
    bad = tiny_mnist_rgb / "3" / "3_00001.png"
    Image.fromarray(pixels_).save(bad)
    dataset = MnistRGBFolder(tiny_mnist_rgb, image_size=28)

    with pytest.raises(ValueError, match=f"3_00001.png is {found}") as error:
        dataset[dataset.paths.index(bad)]
    assert "python -m ddpm_lib.data" in str(error.value)
    with pytest.raises(ValueError, match=f"3_00001.png is {found}"):
        dataset.load_all(progress=False)


def test_missing_or_empty_root_says_how_to_build_it(tmp_path):
    (tmp_path / "a_file").write_text("mine")
    for root, fact in [(tmp_path / "nowhere", "does not exist"), (tmp_path / "a_file", "is a file"),
                       (tmp_path, "holds no PNGs")]:
        with pytest.raises(FileNotFoundError, match="python -m ddpm_lib.data") as error:
            MnistRGBFolder(root)
        assert f"{root} {fact}" in str(error.value)


def test_a_flat_folder_with_pngs_in_subfolders_is_refused_as_the_check_does(tmp_path):
    for name in ("00001.png", "00002.png", "more/00003.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(rgb(random_digits(1)[0])).save(tmp_path / name)
    with pytest.raises(ValueError, match=r"mixes PNGs directly in it .* first: .*more/00003.png"):
        MnistRGBFolder(tmp_path)
    assert "1 PNGs outside the layout" in " ".join(check_mnist_rgb(tmp_path, None).problems)
    (tmp_path / "more" / "00003.png").unlink()
    assert len(MnistRGBFolder(tmp_path)) == 2


@pytest.mark.parametrize("stray", ["3/sub/x.png", "10/x.png", "x.png"])
def test_dataset_refuses_digit_folders_beside_pngs_elsewhere_as_the_check_does(
    tiny_mnist_rgb, stray
):
    (tiny_mnist_rgb / stray).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb(random_digits(1)[0])).save(tiny_mnist_rgb / stray)

    with pytest.raises(ValueError, match="mixes digit folders 0..9 with 1 PNGs") as error:
        MnistRGBFolder(tiny_mnist_rgb)
    problems = check_mnist_rgb(tiny_mnist_rgb, expected_counts=dict.fromkeys(range(10), 4)).problems

    assert f"first: {tiny_mnist_rgb / stray}:" in str(error.value)
    assert problems == [f"1 PNGs outside the layout, first: {tiny_mnist_rgb / stray}"]


def test_a_digit_folder_that_is_a_symlink_is_followed_by_the_check_and_the_dataset(
    tiny_mnist_rgb, tmp_path, monkeypatch, capsys
):
    expect_per_digit(monkeypatch, 4)
    elsewhere = tmp_path / "elsewhere" / "5"
    elsewhere.parent.mkdir()
    (tiny_mnist_rgb / "5").rename(elsewhere)
    (tiny_mnist_rgb / "5").symlink_to(elsewhere, target_is_directory=True)

    main(["--check-only", "--out", str(tiny_mnist_rgb)])  # passes: exit status 0
    dataset = MnistRGBFolder(tiny_mnist_rgb)

    assert "5: 4," in capsys.readouterr().out
    assert dataset.labels.count(5) == 4 and dataset.load_all(progress=False).shape[0] == 40
    assert dataset.paths[20] == tiny_mnist_rgb / "5" / "5_00000.png"


def test_a_digit_folder_symlink_to_nothing_is_named_as_such(tiny_mnist_rgb, tmp_path):
    shutil.rmtree(tiny_mnist_rgb / "5")
    (tiny_mnist_rgb / "5").symlink_to(tmp_path / "gone", target_is_directory=True)

    with pytest.raises(SystemExit) as failed:
        main(["--check-only", "--out", str(tiny_mnist_rgb)])

    fact = f"folder {tiny_mnist_rgb / '5'} is a symlink to {tmp_path / 'gone'}, which is not"
    assert failed.value.code.startswith("error: ") and fact in failed.value.code
    assert 5 not in MnistRGBFolder(tiny_mnist_rgb).labels  # training: "folder 5/ is missing"


# --- check_mnist_rgb -----------------------------------------------------------------------------


def test_check_passes_a_good_folder(tiny_mnist_rgb):
    report = check_mnist_rgb(tiny_mnist_rgb, expected_counts=dict.fromkeys(range(10), 4))

    assert report.problems == [] and report.total == 40 and report.layout == "digit folders"
    assert raise_if_bad(report) is report


def test_check_reports_each_problem(tiny_mnist_rgb):
    for path in (tiny_mnist_rgb / "7").iterdir():
        path.unlink()
    (tiny_mnist_rgb / "3" / "3_00000.png").unlink()
    Image.fromarray(rgb(random_digits(1, size=32)[0])).save(tiny_mnist_rgb / "5" / "5_00002.png")
    Image.fromarray(random_digits(1)[0]).save(tiny_mnist_rgb / "6" / "6_00001.png")
    (tiny_mnist_rgb / "8" / "8_00003.png").write_bytes(b"not a png")
    (tiny_mnist_rgb / "extra").mkdir()
    Image.fromarray(rgb(random_digits(1)[0])).save(tiny_mnist_rgb / "extra" / "stray.png")

    report = check_mnist_rgb(tiny_mnist_rgb, expected_counts=dict.fromkeys(range(10), 4))

    digit3, digit7, stray, *bad = report.problems
    assert "digit 3" in digit3 and "3 PNGs" in digit3
    assert "digit 7" in digit7 and str(tiny_mnist_rgb / "7") in digit7
    assert "stray.png" in stray
    for name, line in zip(["5/5_00002.png", "6/6_00001.png", "8/8_00003.png"], bad, strict=True):
        assert str(tiny_mnist_rgb / name) in line
    with pytest.raises(ValueError, match="digit 3"):
        raise_if_bad(report)


def test_check_names_five_bad_pngs_then_counts_them(tiny_mnist_rgb):
    for path in sorted((tiny_mnist_rgb / "2").iterdir()) + sorted((tiny_mnist_rgb / "4").iterdir()):
        path.write_bytes(b"")

    problems = check_mnist_rgb(tiny_mnist_rgb, expected_counts=dict.fromkeys(range(10), 4)).problems

    named = [f"2/2_0000{i}.png" for i in range(4)] + ["4/4_00000.png"]
    for name, line in zip(named, problems[:5], strict=True):
        assert str(tiny_mnist_rgb / name) in line
    assert problems[5].startswith("8 PNGs") and len(problems) == 6


def damage(png: bytes, how: str) -> bytes:
    """A PNG's bytes cut or corrupted; "pixels" keeps the length, header and end chunk."""
    idat = png.index(b"IDAT")
    return {"half": png[: len(png) // 2], "no end chunk": png[:-12], "0 bytes": b"",
            "pixels": png[: idat + 10] + bytes(40) + png[idat + 50 :]}[how]


@pytest.mark.parametrize("how", ["half", "no end chunk", "0 bytes", "pixels", "32×32"])
def test_check_only_names_a_damaged_png_and_exits_non_zero(tiny_mnist_rgb, monkeypatch, how):
    expect_per_digit(monkeypatch, 4)
    main(["--check-only", "--out", str(tiny_mnist_rgb)])  # a good folder passes: exit status 0
    bad = tiny_mnist_rgb / "5" / "5_00002.png"
    if how == "32×32":
        Image.fromarray(rgb(random_digits(1, size=32)[0])).save(bad)
    else:
        bad.write_bytes(damage(bad.read_bytes(), how))

    with pytest.raises(SystemExit) as failed:
        main(["--check-only", "--out", str(tiny_mnist_rgb)])

    assert failed.value.code.startswith("error: ") and str(bad) in failed.value.code


@pytest.mark.parametrize("missing", [False, True])
def test_check_only_names_an_empty_or_missing_digit_folder(tiny_mnist_rgb, monkeypatch, missing):
    expect_per_digit(monkeypatch, 4)
    for path in (tiny_mnist_rgb / "7").iterdir():
        path.unlink()
    if missing:
        (tiny_mnist_rgb / "7").rmdir()

    with pytest.raises(SystemExit) as failed:
        main(["--check-only", "--out", str(tiny_mnist_rgb)])

    fact = f"{tiny_mnist_rgb / '7'} " + ("is missing" if missing else "holds 0 PNGs")
    assert fact in failed.value.code and "digit 6" not in failed.value.code


def test_check_reports_missing_folder_and_mnist_counts(tmp_path, tiny_mnist_rgb):
    with pytest.raises(FileNotFoundError, match="nowhere.*python -m ddpm_lib.data"):
        check_mnist_rgb(tmp_path / "nowhere")
    report = check_mnist_rgb(tiny_mnist_rgb)  # the default expects MNIST's counts
    assert len(report.problems) == 10 and "5923" in report.problems[0]


# --- command line --------------------------------------------------------------------------------


def test_cli_prints_one_error_line_and_exits_non_zero(
    tmp_path, tiny_idx, tiny_mnist_rgb, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the default download folder is relative: data/downloads
    monkeypatch.delenv("MNIST_DIR", raising=False)
    with pytest.raises(SystemExit) as missing:
        main(["--check-only", "--out", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as bad_counts:
        main(["--check-only", "--out", str(tiny_mnist_rgb)])
    with pytest.raises(SystemExit) as bad_checksum:
        main(["--out", str(tmp_path / "out"), "--source", "local", "--local", str(tiny_idx[0])])
    with pytest.raises(SystemExit) as no_local:
        main(["--out", str(tmp_path / "out"), "--source", "local", "--local", ""])
    with pytest.raises(SystemExit) as ignored_local:
        main(["--out", str(tmp_path / "out"), "--source", "mnist", "--local", str(tiny_idx[0])])

    for exit_, fact in [(missing, "nowhere"), (bad_counts, "5949"),
                        (bad_checksum, "train-images-idx3-ubyte.gz"), (no_local, "--local"),
                        (ignored_local, "--local")]:
        assert str(exit_.value.code).startswith("error: ") and fact in str(exit_.value.code)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_build_flags_with_check_only(tiny_mnist_rgb, capsys):
    with pytest.raises(SystemExit) as refused:
        main(["--check-only", "--overwrite", "--out", str(tiny_mnist_rgb)])

    assert refused.value.code == 2 and "--check-only" in capsys.readouterr().err


def test_cli_as_a_process_exits_1_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ddpm_lib.data", "--local", str(tmp_path / "nowhere")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr
    assert "nowhere" in result.stderr


# --- the real data -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.real_mnist
def test_real_mnist_builds_the_full_folder_offline(mnist_dir, tmp_path, capsys):
    started = time.perf_counter()
    main(["--out", str(tmp_path / "mnist_rgb"), "--source", "local", "--local", str(mnist_dir)])
    built = time.perf_counter() - started
    main(["--out", str(tmp_path / "mnist_rgb"), "--check-only"])
    with capsys.disabled():
        print(f"built in {built:.1f} s")

    printed = capsys.readouterr().out  # both check MNIST's counts per digit (the default)
    assert printed.count("all checks passed") == 2 and printed.count("60000 PNGs") == 2
    raw_dir = tmp_path / "downloads" / "MNIST" / "raw"  # the checked idx files, beside --out
    raw = (raw_dir / "train-images-idx3-ubyte").read_bytes()
    first_image = np.frombuffer(raw, np.uint8, count=784, offset=16).reshape(28, 28)
    assert np.array_equal(pixels(tmp_path / "mnist_rgb" / "5" / "00001.png"), rgb(first_image))


def test_a_build_that_fails_its_check_leaves_the_old_folder_as_it_was(built, tmp_path):
    out = built[0]
    before = tree(out)
    few = {f"mnist/{d}/0000{d}.png": png_bytes(random_digits(1, seed=d)[0]) for d in range(3)}
    with pytest.raises(ValueError, match="left as it was(.|\n)*digit 5"):
        build_mnist_rgb(out, source="local", overwrite=True,
                        local=write_zip(tmp_path / "few.zip", few))
    assert tree(out) == before


def test_a_missing_mnist_dir_is_named_as_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="^MNIST_DIR .*nowhere does not exist"):
        build_mnist_rgb(tmp_path / "out", source="local")


def test_an_idx_file_given_as_local_asks_for_its_folder(tiny_idx, tmp_path):
    gz = next(Path(tiny_idx[0]).glob("train-images*"))
    with pytest.raises(ValueError, match="is a file, not mnist.zip: give the folder"):
        build_mnist_rgb(tmp_path / "out", source="local", local=gz)


def test_a_zip_member_that_is_no_image_is_named_plainly(tmp_path):
    members = {**digit_folder_members(), "mnist/3/garbage.png": b"not a png"}
    with pytest.raises(ValueError, match=r"'mnist/3/garbage.png' is not a readable image "
                                         r"\(UnidentifiedImageError\)$"):
        build_mnist_rgb(tmp_path / "out", source="local",
                        local=write_zip(tmp_path / "mnist.zip", members))


def test_checked_idx_copies_land_beside_out_not_in_the_working_folder(accept_tiny_idx, tmp_path,
                                                                      monkeypatch):
    expect_per_digit(monkeypatch, 2)
    monkeypatch.chdir(tmp_path)
    build_mnist_rgb(tmp_path / "elsewhere" / "mnist_rgb", "local", accept_tiny_idx[0])
    assert (tmp_path / "elsewhere" / "downloads" / "MNIST" / "raw").is_dir()
    assert not (tmp_path / "data").exists()
