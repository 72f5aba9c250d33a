"""Class-conditional training and classifier-free guidance: label dropout, the guided ε, the
class embedding, conditional checkpoints, ``generate --digit``, and the guidance benchmark."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from ddpm_lib import generate
from ddpm_lib.diffusion import classifier_free_guidance, diffusion_loss, sample
from ddpm_lib.generate import class_labels, generate_images, load_for_sampling, read_provenance
from ddpm_lib.model import UNet
from ddpm_lib.schedule import make_schedule
from ddpm_lib.train import TrainConfig, train

SCHEDULE = make_schedule("linear", 1000, 1e-4, 0.02)


def tiny_config(data_path: Path, out: Path, **overrides) -> TrainConfig:
    """A conditional run of seconds on the CPU: 40 images, 5 steps an epoch, 2 epochs."""
    return TrainConfig(**{
        "data_path": str(data_path), "epochs": 2, "batch_size": 8, "timesteps": 20,
        "base_dim": 8, "time_emb_dim": 16, "checkpoint_dir": str(out / "checkpoints"),
        "sample_dir": str(out / "samples"), "sample_steps": 3, "num_eval_images": 8,
        "device": "cpu", "class_conditional": True, **overrides})


@pytest.fixture(scope="module")
def conditional_checkpoint(tmp_path_factory) -> Path:
    from conftest import write_digit_folder

    root = tmp_path_factory.mktemp("conditional")
    train(tiny_config(write_digit_folder(root / "mnist_rgb"), root))
    return root / "checkpoints" / "best_model.pt"


@pytest.fixture(scope="module")
def unconditional_checkpoint(tmp_path_factory) -> Path:
    from conftest import write_digit_folder

    root = tmp_path_factory.mktemp("unconditional")
    train(tiny_config(write_digit_folder(root / "mnist_rgb"), root, class_conditional=False,
                      epochs=1))
    return root / "checkpoints" / "best_model.pt"


def recording_model(seen: list):
    """ε̂ = 0, remembering the (x_t, t, labels) of each call."""
    def model(x, t, labels=None):
        seen.append((x, t, labels))
        return torch.zeros_like(x)
    return model


def test_label_dropout_drops_the_share_asked_for_and_keeps_t_and_noise():
    x0, labels = torch.zeros(20_000, 1, 2, 2), torch.arange(20_000) % 10
    for p_uncond in (0.0, 0.1, 0.5):
        seen = []
        diffusion_loss(recording_model(seen), SCHEDULE, x0, torch.Generator().manual_seed(1),
                       labels=labels, label_dropout=p_uncond)
        kept = seen[0][2]
        dropped = (kept == -1).double().mean().item()
        assert abs(dropped - p_uncond) < 0.01  # 4.7 binomial standard deviations at p = 0.1
        assert torch.equal(kept[kept >= 0], labels[kept >= 0])  # the rest untouched
    plain = []  # with labels, t and ε are the unconditional loss's draws (exact resume holds)
    diffusion_loss(recording_model(plain), SCHEDULE, x0, torch.Generator().manual_seed(1))
    assert torch.equal(plain[0][0], seen[0][0]) and torch.equal(plain[0][1], seen[0][1])
    assert plain[0][2] is None


def test_the_parts_of_a_batch_drop_the_labels_the_whole_batch_drops():
    x0, labels = torch.zeros(64, 1, 2, 2), torch.arange(64) % 10
    whole, parts = [], []
    diffusion_loss(recording_model(whole), SCHEDULE, x0, torch.Generator().manual_seed(2),
                   labels=labels, label_dropout=0.3)
    for k in range(4):
        diffusion_loss(recording_model(parts), SCHEDULE, x0[k::4],
                       torch.Generator().manual_seed(2), part=(k, 4), labels=labels[k::4],
                       label_dropout=0.3)
    for k, (_, _, part_labels) in enumerate(parts):
        assert torch.equal(part_labels, whole[0][2][k::4])


def test_the_class_embedding_changes_the_output_and_minus_one_is_no_class():
    torch.manual_seed(0)
    model = UNet(base_dim=8, time_emb_dim=16, num_classes=10).eval()
    x, t = torch.randn(3, 3, 28, 28), torch.tensor([5, 500, 900])
    outputs = [model(x, t, torch.full((3,), digit)) for digit in (0, 7, -1)]
    assert (outputs[0] - outputs[1]).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    assert torch.equal(outputs[2], model(x, t))  # no labels: ∅, the 11th embedding row
    assert model.class_embedding.weight.shape == (11, 64)
    unconditional = UNet(base_dim=8, time_emb_dim=16)
    assert not any("class" in key for key in unconditional.state_dict())
    assert set(model.state_dict()) - set(unconditional.state_dict()) == {
        "class_embedding.weight"}
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(x, t, torch.zeros(3, dtype=torch.long))


def test_guidance_at_w_0_is_the_conditional_model_and_above_extrapolates_from_no_class():
    torch.manual_seed(0)
    model = UNet(base_dim=8, time_emb_dim=16, num_classes=10).eval()
    x, t, labels = torch.randn(4, 3, 28, 28), torch.tensor([1, 10, 100, 999]), torch.arange(4)
    with torch.no_grad():
        conditional, unconditional = model(x, t, labels), model(x, t)
        assert torch.equal(classifier_free_guidance(model, labels, 0.0)(x, t), conditional)
        guided = classifier_free_guidance(model, labels, 2.5)(x, t)
    assert torch.allclose(guided, 3.5 * conditional - 2.5 * unconditional, atol=1e-5)
    assert not torch.allclose(guided, conditional, atol=1e-3)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ancestral", "dpm++", "dpm++sde"])
def test_every_sampler_takes_labels_and_guidance(sampler):
    torch.manual_seed(0)
    model = UNet(base_dim=8, time_emb_dim=16, num_classes=10).eval()
    schedule = make_schedule("linear", 10, 1e-4, 0.02)

    def run(labels, guidance):
        return sample(model, schedule, (2, 3, 28, 28), sampler, 3,
                      torch.Generator().manual_seed(0), labels=labels, guidance=guidance)[0]
    unguided = run(torch.tensor([3, 3]), 0.0)
    assert not torch.allclose(run(torch.tensor([3, 3]), 4.0), unguided, atol=1e-4)
    assert not torch.allclose(run(torch.tensor([8, 8]), 0.0), unguided, atol=1e-4)


def test_balanced_labels_and_refusals_naming_the_flag():
    assert class_labels(None, 5, 10) is None
    assert class_labels("all", 23, 10).tolist() == [i % 10 for i in range(23)]
    assert torch.bincount(class_labels("all", 10_000, 10)).tolist() == [1000] * 10
    assert class_labels("7", 3, 10).tolist() == [7, 7, 7]
    for digit, guidance, words in (("10", 0, "--digit 10"), ("x", 0, "--digit x"),
                                   ("-1", 0, "--digit -1"), ("3", -1.0, "--guidance -1"),
                                   (None, 2.0, "--guidance 2")):
        with pytest.raises(ValueError, match=words):
            class_labels(digit, 4, 10, guidance)
    with pytest.raises(ValueError, match="unconditional.*--class_conditional"):
        class_labels("3", 4, 0)


def test_a_conditional_checkpoint_saves_loads_and_samples(conditional_checkpoint, tmp_path):
    loaded = load_for_sampling(conditional_checkpoint)
    state = torch.load(conditional_checkpoint, weights_only=True)
    assert state["model_config"]["num_classes"] == 10 and state["config"]["class_conditional"]
    assert torch.equal(loaded.model.class_embedding.weight,
                       state["ema_model"]["class_embedding.weight"])
    images = generate.sample_batch(loaded.model, loaded.schedule, (4, 3, 28, 28), 0, 0, "ddim",
                                   3, labels=torch.tensor([1, 2, 3, 4]), guidance=1.5)
    assert images.shape == (4, 3, 28, 28) and images.abs().max() <= 1


def test_generate_all_writes_a_balanced_set_named_as_ever(conditional_checkpoint, tmp_path,
                                                          monkeypatch):
    asked = []
    original = generate.sample_batch
    monkeypatch.setattr(generate, "sample_batch", lambda *args, **kwargs: (
        asked.append(kwargs["labels"]), original(*args, **kwargs))[1])
    out = tmp_path / "images"
    generate.main(["--checkpoint", str(conditional_checkpoint), "--output_dir", str(out),
                   "--device", "cpu", "--sampler", "ddim", "--sampling_steps", "3",
                   "--num_images", "23", "--batch_size", "8", "--digit", "all",
                   "--guidance", "2"])
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(1, 24)]
    assert torch.cat(asked).tolist() == [i % 10 for i in range(23)]  # 00001.png: a 0, …
    made = read_provenance(out / "00023.png", 28)
    assert made["digit"] == "all" and made["guidance"] == 2.0
    with Image.open(out / "00001.png") as image:
        assert image.size == (28, 28) and image.mode == "RGB"
    loaded = load_for_sampling(conditional_checkpoint)
    for digit, guidance, differs in (("3", 2.0, "digit"), ("all", 1.0, "guidance"),
                                     (None, 0.0, "digit")):
        with pytest.raises(ValueError, match=f"{differs} differs"):
            generate_images(loaded, out, 23, 8, "ddim", 3, digit=digit, guidance=guidance)


@pytest.mark.parametrize("flags, words", [
    (["--digit", "12"], "--digit 12"), (["--digit", "3", "--guidance", "-0.5"], "--guidance"),
    (["--guidance", "2"], "--digit"), (["--digit", "3", "--guidance", "nan"], "--guidance nan"),
    (["--digit", "all", "--guidance", "inf"], "--guidance inf"), (["--digit", "٣"], "--digit ٣"),
    (["--digit", "3", "--num_images", "-1"], "--num_images -1")])
def test_generate_refuses_bad_digits_and_guidance_before_sampling(conditional_checkpoint,
                                                                   tmp_path, flags, words):
    out = tmp_path / "images"
    with pytest.raises(SystemExit) as refusal:
        generate.main(["--checkpoint", str(conditional_checkpoint), "--output_dir", str(out),
                       "--device", "cpu", "--num_images", "2", *flags])
    message = str(refusal.value.code)
    assert message.startswith("error: ") and words in message and "\n" not in message
    assert not list(out.glob("*.png"))


def test_generate_refuses_a_digit_from_an_unconditional_checkpoint(unconditional_checkpoint,
                                                                   tmp_path):
    out = tmp_path / "images"
    for mode in ("generate", "visualize"):
        with pytest.raises(SystemExit) as refusal:
            generate.main(["--checkpoint", str(unconditional_checkpoint), "--output_dir",
                           str(out), "--device", "cpu", "--digit", "3", "--mode", mode])
        assert "--class_conditional" in str(refusal.value.code)
    assert not list(out.rglob("*.png"))


def test_conditional_training_resumes_exactly_and_refuses_a_changed_flag(tiny_mnist_rgb,
                                                                         tmp_path):
    whole = tiny_config(tiny_mnist_rgb, tmp_path / "whole")
    train(whole)
    broken = tiny_config(tiny_mnist_rgb, tmp_path / "broken")
    train(replace(broken, max_steps=3))
    train(replace(broken, resume="last"))
    a, b = (torch.load(Path(c.checkpoint_dir) / "last.pt", weights_only=True)
            for c in (whole, broken))
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    for change in ({"class_conditional": False}, {"label_dropout": 0.2}):
        with pytest.raises(ValueError, match=f"--{next(iter(change))}"):
            train(replace(broken, resume="last", **change))


def test_label_dropout_without_class_conditional_is_refused_not_ignored(tmp_path):
    with pytest.raises(ValueError, match="--label_dropout 0.2 acts only with --class_conditional"):
        TrainConfig(data_path=str(tmp_path), label_dropout=0.2)
    assert TrainConfig(data_path=str(tmp_path), class_conditional=True, label_dropout=0.2)


def test_conditional_training_refuses_a_flat_folder(tiny_mnist_rgb, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for index, path in enumerate(sorted(tiny_mnist_rgb.rglob("*.png"))):
        path.rename(flat / f"{index:05d}.png")
    with pytest.raises(ValueError, match="--class_conditional.*0/ … 9/"):
        train(tiny_config(flat, tmp_path))


def test_guidance_benchmark_runs_at_toy_size(conditional_checkpoint, tiny_mnist_rgb, tmp_path,
                                              capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_guidance

    out = tmp_path / "guidance.json"
    result = bench_guidance.main([
        "--checkpoint", str(conditional_checkpoint), "--data_path", str(tiny_mnist_rgb),
        "--device", "cpu", "--num_images", "20", "--batch_size", "10", "--sampler", "ddim",
        "--sampling_steps", "3", "--guidance", "0", "2", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [row["guidance"] for row in result["rows"]] == [0, 2]
    for row in result["rows"]:
        assert 0 <= row["fidelity"] <= 1 and row["digit_fid"] > 0 and row["sampling_seconds"] > 0
        assert row["ratio_to_floor"] == pytest.approx(row["digit_fid"]
                                                      / result["digit_fid_floor"])
    assert isinstance(result["target_met"], bool)
    assert "fidelity" in capsys.readouterr().out


@pytest.mark.parametrize("flags, words", [
    (["--guidance", "-1"], "--guidance -1"), (["--guidance", "0", "nan"], "--guidance nan"),
    (["--num_images", "1"], "--num_images 1"), (["--batch_size", "0"], "--batch_size 0"),
    (["--sampling_steps", "0"], "--sampling_steps 0"), (["--json", "."], "--json . is a folder")])
def test_guidance_benchmark_refuses_bad_input_before_sampling(conditional_checkpoint,
                                                              tiny_mnist_rgb, monkeypatch,
                                                              flags, words):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_guidance

    monkeypatch.setattr(bench_guidance, "sample_balanced", lambda *a: pytest.fail("sampled"))
    with pytest.raises(ValueError) as refusal:
        bench_guidance.main(["--checkpoint", str(conditional_checkpoint), "--data_path",
                             str(tiny_mnist_rgb), "--device", "cpu", "--sampler", "ddim",
                             "--sampling_steps", "3", "--json", "/tmp/unused.json", *flags])
    assert words in str(refusal.value)


def test_a_digit_is_recorded_as_one_digit_however_it_was_typed(conditional_checkpoint, tmp_path):
    loaded = load_for_sampling(conditional_checkpoint)
    out = tmp_path / "images"
    generate_images(loaded, out, 2, 2, "ddim", 2, digit="03")
    assert read_provenance(out / "00001.png", 28)["digit"] == "3"
    assert generate_images(loaded, out, 2, 2, "ddim", 2, digit="3")["skipped"] == 2  # same set


def test_guidance_is_refused_where_no_label_was_ever_dropped(tiny_mnist_rgb, tmp_path):
    config = tiny_config(tiny_mnist_rgb, tmp_path, class_conditional=True, label_dropout=0.0)
    train(config)
    loaded = load_for_sampling(Path(config.checkpoint_dir) / "best_model.pt")
    with pytest.raises(ValueError, match="--label_dropout 0"):
        generate_images(loaded, tmp_path / "images", 2, 2, "ddim", 2, digit="3", guidance=2.0)
    generate_images(loaded, tmp_path / "images", 2, 2, "ddim", 2, digit="3")  # w = 0: fine


def test_fid_check_refuses_a_set_of_one_digit(conditional_checkpoint, tmp_path, capsys):
    from ddpm_lib import fid
    for digit in ("3", "all"):
        generate.main(["--checkpoint", str(conditional_checkpoint), "--output_dir",
                       str(tmp_path / digit), "--device", "cpu", "--sampler", "ddim",
                       "--sampling_steps", "3", "--num_images", "4", "--digit", digit])
    with pytest.raises(SystemExit, match="the digit 3 alone"):
        fid.main(["--check", str(tmp_path / "3"), "--num_images", "4"])
    capsys.readouterr()
    fid.main(["--check", str(tmp_path / "all"), "--num_images", "4"])
    assert capsys.readouterr().out.startswith("OK")
