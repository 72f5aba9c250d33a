"""Tests of ``ddpm_lib.fid``.

pytorch-fid's FID weights cannot be downloaded here, so the plumbing runs on a RANDOMLY
INITIALISED InceptionV3 of pytorch-fid's architecture (fixture ``random_init_inception``). Its
distances are not FIDs; they only show that equal sets give 0 and different sets do not.
"""

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partialmethod
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, write_digit_folder
from PIL import Image
from pytorch_fid import inception
from pytorch_fid.fid_score import compute_statistics_of_path
from torchvision.models.inception import Inception3

from ddpm_lib import evaluator, fid

DIMS = 64  # first max-pooling block of pytorch-fid's InceptionV3: the fastest valid feature block


@contextmanager
def random_inception_weights(seed: int) -> Iterator[None]:
    """Inside, pytorch-fid builds its Inception with seeded RANDOM weights, NOT the FID weights.

    The weight "download" returns an empty state dict and torchvision's Inception3 loads it
    non-strictly, so every layer keeps PyTorch's default initialisation from ``manual_seed``.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(
            Inception3,
            "load_state_dict",
            partialmethod(torch.nn.Module.load_state_dict, strict=False),
        )
        torch.manual_seed(seed)
        yield


@pytest.fixture(scope="module")
def random_init_inception() -> inception.InceptionV3:
    """pytorch-fid's InceptionV3 architecture with seeded random weights: plumbing only."""
    with random_inception_weights(seed=0):
        return inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[DIMS]]).eval()


@pytest.fixture
def offline_torch_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub folder and a download that fails like a machine without internet."""
    hub_dir = tmp_path / "torch_hub"

    def no_internet(url: str, *args: object, **kwargs: object) -> None:
        raise URLError(f"no internet in this test ({url})")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub_dir))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_internet)
    return hub_dir


def write_noise_folder(root: Path, count: int = 40, seed: int = 1) -> Path:
    """``count`` uniform-noise 28×28 RGB PNGs in ``root``."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{index:05d}.png")
    return root


def write_submission(root: Path, count: int) -> Path:
    """A valid tiny submission: ``00001.png`` … ``{count:05d}.png``, 28×28 RGB."""
    root.mkdir(parents=True)
    for index in range(1, count + 1):
        Image.new("RGB", (28, 28), (index, 0, 0)).save(root / f"{index:05d}.png")
    return root


DIGIT_REPORT_LINES = 3 + len(evaluator.MEASURES) + 2  # heading, legend, header; rows; shares


def split_digit_report(stdout: str) -> tuple[list[str], list[str]]:
    """The digit report's lines (it comes first) and the lines after it."""
    lines = stdout.splitlines()
    return lines[:DIGIT_REPORT_LINES], lines[DIGIT_REPORT_LINES:]


def assert_digit_report(lines: list[str], folder: Path, train_dir: Path) -> None:
    """``lines`` are the digit evaluator's table on ``folder`` against the training images in
    ``train_dir``: its values, from ``evaluate_samples``, under a heading that says it is not the
    Inception FID."""
    expected = evaluator.evaluate_samples(
        evaluator.load_folder(folder), evaluator.load_folder(train_dir)
    )
    heading, _, _, *rows, predicted, mnist = lines
    assert heading.startswith(f"Offline digit evaluator on {folder} ")
    assert "not the Inception FID" in heading
    printed = dict(re.split(r"\s{2,}", row)[:2] for row in rows)
    for key, label, scale, decimals, _ in evaluator.MEASURES:
        assert printed[label] == f"{scale * getattr(expected, key):.{decimals}f}"
    for line, label, shares in (
        (predicted, "predicted digits:", expected.class_share),
        (mnist, "MNIST's training:", expected.mnist_class_share),
    ):
        assert line.startswith(label)
        printed_shares = [(int(d), float(p)) for d, p in re.findall(r"(\d): +([\d.]+)%", line)]
        assert printed_shares == [(d, round(100 * share, 1)) for d, share in enumerate(shares)]


def test_list_images_is_recursive_and_sorted(tiny_mnist_rgb: Path) -> None:
    (tiny_mnist_rgb / "notes.txt").write_text("not an image")
    files = fid.list_images(tiny_mnist_rgb)
    assert len(files) == 40
    assert files == sorted(files)
    assert {path.parent.name for path in files} == {str(digit) for digit in range(10)}
    assert all(path.suffix == ".png" for path in files)


def test_list_images_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        fid.list_images(tmp_path / "does_not_exist")


def test_identical_sets_give_zero_and_noise_does_not(
    random_init_inception: inception.InceptionV3, tiny_mnist_rgb: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(tiny_mnist_rgb, tmp_path / "copy")
    noise = write_noise_folder(tmp_path / "noise")
    stats = [
        fid.activation_statistics(fid.list_images(folder), random_init_inception, dims=DIMS)
        for folder in (tiny_mnist_rgb, copy, noise)
    ]
    assert stats[0][0].shape == (DIMS,) and stats[0][1].shape == (DIMS, DIMS)
    same = fid.frechet_distance(*stats[0], *stats[1])
    different = fid.frechet_distance(*stats[0], *stats[2])
    assert abs(same) < 1e-6
    assert different > 1e-2
    assert abs(same) < 1e-4 * different


def test_batch_size_larger_than_file_count(
    random_init_inception: inception.InceptionV3, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    files = fid.list_images(write_digit_folder(tmp_path / "ten", per_digit=1))
    mu_big, sigma_big = fid.activation_statistics(files, random_init_inception, 500, DIMS)
    mu_small, sigma_small = fid.activation_statistics(files, random_init_inception, 3, DIMS)
    np.testing.assert_allclose(mu_big, mu_small, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(sigma_big, sigma_small, rtol=1e-4, atol=1e-12)
    assert "batch size is bigger" not in capsys.readouterr().out


def test_too_few_images(
    random_init_inception: inception.InceptionV3, tmp_path: Path, offline_torch_hub: Path
) -> None:
    lonely = write_noise_folder(tmp_path / "lonely", count=1)
    with pytest.raises(ValueError, match="at least 2 images, got 1"):
        fid.activation_statistics(fid.list_images(lonely), random_init_inception, dims=DIMS)
    with pytest.raises(ValueError, match=r"at least 2 images, got 1 in .*lonely"):
        fid.compute_fid(lonely, lonely, device="cpu", dims=DIMS, cache_dir=tmp_path / "cache")


def test_mixed_sizes_are_refused_like_pytorch_fid_would(
    random_init_inception: inception.InceptionV3, tiny_mnist_rgb: Path
) -> None:
    Image.new("RGB", (32, 32)).save(tiny_mnist_rgb / "0" / "odd.png")
    with pytest.raises(
        ValueError, match=r"2 different sizes .*32×32: 1 image\(s\), e.g. .*odd.png"
    ):
        fid.activation_statistics(fid.list_images(tiny_mnist_rgb), random_init_inception, dims=DIMS)


def test_statistics_round_trip_readable_by_pytorch_fid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=8), np.cov(rng.normal(size=(20, 8)), rowvar=False)
    path = fid.save_statistics(tmp_path / "stats" / "ref.npz", mu, sigma)
    loaded_mu, loaded_sigma = fid.load_statistics(path)
    np.testing.assert_array_equal(loaded_mu, mu)
    np.testing.assert_array_equal(loaded_sigma, sigma)
    cli_mu, cli_sigma = compute_statistics_of_path(str(path), None, 50, 8, "cpu")
    np.testing.assert_array_equal(cli_mu, mu)
    np.testing.assert_array_equal(cli_sigma, sigma)
    assert [p.name for p in path.parent.iterdir()] == ["ref.npz"]  # no temporary left behind
    with pytest.raises(ValueError, match=r"\.npz"):
        fid.save_statistics(tmp_path / "ref.stats", mu, sigma)


def test_load_statistics_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "means_only.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match=r"missing key\(s\) \['sigma'\]"):
        fid.load_statistics(tmp_path / "means_only.npz")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        fid.load_statistics(tmp_path / "absent.npz")


def test_reference_statistics_cache(
    random_init_inception: inception.InceptionV3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = write_digit_folder(tmp_path / "mnist_rgb", per_digit=1)
    cache_dir = tmp_path / "fid_stats"
    calls = []
    original = fid.activation_statistics

    def counting(*args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(fid, "activation_statistics", counting)

    def reference() -> tuple[np.ndarray, np.ndarray]:
        return fid.reference_statistics(folder, random_init_inception, cache_dir, dims=DIMS)

    mu, sigma = reference()
    assert len(calls) == 1
    (cached,) = cache_dir.iterdir()
    np.testing.assert_array_equal(fid.load_statistics(cached)[0], mu)

    mu_again, _ = reference()
    assert len(calls) == 1  # served from the cache
    np.testing.assert_array_equal(mu_again, mu)

    Image.new("RGB", (28, 28), (255, 255, 255)).save(folder / "3" / "extra.png")
    mu_changed, _ = reference()
    assert len(calls) == 2 and len(calls[-1]) == 11
    assert not np.allclose(mu_changed, mu)
    assert len(list(cache_dir.iterdir())) == 2


def test_reference_statistics_from_npz(
    random_init_inception: inception.InceptionV3, tmp_path: Path
) -> None:
    path = fid.save_statistics(tmp_path / "mnist.npz", np.ones(DIMS), np.eye(DIMS))
    mu, sigma = fid.reference_statistics(path, random_init_inception, tmp_path / "cache")
    np.testing.assert_array_equal(mu, np.ones(DIMS))
    np.testing.assert_array_equal(sigma, np.eye(DIMS))
    assert not (tmp_path / "cache").exists()


def test_frechet_distance_closed_form_for_diagonal_gaussians() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    var1, var2 = rng.uniform(0.5, 2.0, size=5), rng.uniform(0.5, 2.0, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    got = fid.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-9)
    # by hand: N((0, 0), diag(1, 9)) vs N((3, 4), diag(4, 1)): 25 + (1 + 4 − 2·2) + (9 + 1 − 2·3)
    by_hand = fid.frechet_distance(
        np.zeros(2), np.diag([1.0, 9.0]), np.array([3.0, 4.0]), np.diag([4.0, 1.0])
    )
    assert by_hand == pytest.approx(30.0)


def test_frechet_distance_rejects_mismatched_dims() -> None:
    with pytest.raises(ValueError, match="same --dims"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_no_weights_offline_load_fid_inception(offline_torch_hub: Path) -> None:
    with pytest.raises(fid.InceptionWeightsUnavailable) as caught:
        fid.load_fid_inception("cpu", dims=DIMS)
    message = str(caught.value)
    assert "--inception_weights" in message
    assert inception.FID_WEIGHTS_URL in message
    assert str(offline_torch_hub / "checkpoints") in message
    assert "no internet in this test" in message
    assert "No FID was computed" in message


def test_no_weights_offline_compute_fid(
    offline_torch_hub: Path, tiny_mnist_rgb: Path, tmp_path: Path
) -> None:
    with pytest.warns(UserWarning, match="biased"):
        with pytest.raises(fid.InceptionWeightsUnavailable, match="--inception_weights"):
            fid.compute_fid(tiny_mnist_rgb, tiny_mnist_rgb, "cpu", cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_cli_without_weights_prints_error_and_no_number(
    offline_torch_hub: Path,
    tiny_mnist_rgb: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    argv = [str(tiny_mnist_rgb), str(tiny_mnist_rgb), "--device", "cpu"]
    with pytest.warns(UserWarning, match="biased"), pytest.raises(SystemExit) as caught:
        fid.main([*argv, "--cache_dir", str(tmp_path / "cache")])
    assert isinstance(caught.value.code, str)
    assert caught.value.code.startswith("error: ")
    assert "--inception_weights" in caught.value.code
    assert "\n" not in caught.value.code
    assert "FID:" not in capsys.readouterr().out


def test_local_weights_with_wrong_hash_prefix(offline_torch_hub: Path, tmp_path: Path) -> None:
    impostor = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    impostor.write_bytes(b"these are not the FID weights")
    with pytest.raises(ValueError, match="6726825d"):
        fid.load_fid_inception("cpu", weights_path=impostor)
    assert not (offline_torch_hub / "checkpoints").exists()


def test_local_weights_are_loaded_without_network(
    offline_torch_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weights file (random ones here) whose hash matches the URL's prefix is used offline."""
    with random_inception_weights(seed=1):
        weights = inception.fid_inception_v3().state_dict()
    weights_path = tmp_path / "downloaded_elsewhere.pth"
    torch.save(weights, weights_path)
    prefix = fid._sha256(weights_path)[:8]
    url = f"https://example.invalid/fid_weights/pt_inception-2015-12-05-{prefix}.pth"
    monkeypatch.setattr(inception, "FID_WEIGHTS_URL", url)

    model = fid.load_fid_inception("cpu", dims=DIMS, weights_path=weights_path)

    assert (offline_torch_hub / "checkpoints" / Path(url).name).is_file()
    first_conv = model.blocks[0][0].conv.weight
    torch.testing.assert_close(first_conv, weights["Conv2d_1a_3x3.conv.weight"])
    assert not model.training


def test_check_submission_valid(tmp_path: Path) -> None:
    submission = write_submission(tmp_path / "generated_images", 12)
    assert fid.check_submission(submission, num_images=12) == []


def test_check_submission_reports_each_problem(tmp_path: Path) -> None:
    submission = write_submission(tmp_path / "generated_images", 12)
    (submission / "00003.png").unlink()
    (submission / "notes.txt").write_text("extra")
    Image.new("RGB", (28, 28)).save(submission / "00013.png")
    Image.new("RGB", (32, 32)).save(submission / "00005.png")
    Image.new("L", (28, 28)).save(submission / "00007.png")
    problems = fid.check_submission(submission, num_images=12)
    assert len(problems) == 4
    missing, extra, size, mode = problems
    assert "1 of 12" in missing and "00003.png" in missing
    assert "00013.png" in extra and "notes.txt" in extra
    assert "00005.png (32×32)" in size and "28×28" in size
    assert "00007.png (mode L)" in mode


def test_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    submission = write_submission(tmp_path / "generated_images", 12)
    fid.main(["--check", str(submission), "--num_images", "12"])
    assert capsys.readouterr().out.startswith("OK:")
    (submission / "00012.png").unlink()
    with pytest.raises(SystemExit, match="^error: .*not a valid submission"):
        fid.main(["--check", str(submission), "--num_images", "12"])
    assert "00012.png" in capsys.readouterr().out


def test_module_runs_as_script(tmp_path: Path) -> None:
    submission = write_submission(tmp_path / "generated_images", 3)
    result = subprocess.run(
        [sys.executable, "-m", "ddpm_lib.fid", "--check", str(submission), "--num_images", "4"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "00004.png" in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in result.stderr


def test_compute_fid_and_cli_plumbing_with_random_init_inception(
    random_init_inception: inception.InceptionV3,
    tiny_mnist_rgb: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Not an FID (random weights): checks the wiring of compute_fid, its warnings and the CLI."""
    monkeypatch.setattr(fid, "load_fid_inception", lambda *args, **kwargs: random_init_inception)
    generated = shutil.copytree(tiny_mnist_rgb, tmp_path / "generated")
    cache_dir = tmp_path / "cache"
    with pytest.warns(UserWarning, match="only 40 images.*biased"):
        same = fid.compute_fid(generated, tiny_mnist_rgb, "cpu", dims=DIMS, cache_dir=cache_dir)
    assert abs(same) < 1e-6
    assert len(list(cache_dir.iterdir())) == 1

    odd = tmp_path / "grey_32px"
    odd.mkdir()
    for index in range(1, 11):
        Image.new("L", (32, 32), 20 * index).save(odd / f"{index:05d}.png")
    with pytest.warns(UserWarning) as caught:
        fid.main(
            [str(odd), str(tiny_mnist_rgb), "--dims", str(DIMS), "--cache_dir", str(cache_dir)]
        )
    messages = [str(warning.message) for warning in caught]
    assert any("10 image(s) not 28×28: 00001.png (32×32)" in message for message in messages)
    assert any("not RGB: 00001.png (mode L)" in message for message in messages)
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith("FID: ") and float(printed.removeprefix("FID: ")) > 0

    out = tmp_path / "ref.npz"
    fid.main(["--save_stats", str(tiny_mnist_rgb), str(out), "--dims", str(DIMS)])
    np.testing.assert_allclose(
        fid.load_statistics(out)[0],
        fid.load_statistics(next(cache_dir.iterdir()))[0],
    )


def test_cli_digits_without_weights_prints_report_then_fails_with_pointer(
    offline_torch_hub: Path,
    tiny_mnist_rgb: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    generated = write_noise_folder(tmp_path / "generated", count=20)
    argv = [str(generated), str(tiny_mnist_rgb), "--digits", "--device", "cpu"]
    argv += ["--train_dir", str(tiny_mnist_rgb)]
    with pytest.warns(UserWarning, match="only 20 images"), pytest.raises(SystemExit) as caught:
        fid.main([*argv, "--cache_dir", str(tmp_path / "cache")])
    message = caught.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message
    assert "--inception_weights" in message and "No FID was computed" in message
    assert message.endswith(fid.OFFLINE_COMPLEMENT_HINT)
    assert "--digits" in message and "python -m ddpm_lib.evaluator GENERATED" in message
    report, after = split_digit_report(capsys.readouterr().out)
    assert_digit_report(report, generated, tiny_mnist_rgb)
    assert [line for line in after if not line.startswith("Downloading: ")] == []  # torch hub's
    assert not (tmp_path / "cache").exists()


def test_cli_digits_before_the_fid(
    random_init_inception: inception.InceptionV3,
    tiny_mnist_rgb: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Random Inception weights (not an FID): the report comes first, ``FID:`` stays last."""
    monkeypatch.setattr(fid, "load_fid_inception", lambda *args, **kwargs: random_init_inception)
    generated = shutil.copytree(tiny_mnist_rgb, tmp_path / "generated")
    argv = [str(generated), str(tiny_mnist_rgb), "--digits", "--dims", str(DIMS)]
    argv += ["--train_dir", str(tiny_mnist_rgb)]
    with pytest.warns(UserWarning, match="only 40 images"):
        fid.main([*argv, "--cache_dir", str(tmp_path / "cache")])
    report, (last,) = split_digit_report(capsys.readouterr().out)
    assert_digit_report(report, generated, tiny_mnist_rgb)
    assert re.fullmatch(r"FID: -?\d+\.\d\d", last) and abs(float(last.removeprefix("FID: "))) < 1e-2


def test_cli_digits_generated_folder_errors_come_first(
    tmp_path: Path, tiny_mnist_rgb: Path, capsys: pytest.CaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for generated, error in (
        (tmp_path / "nowhere", r"^error: image folder not found: .*nowhere$"),
        (empty, r"^error: FID needs at least 2 images, got 0 in .*empty$"),
    ):
        with pytest.raises(SystemExit, match=error):
            fid.main([str(generated), str(tiny_mnist_rgb), "--digits"])
        assert capsys.readouterr().out == ""
    with pytest.raises(SystemExit) as caught:
        fid.main(["--check", str(tiny_mnist_rgb), "--digits"])
    assert caught.value.code == 2
    assert "--digits goes with GENERATED REFERENCE" in capsys.readouterr().err


def test_module_digits_without_a_valid_reference(tmp_path: Path, tiny_mnist_rgb: Path) -> None:
    """``python -m`` (fid imports the evaluator): the report needs no REFERENCE, the FID does."""
    generated = write_noise_folder(tmp_path / "generated", count=20)
    missing_reference = tmp_path / "no_ref"
    result = subprocess.run(
        [sys.executable, "-m", "ddpm_lib.fid", str(generated), str(missing_reference), "--digits",
         "--train_dir", str(tiny_mnist_rgb)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    report, after = split_digit_report(result.stdout)
    assert_digit_report(report, generated, tiny_mnist_rgb)
    assert after == []
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"error: reference folder or statistics file not found: {missing_reference}"
    assert "Traceback" not in result.stderr


def test_frechet_distance_without_disp_matches_pytorch_fid():
    """The fallback for SciPy ≥ 1.18 gives pytorch-fid's number on the same statistics."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    from ddpm_lib.evaluator import frechet_distance_without_disp

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)), rng.normal(0.3, 1.2, size=(200, 16))
    stats = (a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    expected = calculate_frechet_distance(*stats)
    assert expected > 1
    assert frechet_distance_without_disp(*stats) == pytest.approx(expected, rel=1e-6)
    same = frechet_distance_without_disp(stats[0], stats[1], stats[0], stats[1])
    assert same == pytest.approx(0, abs=1e-6)
