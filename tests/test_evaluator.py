"""The offline digit evaluator: its network, its committed weights and facts, every measure."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, write_digit_folder
from PIL import Image

from ddpm_lib.data import load_mnist_idx
from ddpm_lib.evaluator import (
    FEATURE_DIM,
    MEASURES,
    WEIGHTS_PATH,
    DigitClassifier,
    build_reference,
    classify,
    evaluate_samples,
    kernel_inception_distance,
    list_images,
    load_digit_classifier,
    load_folder,
    main,
    measure,
    measure_table,
    nearest_distances,
    precision_recall,
    reference_subset,
    summarise,
)

sys.path.insert(0, str(REPO_ROOT / "tools"))

import train_digit_classifier  # noqa: E402

KEYS = [key for key, *_ in MEASURES]


def test_classifier_shapes_and_gray_equals_rgb():
    torch.manual_seed(0)
    model = DigitClassifier().eval()
    gray = torch.rand(4, 1, 28, 28) * 2 - 1
    rgb = gray.expand(-1, 3, -1, -1)
    assert FEATURE_DIM >= 256
    assert model.features(gray).shape == (4, FEATURE_DIM)
    assert model(gray).shape == (4, 10)
    assert torch.allclose(model(gray), model(rgb))


def test_committed_weights_hold_their_facts():
    assert WEIGHTS_PATH.stat().st_size < 2 * 1024 * 1024
    model, facts = load_digit_classifier()
    assert not model.training
    assert facts["seed"] == 0 and facts["test_accuracy"] >= 0.995
    assert facts["trained_by"].startswith("tools/train_digit_classifier.py")
    assert set(facts["floors"]) == set(facts["noise"]) == set(KEYS)
    assert all(facts["noise"][key] > 0 for key in KEYS)
    assert facts["floors"]["memorised_share"] == pytest.approx(0.01, abs=0.001)
    assert facts["memorisation_threshold"] > 0
    assert facts["train_sigma"].shape == (FEATURE_DIM, FEATURE_DIM)
    assert facts["feature_condition_number"] < 1e6  # Σ of full rank, so (Σ1 Σ2)^{1/2} is stable
    assert torch.linalg.eigvalsh(facts["train_sigma"].double()).min() > 0


def test_training_is_reproducible_bit_for_bit():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (48, 1, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (48,), generator=generator)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = [train_digit_classifier.train_classifier(images, labels, epochs=2, batch_size=16,
                                                        seed=seed) for seed in (0, 0, 1)]
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    first, again, other = (run.state_dict() for run in runs)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["head.1.weight"], other["head.1.weight"])


def test_augmentation_moves_each_image_its_own_way():
    images = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 10:18, 12:16] = 255
    moved = train_digit_classifier.augment(images, torch.Generator().manual_seed(0))
    assert moved.shape == (8, 1, 28, 28) and moved.min() >= -1 and moved.max() <= 1
    assert moved[:, :, 0].eq(-1).all()  # the background stays black
    assert len({tuple(image.flatten().tolist()) for image in moved}) == 8


def test_kid_is_zero_for_one_distribution_and_positive_for_a_shifted_one():
    generator = torch.Generator().manual_seed(0)
    first, second, shifted = (torch.randn(2000, 32, generator=generator) for _ in range(3))
    same = kernel_inception_distance(first, second, subsets=20, subset_size=500)
    moved = kernel_inception_distance(first, shifted + 0.3, subsets=20, subset_size=500)
    assert abs(same) < 0.01 < moved


def test_kid_is_the_unbiased_mmd_by_hand():
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, generator=generator), torch.randn(6, 3, generator=generator) + 1

    def k(a, b):
        return (float(a @ b) / 3 + 1) ** 3

    pairs = [(i, j) for i in range(6) for j in range(6) if i != j]
    by_hand = (sum(k(x[i], x[j]) + k(y[i], y[j]) for i, j in pairs) / 30
               - 2 * sum(k(a, b) for a in x for b in y) / 36)
    assert kernel_inception_distance(x, y, subsets=3, subset_size=6) == pytest.approx(by_hand)


def test_kid_is_unbiased_on_average():
    """Over many small draws of one distribution the mean is 0 within its standard error; the
    biased estimate (diagonal kept) would be clearly positive at m = 10."""
    generator = torch.Generator().manual_seed(2)
    draws = [kernel_inception_distance(torch.randn(10, 4, generator=generator),
                                       torch.randn(10, 4, generator=generator), subsets=1)
             for _ in range(400)]
    assert abs(np.mean(draws)) < 3 * np.std(draws) / np.sqrt(len(draws))


def clusters(centres: torch.Tensor, per_cluster: int, seed: int) -> torch.Tensor:
    """Tight Gaussian clusters around ``centres`` (C, d): (C · per_cluster, d)."""
    generator = torch.Generator().manual_seed(seed)
    noise = 0.1 * torch.randn(len(centres), per_cluster, centres.shape[1], generator=generator)
    return (centres[:, None] + noise).flatten(0, 1)


def test_precision_and_recall():
    centres = 10 * torch.eye(4, 8)
    real = clusters(centres, 50, seed=0)
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real + 100, real) == (0.0, 0.0)
    fresh_precision, fresh_recall = precision_recall(clusters(centres, 50, seed=1), real)
    assert fresh_precision > 0.8 and fresh_recall > 0.8  # a new draw of the same clusters
    precision, recall = precision_recall(clusters(centres[:2], 100, seed=2), real)  # 2 of 4
    assert precision == pytest.approx(fresh_precision, abs=0.1)
    assert recall == pytest.approx(fresh_recall / 2, abs=0.05)
    tiny = precision_recall(real[:2], real)  # k shrinks to N − 1 for two samples
    assert 0 <= tiny[1] <= tiny[0] == 1.0


def test_nearest_distances_match_cdist():
    generator = torch.Generator().manual_seed(0)
    queries, base = torch.rand(7, 20, generator=generator), torch.rand(30, 20, generator=generator)
    distances = torch.cdist(queries, base)
    assert torch.allclose(nearest_distances(queries, base), distances.min(1).values, atol=1e-5)
    second = distances.sort(1).values[:, 1]
    assert torch.allclose(nearest_distances(queries, base, k=2), second, atol=1e-5)
    own = torch.cdist(base, base).sort(1).values[:, 3]
    assert torch.allclose(nearest_distances(base, base, 3, skip_self=True), own, atol=1e-4)


def test_digit_shares_against_known_reference_shares():
    """Total variation ½ Σ|p − q| and the largest gap, with q chosen from the predictions p."""
    model, facts = load_digit_classifier()
    images, train = blobs(50, seed=5), blobs(300, seed=0)
    _, probabilities = classify(model, images)
    predicted = np.bincount(probabilities.argmax(1).numpy(), minlength=10) / 50

    def shares_against(reference_share):
        reference = build_reference(train, model, facts["train_mu"].numpy(),
                                    facts["train_sigma"].numpy(), reference_share, 1.0)
        values = measure(images, model, reference)
        return values["class_tv"], values["largest_share_gap"]

    assert shares_against(predicted) == (0.0, 0.0)
    digit = int(predicted.argmax())
    tv, largest = shares_against(np.eye(10)[digit])
    assert tv == pytest.approx(1 - predicted[digit]) and largest == pytest.approx(tv)


def test_classify_refuses_floats():
    model, _ = load_digit_classifier()
    with pytest.raises(ValueError, match="uint8"):
        classify(model, torch.zeros(2, 3, 28, 28))


def test_reference_subset_does_not_depend_on_the_order():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8, generator=generator)
    order = torch.randperm(300, generator=generator)
    chosen = images[reference_subset(images, 100)]
    again = images[order][reference_subset(images[order], 100)]
    as_set = {tuple(image.flatten().tolist()) for image in chosen}
    assert len(as_set) == 100 and as_set == {tuple(i.flatten().tolist()) for i in again}
    rgb = images[order].expand(-1, 3, -1, -1)
    assert torch.equal(reference_subset(rgb, 100), reference_subset(images[order], 100))


def blobs(count: int, seed: int) -> torch.Tensor:
    """Random bright rectangles on black: uint8 (count, 3, 28, 28)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 3, 28, 28, dtype=torch.uint8)
    for image in images:
        top, left = torch.randint(2, 14, (2,), generator=generator).tolist()
        image[:, top: top + 12, left: left + 6] = torch.randint(
            100, 256, (12, 6), dtype=torch.uint8, generator=generator)
    return images


def test_memorisation_flags_copies_not_fresh_images():
    model, facts = load_digit_classifier()
    train = blobs(300, seed=0)
    copies, fresh = train[:20], blobs(20, seed=1)
    report = evaluate_samples(torch.cat([copies, fresh]), train, model, facts)
    assert report.memorised_share == pytest.approx(0.5)
    assert evaluate_samples(fresh, train, model, facts).memorised_share == 0.0
    assert evaluate_samples(train[:40], train, model, facts).memorised_share == 1.0


def test_report_summary_and_summarise(capsys):
    model, facts = load_digit_classifier()
    train = blobs(300, seed=0)
    reports = [evaluate_samples(blobs(64, seed), train, model, facts, seed=seed)
               for seed in (3, 4)]
    assert reports[0].count == 64 and 0 <= reports[0].precision <= 1
    assert reports[0].digit_fid > 10 * reports[0].digit_fid_floor  # blobs are not digits
    stats = summarise(reports)
    values = np.array([[getattr(r, key) for key in KEYS] for r in reports])
    for key, column in zip(KEYS, values.T, strict=True):
        assert stats[key] == pytest.approx((column.mean(), column.std(ddof=1)))
    assert summarise(reports[:1])["kid"] == (reports[0].kid, 0.0)
    table = measure_table(reports)
    assert "digit-FID (not an FID)" in table and "±" in table and "mean ± std of 2 sets" in table
    fid_row = next(line for line in table.splitlines() if line.startswith("digit-FID"))
    assert f"{reports[0].floors['digit_fid']:.3f}" in fid_row
    assert "predicted digits:" in reports[0].summary() and "±" not in reports[0].summary()


@pytest.mark.slow
@pytest.mark.real_mnist
def test_mnist_test_set_scores_at_its_stored_floor(mnist_dir, tmp_path):
    model, facts = load_digit_classifier()
    test_images, test_labels = load_mnist_idx(mnist_dir, train=False, download_root=tmp_path)
    train_images, _ = load_mnist_idx(mnist_dir, train=True, download_root=tmp_path)
    with torch.no_grad():
        predictions = model(test_images.float() / 127.5 - 1).argmax(1)
    assert (predictions == test_labels).double().mean().item() == pytest.approx(
        facts["test_accuracy"], abs=1e-4)
    report = evaluate_samples(test_images, train_images, model, facts)
    for key in KEYS:
        assert getattr(report, key) == pytest.approx(facts["floors"][key], rel=1e-3, abs=1e-6), key
    # the PNG folder's order picks the same reference subset: the same numbers
    shuffled = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))
    as_png_folder = train_images[shuffled].expand(-1, 3, -1, -1)
    again = evaluate_samples(test_images, as_png_folder, model, facts)
    assert again.kid == pytest.approx(report.kid, rel=1e-3)
    assert again.precision == pytest.approx(report.precision, abs=1e-4)


def test_cli_prints_one_table_for_one_or_several_folders(tiny_mnist_rgb, tmp_path, capsys):
    second = write_digit_folder(tmp_path / "second", per_digit=2, seed=1)
    main([str(tiny_mnist_rgb), "--train_dir", str(tiny_mnist_rgb)])
    heading, *lines = capsys.readouterr().out.splitlines()
    assert "not the Inception FID" in heading and str(tiny_mnist_rgb) in heading
    fid_row = next(line for line in lines if line.startswith("digit-FID"))
    model, facts = load_digit_classifier()
    expected = evaluate_samples(load_folder(tiny_mnist_rgb), load_folder(tiny_mnist_rgb),
                                model, facts)
    assert re.split(r"\s{2,}", fid_row)[1] == f"{expected.digit_fid:.3f}"
    assert any(line.startswith("memorised") for line in lines)
    notes = [line for line in lines if line.startswith("note: ")]  # tiny sets: incomparable
    assert "40 images, not 10,000" in notes[0] and "holds 40 images, not MNIST's" in notes[1]
    main([str(tiny_mnist_rgb), str(second), "--train_dir", str(tiny_mnist_rgb)])
    out = capsys.readouterr().out
    assert "mean ± std of 2 sets" in out and "±" in out.splitlines()[3]


@pytest.mark.parametrize("problem", ["missing", "one image", "wrong size", "not a png",
                                     "no training images", "broken training image"])
def test_cli_errors_are_one_line(problem, tiny_mnist_rgb, tmp_path):
    folder = write_digit_folder(tmp_path / "samples", per_digit=1)
    train_dir, expected = tiny_mnist_rgb, {
        "missing": "image folder not found: .*nowhere", "one image": "at least 2 images, got 1",
        "wrong size": r"odd\.png is 32×32, not 28×28",
        "not a png": r"cannot read image .*odd\.png",
        "no training images": "not found in .*no_train.*python -m ddpm_lib.data",
        "broken training image": r"broken\.png.*python -m ddpm_lib\.data"}[problem]
    if problem == "missing":
        folder = tmp_path / "nowhere"
    elif problem == "one image":
        folder = tmp_path / "lonely"
        folder.mkdir()
        Image.new("RGB", (28, 28)).save(folder / "00001.png")
    elif problem == "wrong size":
        Image.new("RGB", (32, 32)).save(folder / "3" / "odd.png")
    elif problem == "not a png":
        (folder / "3" / "odd.png").write_bytes(b"not a png")
    elif problem == "no training images":
        train_dir = tmp_path / "no_train"
    else:  # the training folder is read by data.py's reader, which names a bad file
        train_dir = write_digit_folder(tmp_path / "train", per_digit=1)
        (train_dir / "3" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit) as caught:
        main([str(folder), "--train_dir", str(train_dir)])
    message = caught.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message
    assert re.search(expected, message)


def test_cli_module_exits_non_zero_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ddpm_lib.evaluator", str(tmp_path / "nowhere")],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("nowhere")


def test_load_folder_reads_the_files_the_fid_reads(tmp_path):
    folder = write_digit_folder(tmp_path / "samples", per_digit=1)
    Image.new("L", (28, 28), 200).save(folder / "grey.png")
    Image.new("RGB", (28, 28), (0, 0, 0)).save(folder / "black.jpg")
    images = load_folder(folder)
    files = list_images(folder)
    assert len(files) == 12 and images.shape == (12, 3, 28, 28) and images.dtype == torch.uint8
    for path, image in zip(files, images, strict=True):
        with Image.open(path) as expected:
            assert np.array_equal(image.permute(1, 2, 0).numpy(), np.array(expected.convert("RGB")))
    assert images[files.index(folder / "grey.png")].eq(200).all()
