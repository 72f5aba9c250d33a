"""The offline digit evaluator: its network, its committed weights, digit-FID and class balance."""

import numpy as np
import pytest
import torch
from conftest import write_digit_folder
from PIL import Image

from ddpm_lib.data import load_mnist_idx
from ddpm_lib.evaluator import (
    FEATURE_DIM,
    WEIGHTS_PATH,
    DigitClassifier,
    digit_fid,
    digit_statistics,
    evaluate_samples,
    load_digit_classifier,
    load_folder,
    main,
)
from ddpm_lib.fid import list_images


def test_classifier_shapes_and_gray_equals_rgb():
    torch.manual_seed(0)
    model = DigitClassifier().eval()
    gray = torch.rand(4, 1, 28, 28) * 2 - 1
    rgb = gray.expand(-1, 3, -1, -1)
    assert model.features(gray).shape == (4, FEATURE_DIM)
    assert model(gray).shape == (4, 10)
    assert torch.allclose(model(gray), model(rgb))


def test_committed_weights_load_with_their_facts():
    assert WEIGHTS_PATH.stat().st_size < 1024 * 1024
    model, facts = load_digit_classifier()
    assert not model.training
    assert facts["seed"] == 0 and facts["test_accuracy"] > 0.98
    assert facts["digit_fid_floor"] > 0
    assert facts["trained_by"].startswith("tools/train_digit_classifier.py")


def test_statistics_of_a_set_and_digit_fid():
    model, _ = load_digit_classifier()
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 28, 28), dtype=torch.uint8, generator=generator)
    stats = digit_statistics(model, images)
    assert stats.count == 64 and stats.mu.shape == (FEATURE_DIM,)
    assert stats.class_share.sum() == pytest.approx(1.0)
    assert 0.1 <= stats.mean_confidence <= 1.0
    assert digit_fid(stats, stats) == pytest.approx(0.0, abs=1e-6)
    flat = torch.randint(0, 2, (64, 1, 1, 1), dtype=torch.uint8).expand(-1, 3, 28, 28)
    blank = digit_statistics(model, flat.contiguous())
    assert digit_fid(stats, blank) > 1.0
    with pytest.raises(ValueError, match="at least 2 images"):
        digit_statistics(model, images[:1])


@pytest.mark.slow
@pytest.mark.real_mnist
def test_stored_accuracy_and_floor_hold_on_real_mnist(mnist_dir, tmp_path):
    model, facts = load_digit_classifier()
    test_images, test_labels = load_mnist_idx(mnist_dir, train=False, download_root=tmp_path)
    train_images, _ = load_mnist_idx(mnist_dir, train=True, download_root=tmp_path)
    with torch.no_grad():
        predictions = model(test_images.float() / 127.5 - 1).argmax(1)
    assert (predictions == test_labels).float().mean().item() == pytest.approx(
        facts["test_accuracy"], abs=1e-4)
    test_stats = digit_statistics(model, test_images)
    floor = digit_fid(test_stats, digit_statistics(model, train_images))
    assert floor == pytest.approx(facts["digit_fid_floor"], rel=1e-3)
    # The test set's digits are shared out as in MNIST's labels, within a point.
    true_share = torch.bincount(test_labels, minlength=10).double().numpy() / len(test_labels)
    assert abs(test_stats.class_share - true_share).max() < 0.01


def test_real_digits_score_near_the_floor_and_noise_far_from_it(tiny_mnist_rgb, capsys):
    model, facts = load_digit_classifier()
    assert facts["train_mu"].shape == (FEATURE_DIM,)
    assert facts["train_class_share"].sum().item() == pytest.approx(1.0)
    noise = torch.randint(0, 256, (200, 3, 28, 28), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    report = evaluate_samples(noise, model, facts)
    assert report.digit_fid > 10 * report.digit_fid_floor
    assert "not an FID" in report.summary()
    mnist_shares = report.summary().splitlines()[2]
    assert mnist_shares.startswith("MNIST's training: 0: ")
    assert f"1: {100 * facts['train_class_share'][1].item():4.1f}%" in mnist_shares
    main([str(tiny_mnist_rgb)])
    heading, first_line = capsys.readouterr().out.splitlines()[:2]
    assert "not the Inception FID" in heading
    expected = evaluate_samples(load_folder(tiny_mnist_rgb), model, facts)
    assert first_line.startswith(f"digit-FID {expected.digit_fid:.3f} against")
    with pytest.raises(SystemExit, match="error: .*does not exist|error: .*missing|error:"):
        main([str(tiny_mnist_rgb / "nowhere")])


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

    Image.new("RGB", (32, 32)).save(folder / "3" / "odd.png")
    wrong_size = r"1 of 13 images in .*samples are not 28×28.* e\.g\. 3/odd\.png \(32×32\)"
    with pytest.raises(ValueError, match=wrong_size):
        load_folder(folder)
    (folder / "3" / "odd.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*odd\.png"):
        load_folder(folder)

    lonely = tmp_path / "lonely"
    lonely.mkdir()
    Image.new("RGB", (28, 28)).save(lonely / "00001.png")
    with pytest.raises(ValueError, match=r"at least 2 images, got 1 in .*lonely"):
        load_folder(lonely)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_folder(tmp_path / "nowhere")
