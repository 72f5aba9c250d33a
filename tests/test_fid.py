"""Tests of ``ddpm_lib.fid``.

pytorch-fid's Inception weights cannot be downloaded here, so the FID's plumbing runs on a small
fake Inception (seeded random convolution, pytorch-fid's output convention). Its numbers are
not FIDs: they only show that equal sets score 0 and a shifted set scores more.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import REPO_ROOT, write_digit_folder
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pytorch_fid.fid_score import calculate_frechet_distance, compute_statistics_of_path

from ddpm_lib import evaluator, fid

DIMS = 64  # the smallest of pytorch-fid's feature sizes (--dims)


class FakeInception(torch.nn.Module):
    """Like pytorch-fid's InceptionV3: images in [0, 1] → a list of (B, DIMS, 1, 1) features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, DIMS, 7, stride=3)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [torch.tanh(self.conv(images)).mean(dim=(2, 3), keepdim=True)]


@pytest.fixture
def fake_inception(monkeypatch: pytest.MonkeyPatch) -> FakeInception:
    """``load_fid_inception`` returns the fake network (in eval mode) instead of the FID one."""
    model = FakeInception().eval()
    monkeypatch.setattr(fid, "load_fid_inception", lambda *args, **kwargs: model)
    return model


@pytest.fixture
def offline_torch_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub folder and a download that fails like a machine without internet."""

    def no_internet(url: str, *args: object, **kwargs: object) -> None:
        raise URLError(f"no internet in this test ({url})")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_internet)
    return tmp_path / "torch_hub"


def write_pngs(root: Path, count: int, brightness: int = 0, size: int = 28,
               first: int = 1, source: str = "A.pt") -> Path:
    """``00001.png`` … in ``root``: seeded noise plus ``brightness``, size×size RGB, each with a
    provenance ("Source" text) naming checkpoint ``source``, as ``ddpm_lib.generate`` writes."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(brightness)
    metadata = PngInfo()
    metadata.add_text("Source", json.dumps({"checkpoint": source, "seed": 0}))
    for index in range(first, count + 1):
        pixels = rng.integers(0, 256 - brightness, (size, size, 3)) + brightness
        Image.fromarray(pixels.astype(np.uint8)).save(root / f"{index:05d}.png", pnginfo=metadata)
    return root


def test_list_images_is_recursive_and_names_a_missing_folder(tiny_mnist_rgb: Path) -> None:
    (tiny_mnist_rgb / "notes.txt").write_text("not an image")
    files = fid.list_images(tiny_mnist_rgb)
    assert len(files) == 40 and files == sorted(files)
    assert {path.parent.name for path in files} == {str(digit) for digit in range(10)}
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        fid.list_images(tiny_mnist_rgb / "does_not_exist")


def test_frechet_distance_closed_form_for_diagonal_gaussians() -> None:
    # N((0, 0), diag(1, 9)) vs N((3, 4), diag(4, 1)): 25 + (1 + 4 − 2·2) + (9 + 1 − 2·3) = 30
    by_hand = fid.frechet_distance(np.zeros(2), np.diag([1.0, 9.0]), np.array([3.0, 4.0]),
                                   np.diag([4.0, 1.0]))
    assert by_hand == pytest.approx(30.0)
    with pytest.raises(ValueError, match="--dims"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_frechet_distance_works_with_a_scipy_without_disp(monkeypatch) -> None:
    """SciPy ≥ 1.18's sqrtm has no ``disp``: the same number as pytorch-fid's on this SciPy."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 8)), rng.normal(0.3, 1.2, size=(200, 8))
    stats = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    expected = calculate_frechet_distance(*stats)
    sqrtm = scipy.linalg.sqrtm
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda matrix: sqrtm(matrix))  # no disp
    assert fid.frechet_distance(*stats) == pytest.approx(expected, rel=1e-9) and expected > 1


def test_equal_sets_score_zero_and_a_shifted_set_more(fake_inception, tmp_path: Path) -> None:
    dark = write_pngs(tmp_path / "dark", 30)
    copy = shutil.copytree(dark, tmp_path / "copy")
    bright = write_pngs(tmp_path / "bright", 30, brightness=100)
    assert abs(fid.compute_fid(dark, copy, dims=DIMS)) < 1e-6
    assert fid.compute_fid(bright, dark, dims=DIMS) > 1e-3


def test_saved_statistics_stand_in_for_their_folder(fake_inception, tiny_mnist_rgb, tmp_path,
                                                    capsys) -> None:
    generated = write_pngs(tmp_path / "generated", 20)
    stats = tmp_path / "mnist.npz"
    fid.main(["--save-stats", str(tiny_mnist_rgb), str(stats), "--dims", str(DIMS)])
    mu, sigma = compute_statistics_of_path(str(stats), None, 50, DIMS, "cpu")  # pytorch-fid's
    assert mu.shape == (DIMS,) and sigma.shape == (DIMS, DIMS)
    capsys.readouterr()
    fid.main([str(generated), str(tiny_mnist_rgb), "--dims", str(DIMS)])
    from_folder = capsys.readouterr().out.splitlines()[-1]
    fid.main([str(generated), str(stats), "--dims", str(DIMS)])
    assert capsys.readouterr().out.splitlines()[-1] == from_folder
    assert from_folder.startswith("FID: ") and float(from_folder.removeprefix("FID: ")) > 0


@pytest.mark.parametrize("problem", ["one image", "mixed sizes", "unreadable", "not stats",
                                     "no reference"])
def test_fid_errors_name_the_file(problem, fake_inception, tiny_mnist_rgb, tmp_path) -> None:
    generated, reference = write_pngs(tmp_path / "generated", 5), tiny_mnist_rgb
    if problem == "one image":
        generated, expected = write_pngs(tmp_path / "lonely", 1), "got 1 in .*lonely"
    elif problem == "mixed sizes":
        Image.new("RGB", (32, 32)).save(generated / "odd.png")
        expected = "2 sizes in .*generated.*odd.png"
    elif problem == "unreadable":
        (generated / "odd.png").write_bytes(b"not a png")
        expected = "odd.png"
    elif problem == "not stats":
        reference, expected = tmp_path / "means.npz", "means.npz"
        np.savez(reference, mu=np.zeros(DIMS))
    else:
        reference, expected = tmp_path / "absent.npz", "absent.npz"
    with pytest.raises(SystemExit, match=f"^error: .*{expected}") as caught:
        fid.main([str(generated), str(reference), "--dims", str(DIMS)])
    assert "\n" not in caught.value.code


@pytest.mark.parametrize("bad", ["empty folder", "one image", "text as .npz", "array as .npz"])
def test_bad_inputs_are_refused_before_the_network_loads(bad, tmp_path, monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("the Inception network was loaded before the inputs were checked")
    monkeypatch.setattr(fid, "load_fid_inception", no_network)
    good, path = write_pngs(tmp_path / "good", 3), tmp_path / "bad"
    if bad == "empty folder":
        path.mkdir()
    elif bad == "one image":
        path = write_pngs(path, 1)
    elif bad == "text as .npz":
        path = tmp_path / "stats.npz"
        path.write_text("not an archive")
    else:
        path = tmp_path / "stats.npz"
        np.save(tmp_path / "array.npy", np.zeros(3))
        (tmp_path / "array.npy").rename(path)
    for argv in ([str(path), str(good)], [str(good), str(path)], ["--save-stats", str(path),
                                                                  str(tmp_path / "out.npz")]):
        if argv[0] == "--save-stats" and path.suffix == ".npz":
            continue
        with pytest.raises(SystemExit, match=f"^error: .*{path.name}"):
            fid.main(argv)
    assert not (tmp_path / "out.npz").exists()


def test_missing_weights_say_where_to_put_them(offline_torch_hub, tiny_mnist_rgb, capsys) -> None:
    with pytest.raises(fid.InceptionWeightsUnavailable) as caught:
        fid.load_fid_inception("cpu")
    message = str(caught.value)
    weights = offline_torch_hub / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    assert str(weights) in message and "github.com" in message and "No FID" in message
    with pytest.raises(SystemExit) as caught:
        fid.main([str(tiny_mnist_rgb), str(tiny_mnist_rgb), "--device", "cpu"])
    assert caught.value.code.startswith("error: ") and str(weights) in caught.value.code
    assert "\n" not in caught.value.code and "FID:" not in capsys.readouterr().out


def test_digits_report_comes_first_even_without_weights(offline_torch_hub, tiny_mnist_rgb,
                                                        tmp_path, capsys) -> None:
    generated = write_digit_folder(tmp_path / "generated", per_digit=2, seed=1)
    argv = [str(generated), str(tiny_mnist_rgb), "--digits", "--train_dir", str(tiny_mnist_rgb)]
    with pytest.raises(SystemExit, match="^error: .*Inception weights"):
        fid.main([*argv, "--device", "cpu"])
    report = capsys.readouterr().out
    expected = evaluator.folder_report([generated], tiny_mnist_rgb)
    assert report.startswith(expected + "\n") and "not the Inception FID" in report


def test_usage_errors(tmp_path: Path, capsys) -> None:
    for argv in (["--check", "x", "--digits"], ["--save-stats", "x", "out.txt"], ["only_one"],
                 ["a", "b", "--check", "c"], ["--check", str(tmp_path), "--num_images", "0"]):
        with pytest.raises(SystemExit) as caught:
            fid.main(argv)
        assert caught.value.code == 2
    assert "--save-stats" in capsys.readouterr().err


def test_check_submission(tmp_path: Path, capsys) -> None:
    submission = write_pngs(tmp_path / "generated_images", 12)
    assert fid.check_submission(submission, num_images=12) == []
    fid.main(["--check", str(submission), "--num_images", "12"])
    assert capsys.readouterr().out.startswith("OK:")
    (submission / "00003.png").unlink()
    (submission / "notes.txt").write_text("extra")
    Image.new("RGB", (32, 32)).save(submission / "00005.png")
    Image.new("L", (28, 28)).save(submission / "00007.png")
    (submission / "00009.png").write_bytes(b"not a png")
    (submission / "00010.png").write_bytes((submission / "00010.png").read_bytes()[:-12])  # no IEND
    write_pngs(submission, 11, first=11, source="B.pt")  # 00011.png from another checkpoint
    Image.new("RGB", (28, 28)).save(submission / "00012.png")  # no provenance
    problems = dict(problem.split(": ", 1) for problem in fid.check_submission(submission, 12))
    assert sorted(problems) == ["00003.png", "00005.png", "00007.png", "00009.png", "00010.png",
                                "00011.png", "00012.png", "notes.txt"]
    assert "32×32" in problems["00005.png"] and "truncated" in problems["00010.png"]
    assert "checkpoint differs: A.pt vs B.pt" in problems["00011.png"]
    assert "no provenance" in problems["00012.png"]
    with pytest.raises(SystemExit, match=f"^error: {submission}.*8 problems.*first: 00003.png"):
        fid.main(["--check", str(submission), "--num_images", "12"])
    assert "00003.png: missing" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="^error: .*nowhere"):
        fid.main(["--check", str(tmp_path / "nowhere")])


def test_module_runs_as_script(tmp_path: Path) -> None:
    submission = write_pngs(tmp_path / "generated_images", 3)
    result = subprocess.run(
        [sys.executable, "-m", "ddpm_lib.fid", "--check", str(submission), "--num_images", "4"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "00004.png" in result.stdout
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


@pytest.mark.parametrize("bad", ["truncated png", "statistics of other dims",
                                 "save-stats under a file", "save-stats over a file"])
def test_late_failures_now_come_before_the_network(bad, tmp_path, monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("the Inception network was loaded before the inputs were checked")
    monkeypatch.setattr(fid, "load_fid_inception", no_network)
    good = write_pngs(tmp_path / "good", 3)
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=np.zeros(3), sigma=np.eye(3))
    argv, named = {
        "truncated png": ([str(write_pngs(tmp_path / "cut", 3)), str(good)], "00002.png"),
        "statistics of other dims": ([str(good), str(stats), "--dims", "64"], "stats.npz .*"
                                     r"\(3,\) features, not --dims 64"),
        "save-stats under a file": (["--save-stats", str(good),
                                     str(tmp_path / "stats.npz" / "x.npz")], "is a file"),
        "save-stats over a file": (["--save-stats", str(good), str(stats)], "stats.npz exists"),
    }[bad]
    if bad == "truncated png":
        path = tmp_path / "cut" / "00002.png"
        path.write_bytes(path.read_bytes()[:60])
    before = stats.read_bytes()
    with pytest.raises(SystemExit, match=f"^error: .*{named}"):
        fid.main(argv)
    assert stats.read_bytes() == before
