"""Tests of ddpm_lib.data on tiny synthetic zips, idx files and folders made here."""

import gzip
import hashlib
import io
import os
import re
import stat
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_lib import data
from ddpm_lib.data import (
    MNIST_TRAIN_COUNTS,
    DatasetCheckError,
    DownloadError,
    MnistRGBFolder,
    build_from_course_zip,
    build_from_local_idx,
    build_mnist_rgb,
    check_mnist_rgb,
    download_course_zip,
    main,
    raise_if_bad,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TEN_TWOS = dict.fromkeys(range(10), 2)


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG-encode an H×W (mode L) or H×W×3 (mode RGB) uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def random_digits(count: int, size: int = 28, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size), dtype=np.uint8)


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


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


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, gz: bool) -> dict[str, bytes]:
    """Write the two MNIST train files with real idx headers (magic 2051 / 2049, big-endian);
    returns their uncompressed contents by name."""
    folder.mkdir(parents=True, exist_ok=True)
    count, rows, cols = images.shape
    files = {
        "train-images-idx3-ubyte": struct.pack(">IIII", 2051, count, rows, cols) + images.tobytes(),
        "train-labels-idx1-ubyte": struct.pack(">II", 2049, count) + labels.tobytes(),
    }
    for name, contents in files.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(contents))
        else:
            (folder / name).write_bytes(contents)
    return files


@pytest.fixture
def tiny_idx(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    images = random_digits(20, seed=1)
    labels = (np.arange(20) * 7 % 10).astype(np.uint8)
    write_idx(tmp_path / "idx", images, labels, gz=True)
    return tmp_path / "idx", images, labels


# --- the course zip ------------------------------------------------------------------------------


def test_zip_with_digit_folders_under_a_top_folder(tmp_path, capsys):
    members = digit_folder_members()
    gray_member = random_digits(1, seed=5)[0]
    members["mnist/3/00099.png"] = png_bytes(gray_member)  # mode L: must become RGB
    zip_path = write_zip(tmp_path / "mnist.zip", members)
    out = tmp_path / "mnist_rgb"
    expected = {**TEN_TWOS, 3: 3}

    report = build_from_course_zip(out, zip_path=zip_path, expected_counts=expected)

    printed = capsys.readouterr().out
    assert "found 21 PNGs in digit folders under mnist/" in printed
    assert "converted 1 images to RGB" in printed
    assert report.ok, report.summary()
    assert report.layout == "digit folders" and report.counts == expected
    assert sorted(p.name for p in (out / "3").iterdir()) == ["00004.png", "00014.png", "00099.png"]
    assert (out / "0" / "00001.png").read_bytes() == members["mnist/0/00001.png"]
    with Image.open(out / "3" / "00099.png") as converted:
        assert converted.mode == "RGB"
        assert np.array_equal(np.array(converted), rgb(gray_member))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.zip", "mnist_rgb"]


def test_flat_zip_stays_flat_and_says_it_has_no_labels(tmp_path, capsys):
    grays = random_digits(12)
    members = {f"mnist/{i + 1:05d}.png": png_bytes(rgb(g)) for i, g in enumerate(grays)}
    zip_path = write_zip(tmp_path / "mnist.zip", members)
    out = tmp_path / "mnist_rgb"

    report = build_from_course_zip(out, zip_path=zip_path, expected_counts=None)

    printed = capsys.readouterr().out
    assert "found 12 PNGs with no digit folders under mnist/" in printed
    assert "no labels" in printed and "--source mnist" in printed
    assert report.ok and report.layout == "flat" and report.total == 12
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(1, 13)]
    assert "per-digit counts not checked" in report.summary()


def test_local_zip_goes_through_build_mnist_rgb(tmp_path):
    members = {f"{i + 1:05d}.png": png_bytes(rgb(g)) for i, g in enumerate(random_digits(3))}
    zip_path = write_zip(tmp_path / "copy.zip", members)

    report = build_mnist_rgb(tmp_path / "out", source="local", local=zip_path)

    assert report.layout == "flat" and report.total == 3
    assert report.problems == ["3 images, expected 60000"]


def symlink_member() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("mnist/0/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "evil_name", ["../evil.png", "mnist/0/../../../evil.png", "ABSOLUTE", "C:/evil.png", "SYMLINK"]
)
def test_unsafe_zip_members_are_refused_and_nothing_is_written(tmp_path, evil_name):
    work = tmp_path / "work"
    work.mkdir()
    members = digit_folder_members()
    zip_path = write_zip(work / "mnist.zip", members)
    with zipfile.ZipFile(zip_path, "a") as archive:
        if evil_name == "SYMLINK":
            archive.writestr(symlink_member(), str(tmp_path / "evil.png"))
            evil_name = "mnist/0/link.png"
        else:
            evil_name = str(tmp_path / "evil.png") if evil_name == "ABSOLUTE" else evil_name
            archive.writestr(evil_name, png_bytes(random_digits(1)[0]))

    with pytest.raises(ValueError, match="refusing to extract") as error:
        build_from_course_zip(work / "mnist_rgb", zip_path=zip_path, expected_counts=None)

    assert repr(evil_name) in str(error.value)
    assert not (tmp_path / "evil.png").exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mnist.zip", "work"]


def test_not_a_zip_and_lfs_pointer_and_bad_crc_are_clear_errors(tmp_path):
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"<html>404</html>")
    pointer = tmp_path / "pointer.zip"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n")
    bad_crc = write_zip(tmp_path / "bad.zip", {"00001.png": b"x" * 64}, zipfile.ZIP_STORED)
    contents = bad_crc.read_bytes()
    bad_crc.write_bytes(contents.replace(b"x" * 64, b"y" * 64))

    with pytest.raises(ValueError, match="not a zip file"):
        build_from_course_zip(tmp_path / "a", zip_path=not_zip)
    with pytest.raises(ValueError, match="Git LFS pointer, not the zip: install git-lfs"):
        build_from_course_zip(tmp_path / "b", zip_path=pointer)
    with pytest.raises(ValueError, match="00001.png fails its CRC check"):
        build_from_course_zip(tmp_path / "c", zip_path=bad_crc)
    assert not any((tmp_path / name).exists() for name in "abc")


def test_download_falls_back_to_the_next_url_and_relies_on_crcs(tmp_path, capsys):
    zip_path = write_zip(tmp_path / "source.zip", digit_folder_members())
    urls = ((tmp_path / "missing.zip").as_uri(), zip_path.as_uri())

    downloaded = download_course_zip(tmp_path / "downloads", urls=urls)

    assert downloaded == tmp_path / "downloads" / "mnist.zip"
    assert downloaded.read_bytes() == zip_path.read_bytes()
    assert "sent no checksum" in capsys.readouterr().out


def test_downloaded_lfs_pointer_is_not_kept(tmp_path):
    pointer = tmp_path / "pointer"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\n")

    with pytest.raises(ValueError, match="Git LFS pointer"):
        download_course_zip(tmp_path / "downloads", urls=(pointer.as_uri(),))
    assert list((tmp_path / "downloads").iterdir()) == []


def test_all_downloads_failing_raises_download_error_with_offline_hint(tmp_path):
    with pytest.raises(DownloadError, match="--local DIR") as error:
        download_course_zip(tmp_path / "downloads", urls=((tmp_path / "nope.zip").as_uri(),))
    assert "nope.zip" in str(error.value) and "MNIST_DIR" in str(error.value)


@pytest.fixture
def hugging_face_like_server():
    """Serve ``/resolve/mnist.zip`` as a 302 carrying ``X-Linked-Etag``/``-Size`` (as Hugging Face
    does) that redirects to ``/cdn/mnist.zip``; set ``server.body`` and ``server.sha256``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path == "/resolve/mnist.zip":
                self.send_response(302)
                self.send_header("Location", "/cdn/mnist.zip")
                self.send_header("X-Linked-Etag", f'"{self.server.sha256}"')
                self.send_header("X-Linked-Size", str(len(self.server.body)))
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("Content-Length", str(len(self.server.body)))
                self.end_headers()
                self.wfile.write(self.server.body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("announced", ["right", "wrong"])
def test_download_checks_the_sha256_hugging_face_announces(
    tmp_path, capsys, hugging_face_like_server, announced
):
    body = write_zip(tmp_path / "source.zip", digit_folder_members()).read_bytes()
    real_sha256 = hashlib.sha256(body).hexdigest()
    hugging_face_like_server.body = body
    hugging_face_like_server.sha256 = real_sha256 if announced == "right" else "0" * 64
    url = f"http://127.0.0.1:{hugging_face_like_server.server_port}/resolve/mnist.zip"
    downloads = tmp_path / "downloads"

    if announced == "right":
        assert download_course_zip(downloads, urls=(url,)).read_bytes() == body
        assert f"sha256 verified: {real_sha256}" in capsys.readouterr().out
    else:
        with pytest.raises(ValueError, match=f"sha256 {real_sha256} does not match.*{'0' * 64}"):
            download_course_zip(downloads, urls=(url,))
        assert list(downloads.iterdir()) == []


# --- idx files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("verify", [False, True])
def test_local_idx_files_become_rgb_pngs_in_digit_folders(tmp_path, gz, verify):
    images = random_digits(20, seed=2)
    labels = (np.arange(20) * 3 % 10).astype(np.uint8)
    contents = write_idx(tmp_path / "idx", images, labels, gz)
    raw = tmp_path / "downloads" / "MNIST" / "raw"
    # verify: the right hashes of these tiny files, so the check runs and passes
    checksums = {name: hashlib.sha256(c).hexdigest() for name, c in contents.items()}

    report = build_from_local_idx(
        tmp_path / "mnist_rgb",
        tmp_path / "idx",
        download_root=tmp_path / "downloads",
        checksums=checksums if verify else None,
        expected_counts=None,
    )

    assert report.ok, report.summary()
    assert report.counts == {d: Counter(labels.tolist())[d] for d in range(10)}
    assert (raw / "train-images-idx3-ubyte").read_bytes()[16:] == images.tobytes()
    for index, (gray, label) in enumerate(zip(images, labels, strict=True), start=1):
        with Image.open(tmp_path / "mnist_rgb" / str(label) / f"{index:05d}.png") as image:
            assert (image.mode, image.size) == ("RGB", (28, 28))
            assert np.array_equal(np.array(image), rgb(gray))


def test_idx_checksum_mismatch_names_the_file_and_both_hashes(tiny_idx, tmp_path):
    source, _, _ = tiny_idx

    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: sha256") as error:
        build_from_local_idx(tmp_path / "out", source, download_root=tmp_path / "downloads")

    assert data.MNIST_IDX_SHA256["train-images-idx3-ubyte"] in str(error.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "downloads").exists()


def test_missing_idx_file_names_what_was_expected(tiny_idx, tmp_path):
    source, _, _ = tiny_idx
    (source / "train-labels-idx1-ubyte.gz").unlink()

    with pytest.raises(FileNotFoundError, match="missing in .*idx: train-labels-idx1-ubyte"):
        build_from_local_idx(tmp_path / "out", source, download_root=tmp_path / "dl")


def test_existing_folder_needs_overwrite_and_is_replaced_whole(tiny_idx, tmp_path):
    source, images, _ = tiny_idx
    out = tmp_path / "mnist_rgb"
    (out / "old").mkdir(parents=True)
    options = dict(download_root=tmp_path / "dl", checksums=None, expected_counts=None)

    with pytest.raises(FileExistsError, match="--overwrite"):
        build_from_local_idx(out, source, **options)
    report = build_from_local_idx(out, source, overwrite=True, **options)

    assert report.ok and report.total == len(images) and not (out / "old").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dl", "idx", "mnist_rgb"]


# --- build_mnist_rgb routing ---------------------------------------------------------------------


def test_auto_uses_mnist_dir_from_the_environment(tiny_idx, tmp_path, monkeypatch):
    source, _, _ = tiny_idx
    monkeypatch.setenv("MNIST_DIR", str(source))
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ValueError, match=re.escape(f"{source}/train-images-idx3-ubyte.gz: sha256")):
        build_mnist_rgb(tmp_path / "out")


def test_auto_without_internet_says_what_was_tried_and_how_to_go_offline(tmp_path, monkeypatch):
    def no_internet(*args, **kwargs):
        raise DownloadError("no route to host")

    monkeypatch.delenv("MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "build_from_course_zip", no_internet)
    monkeypatch.setattr(data, "build_from_torchvision", no_internet)

    with pytest.raises(DownloadError) as error:
        build_mnist_rgb(tmp_path / "out")

    message = str(error.value)
    assert "course mnist.zip" in message and "torchvision" in message
    assert "--local DIR" in message and "MNIST_DIR" in message


def test_torchvision_download_failure_becomes_download_error(tmp_path, monkeypatch):
    def unreachable_mirrors(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(data.torchvision.datasets, "MNIST", unreachable_mirrors)

    with pytest.raises(DownloadError, match="Error downloading.*\n.*--source local --local DIR"):
        data.build_from_torchvision(tmp_path / "out", download_root=tmp_path / "dl")


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
    ("pixels", "found"),
    [(rgb(random_digits(1, size=32)[0]), "32×32 RGB"), (random_digits(1)[0], "28×28 L")],
)
def test_wrong_size_or_mode_names_the_file(tiny_mnist_rgb, pixels, found):
    bad = tiny_mnist_rgb / "3" / "3_00001.png"
    Image.fromarray(pixels).save(bad)
    dataset = MnistRGBFolder(tiny_mnist_rgb, image_size=28)
    message = re.escape(f"{bad} is {found}; expected 28×28 RGB — rebuild the folder with python -m")

    with pytest.raises(ValueError, match=message):
        dataset[dataset.paths.index(bad)]
    with pytest.raises(ValueError, match=message):
        dataset.load_all(progress=False)


def test_missing_or_empty_root_says_how_to_build_it(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="nowhere does not exist: .*python -m ddpm_lib.data"
    ):
        MnistRGBFolder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no PNG images under .*python -m ddpm_lib.data"):
        MnistRGBFolder(tmp_path)


# --- check_mnist_rgb -----------------------------------------------------------------------------


def test_check_passes_a_good_folder(tiny_mnist_rgb):
    report = check_mnist_rgb(tiny_mnist_rgb, expected_counts=dict.fromkeys(range(10), 4))

    assert report.ok and report.total == 40 and report.layout == "digit folders"
    assert "all checks passed" in report.summary()
    assert raise_if_bad(report) is report


def test_check_reports_each_problem_precisely(tiny_mnist_rgb):
    for path in (tiny_mnist_rgb / "7").iterdir():
        path.unlink()
    (tiny_mnist_rgb / "7").rmdir()
    (tiny_mnist_rgb / "3" / "3_00000.png").unlink()
    Image.fromarray(rgb(random_digits(1, size=32)[0])).save(tiny_mnist_rgb / "5" / "5_00002.png")
    Image.fromarray(random_digits(1)[0]).save(tiny_mnist_rgb / "6" / "6_00001.png")

    report = check_mnist_rgb(tiny_mnist_rgb, expected_counts=dict.fromkeys(range(10), 4))

    assert report.problems == [
        "digit 3: 3 images, expected 4",
        f"digit 7: no images ({tiny_mnist_rgb / '7'} is missing or empty)",
        f"2 files are not 28×28 RGB, first: {tiny_mnist_rgb / '5' / '5_00002.png'} is 32×32 RGB",
    ]
    with pytest.raises(DatasetCheckError, match="problem: digit 3: 3 images, expected 4"):
        raise_if_bad(report)


def test_check_reports_missing_folder_and_mnist_counts(tmp_path, tiny_mnist_rgb):
    assert check_mnist_rgb(tmp_path / "nowhere").layout == "missing"
    assert not check_mnist_rgb(tmp_path / "nowhere").ok
    report = check_mnist_rgb(tiny_mnist_rgb)  # the default expects MNIST's counts
    assert report.problems[0] == "digit 0: 4 images, expected 5923"
    assert len(report.problems) == 10


# --- command line --------------------------------------------------------------------------------


def test_cli_prints_one_error_line_and_exits_non_zero(
    tmp_path, tiny_idx, tiny_mnist_rgb, monkeypatch
):
    source, _, _ = tiny_idx
    monkeypatch.chdir(tmp_path)  # the default download folder is relative: data/downloads
    with pytest.raises(SystemExit) as missing:
        main(["--check-only", "--out", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as bad_counts:
        main(["--check-only", "--out", str(tiny_mnist_rgb)])
    with pytest.raises(SystemExit) as bad_checksum:
        main(["--out", str(tmp_path / "out"), "--source", "local", "--local", str(source)])

    assert str(missing.value.code).startswith("error: ")
    assert "nowhere does not exist" in str(missing.value.code)
    assert "digit 9: 4 images, expected 5949" in str(bad_counts.value.code)
    assert str(bad_checksum.value.code).startswith("error: ")
    assert "train-images-idx3-ubyte.gz: sha256" in str(bad_checksum.value.code)


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
    assert "nowhere does not exist" in result.stderr


# --- the real data -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.real_mnist
def test_real_mnist_builds_the_full_folder_offline(mnist_dir, tmp_path):
    started = time.perf_counter()
    report = build_from_local_idx(tmp_path / "mnist_rgb", mnist_dir, download_root=tmp_path / "dl")
    print(f"built in {time.perf_counter() - started:.1f} s")

    assert report.ok, report.summary()
    assert report.total == 60_000 and report.counts == MNIST_TRAIN_COUNTS
    assert check_mnist_rgb(tmp_path / "mnist_rgb").ok
    raw = (tmp_path / "dl" / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    first_image = np.frombuffer(raw, np.uint8, count=784, offset=16).reshape(28, 28)
    with Image.open(tmp_path / "mnist_rgb" / "5" / "00001.png") as image:
        assert np.array_equal(np.array(image), rgb(first_image))
