"""Generation: the submission's files, the report grid, refusals of mismatched flags, and a
rerun that continues only its own set (provenance), redoing files a crash cut short."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ddpm_lib import fid, generate
from ddpm_lib.checkpoint import load_checkpoint, save_checkpoint
from ddpm_lib.diffusion import sampler_timesteps
from ddpm_lib.generate import (
    generate_images,
    load_for_sampling,
    sample_batch,
    to_pixels,
    visualization_timesteps,
)
from ddpm_lib.schedule import make_schedule
from ddpm_lib.train import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint from a few CPU steps on a 40-image folder made by the test."""
    from conftest import write_digit_folder

    root = tmp_path_factory.mktemp("run")
    data = write_digit_folder(root / "mnist_rgb")
    train(TrainConfig(
        data_path=str(data), epochs=1, batch_size=8, timesteps=20, base_dim=8, time_emb_dim=16,
        checkpoint_dir=str(root / "checkpoints"), sample_dir=str(root / "samples"),
        sample_steps=3, num_eval_images=8, device="cpu",
    ))
    return root / "checkpoints" / "best_model.pt"


@pytest.fixture(scope="module")
def other_checkpoint(checkpoint):
    """Checkpoint B: A's state a step later, its EMA weights scaled by 1.01."""
    state = load_checkpoint(checkpoint)
    state["step"] += 1
    for weight in state["ema_model"].values():
        weight.mul_(1.01) if weight.is_floating_point() else None
    return save_checkpoint(state, checkpoint.parent / "other.pt")


def run(checkpoint, out, *flags):
    """``python -m ddpm_lib.generate`` in-process: 4-step DDIM on the CPU, then ``flags``."""
    generate.main(["--checkpoint", str(checkpoint), "--output_dir", str(out), "--device", "cpu",
                   "--sampler", "ddim", "--sampling_steps", "4", *flags])


def contents(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_generate_writes_exactly_n_named_rgb_pngs(checkpoint, tmp_path):
    out = tmp_path / "generated_images"
    generate.main(["--checkpoint", str(checkpoint), "--output_dir", str(out),
                   "--num_images", "10", "--batch_size", "4", "--device", "cpu"])
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:05d}.png" for i in range(1, 11)]
    for name in names:
        with Image.open(out / name) as image:
            assert image.size == (28, 28) and image.mode == "RGB" and image.format == "PNG"


@pytest.mark.parametrize("damage", ["deleted", "empty", "truncated", "no IEND"])
def test_an_interrupted_generation_resumes_with_the_same_images(checkpoint, tmp_path, damage):
    loaded = load_for_sampling(checkpoint)
    out = tmp_path / "images"
    first = generate_images(loaded, out, num_images=6, batch_size=4, sampler="ddim",
                            sampling_steps=4)
    before = contents(out)
    broken = {"deleted": None, "empty": b"", "truncated": before["00005.png"][:200],
              "no IEND": before["00005.png"][:-12]}[damage]
    (out / "00005.png").unlink() if broken is None else (out / "00005.png").write_bytes(broken)
    (out / ".00006.png.tmp").write_bytes(b"half a write")  # an interrupted atomic write
    again = generate_images(loaded, out, num_images=6, batch_size=4, sampler="ddim",
                            sampling_steps=4)
    assert first["written"] == 6 and again["written"] == 2 and again["skipped"] == 4
    assert contents(out) == before  # the same bytes, and the temporary file gone
    # Batch 1 (00005.png, 00006.png) redone alone, as the benchmarks sample it.
    redone = to_pixels(sample_batch(loaded.model, loaded.schedule, (2, 3, 28, 28), 0, 1, "ddim", 4))
    for image, name in zip(redone, ("00005.png", "00006.png"), strict=True):
        with Image.open(out / name) as png:
            assert torch.equal(torch.from_numpy(np.array(png)).permute(2, 0, 1), image)


def test_generate_refuses_a_folder_holding_other_pngs(checkpoint, tmp_path):
    out = tmp_path / "images"
    out.mkdir()
    Image.new("RGB", (28, 28)).save(out / "00011.png")
    with pytest.raises(ValueError, match="00011.png.*--output_dir"):
        generate_images(load_for_sampling(checkpoint), out, num_images=10, sampling_steps=2,
                        sampler="ddim")


def test_another_checkpoint_is_refused_before_sampling(checkpoint, other_checkpoint, tmp_path,
                                                       monkeypatch):
    """The issue's reproduction: 64 images from A, then 200 from B into the same folder."""
    out = tmp_path / "generated_images"
    run(checkpoint, out, "--num_images", "64")
    before = contents(out)
    monkeypatch.setattr(generate, "sample_batch", lambda *args, **kwargs: pytest.fail("sampled"))
    with pytest.raises(SystemExit, match="00001.png.*checkpoint differs.*other.pt.*--output_dir"):
        run(other_checkpoint, out, "--num_images", "200")
    assert contents(out) == before and len(before) == 64


def test_a_renamed_copy_of_the_checkpoint_continues_its_set(checkpoint, tmp_path):
    out, copy = tmp_path / "generated_images", tmp_path / "my_model.pt"
    run(checkpoint, out, "--num_images", "4", "--batch_size", "2")
    before = contents(out)
    copy.write_bytes(checkpoint.read_bytes())
    run(copy, out, "--num_images", "6", "--batch_size", "2")  # the same weights: continued
    assert len(contents(out)) == 6 and contents(out).items() >= before.items()


@pytest.mark.parametrize(("flags", "named"), [
    (["--seed", "1"], "seed"), (["--sampling_steps", "3"], "steps"), (["--batch_size", "3"],
    "batch_size"), (["--sampler", "ancestral"], "sampler"), (["--weights", "model"], "weights")])
def test_other_settings_are_refused_naming_the_setting(checkpoint, tmp_path, flags, named):
    out = tmp_path / "images"
    run(checkpoint, out, "--num_images", "4", "--batch_size", "2")
    before = contents(out)
    with pytest.raises(SystemExit, match=f"{named} differs"):
        run(checkpoint, out, "--num_images", "6", "--batch_size", "2", *flags)
    assert contents(out) == before
    run(checkpoint, out, "--num_images", "6", "--batch_size", "2")  # the same settings continue
    assert len(contents(out)) == 6 and contents(out).items() >= before.items()


def test_pngs_without_provenance_are_refused_and_kept(checkpoint, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    Image.new("RGB", (28, 28)).save(out / "00002.png")
    with pytest.raises(SystemExit, match="00002.png: no provenance"):
        run(checkpoint, out, "--num_images", "4")
    assert list(contents(out)) == ["00002.png"]


def test_an_unwritable_output_dir_fails_at_once(checkpoint, tmp_path):
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o555)
    if os.access(out, os.W_OK):  # root ignores the mode bits: sysfs refuses even root
        out = Path("/sys/ddpm_lib_test")
    started = time.perf_counter()
    with pytest.raises(SystemExit, match=f"--output_dir {out} "):
        run(checkpoint, out)
    assert time.perf_counter() - started < 1
    result = subprocess.run([sys.executable, "-m", "ddpm_lib.generate", "--checkpoint",
                             str(checkpoint), "--output_dir", str(out)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1 and str(out) in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("flags", [["--num_images", "0"], ["--batch_size", "0"],
                                   ["--sampling_steps", "0"], ["--sampling_steps", "21"]])
def test_bad_counts_are_errors_before_any_file(checkpoint, tmp_path, flags):
    with pytest.raises(SystemExit, match=f"{flags[0]} {flags[1]}"):
        run(checkpoint, tmp_path / "images", *flags)
    assert not (tmp_path / "images").exists()  # not even an empty folder left behind


def test_visualize_refuses_zero_steps_instead_of_taking_the_default(checkpoint, tmp_path):
    with pytest.raises(SystemExit, match="--sampling_steps 0"):
        run(checkpoint, tmp_path / "grid", "--mode", "visualize", "--sampler", "ddim",
            "--sampling_steps", "0")


def test_a_folder_given_as_checkpoint_is_named_as_a_folder(checkpoint, tmp_path):
    with pytest.raises(SystemExit, match=f"{checkpoint.parent} is a folder"):
        generate.main(["--checkpoint", str(checkpoint.parent), "--output_dir",
                       str(tmp_path / "images")])
    assert not (tmp_path / "images").exists()


def test_fid_check_fails_on_a_mixed_set(checkpoint, other_checkpoint, tmp_path, capsys):
    mixed, other = tmp_path / "mixed", tmp_path / "other"
    run(checkpoint, mixed, "--num_images", "4", "--batch_size", "2")
    run(other_checkpoint, other, "--num_images", "4", "--batch_size", "2")
    capsys.readouterr()
    fid.main(["--check", str(mixed), "--num_images", "4"])
    assert capsys.readouterr().out.startswith("OK")
    (mixed / "00003.png").write_bytes((other / "00003.png").read_bytes())
    with pytest.raises(SystemExit, match="first: 00003.png: .*checkpoint differs"):
        fid.main(["--check", str(mixed), "--num_images", "4"])


def test_visualize_writes_the_8_by_8_grid(checkpoint, tmp_path):
    out = tmp_path / "diffusion_visualization"
    generate.main(["--checkpoint", str(checkpoint), "--output_dir", str(out),
                   "--mode", "visualize", "--device", "cpu"])
    with Image.open(out / "diffusion_process.png") as grid:
        assert grid.size == (8 * 30 + 2, 8 * 30 + 2)  # 8 × (28 px + 2 px padding) + border
    assert (out / "diffusion_process_labeled.png").is_file()
    assert (out / "diffusion_process_labeled.pdf").is_file()


def test_visualization_goes_from_noise_to_image():
    schedule = make_schedule("linear", 1000)
    assert visualization_timesteps(schedule, "ddpm", 0) == [1000, 857, 714, 571, 429, 286, 143, 0]
    for sampler in ("ddim", "ancestral", "dpm++"):
        picked = visualization_timesteps(schedule, sampler, 50)
        assert picked[0] == 1000 and picked[-1] == 0 and len(picked) == 8
        assert set(picked[1:]) <= set(sampler_timesteps(schedule, sampler, 50)), sampler


@pytest.mark.parametrize("sampler", ["ancestral", "dpm++"])
def test_visualize_works_with_every_strided_sampler(checkpoint, tmp_path, sampler):
    """Each column must be a timestep the sampler visits (λ-spaced for dpm++), or it has no x_t."""
    out = tmp_path / sampler
    generate.main(["--checkpoint", str(checkpoint), "--output_dir", str(out), "--mode",
                   "visualize", "--sampler", sampler, "--sampling_steps", "12",
                   "--variance", "small", "--device", "cpu"])
    with Image.open(out / "diffusion_process.png") as grid:
        assert grid.size == (8 * 30 + 2, 8 * 30 + 2)


def test_a_flag_that_contradicts_the_checkpoint_is_an_error(checkpoint, tmp_path):
    with pytest.raises(SystemExit, match="base_dim.*64"):
        generate.main(["--checkpoint", str(checkpoint), "--base_dim", "64",
                       "--output_dir", str(tmp_path), "--device", "cpu"])
    # Agreeing flags are accepted.
    loaded = load_for_sampling(checkpoint, requested={"base_dim": 8, "timesteps": 20})
    assert loaded.schedule.num_timesteps == 20


def test_a_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="nope.pt"):
        generate.main(["--checkpoint", str(tmp_path / "nope.pt")])


def test_ema_and_raw_weights_differ(checkpoint):
    ema = load_for_sampling(checkpoint, weights="ema").model.state_dict()
    raw = load_for_sampling(checkpoint, weights="model").model.state_dict()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)


def test_fid_check_names_the_one_foreign_file_even_when_it_is_the_first(
        checkpoint, other_checkpoint, tmp_path):
    mixed, other = tmp_path / "mixed", tmp_path / "other"
    run(checkpoint, mixed, "--num_images", "4", "--batch_size", "2")
    run(other_checkpoint, other, "--num_images", "1")
    (mixed / "00001.png").write_bytes((other / "00001.png").read_bytes())
    with pytest.raises(SystemExit, match=r"\(1 problems\); the first: 00001.png: made "
                                         r"otherwise than the other 3"):
        fid.main(["--check", str(mixed), "--num_images", "4"])


def test_visualize_has_its_own_folder_and_spares_a_generated_set(checkpoint, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    generate.main(["--checkpoint", str(checkpoint), "--device", "cpu", "--num_images", "2",
                   "--sampler", "ddim", "--sampling_steps", "8"])
    generate.main(["--checkpoint", str(checkpoint), "--device", "cpu", "--mode", "visualize",
                   "--sampler", "ddim", "--sampling_steps", "8"])
    assert sorted(p.name for p in (tmp_path / "generated_images").iterdir()) == [
        "00001.png", "00002.png"]
    assert (tmp_path / "diffusion_visualization" / "diffusion_process.png").is_file()
    with pytest.raises(SystemExit, match="holds a generated set"):
        generate.main(["--checkpoint", str(checkpoint), "--device", "cpu", "--mode",
                       "visualize", "--output_dir", "generated_images"])
    assert len(list((tmp_path / "generated_images").iterdir())) == 2
    with pytest.raises(SystemExit, match="--sampling_steps 5: ddim then visits 6 timesteps"):
        generate.main(["--checkpoint", str(checkpoint), "--device", "cpu", "--mode",
                       "visualize", "--sampler", "ddim", "--sampling_steps", "5",
                       "--output_dir", "v"])


@pytest.mark.parametrize(("flags", "named"), [
    (["--num_images", "100000"], "--num_images 100000 .* 1 … 99,999 images"),
    (["--output_dir", ""], "--output_dir is empty")])
def test_impossible_sets_are_refused_at_once(checkpoint, tmp_path, monkeypatch, flags, named):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=named):
        generate.main(["--checkpoint", str(checkpoint), "--device", "cpu", *flags])
    assert list(tmp_path.iterdir()) == []


def test_damaged_provenance_and_configs_are_named(checkpoint, tmp_path):
    out = tmp_path / "g"
    run(checkpoint, out, "--num_images", "2")
    info = PngInfo()
    info.add_text("Source", "{broken json")
    Image.new("RGB", (28, 28)).save(out / "00002.png", pnginfo=info)
    with pytest.raises(SystemExit, match="00002.png: its provenance .* is damaged"):
        run(checkpoint, out, "--num_images", "2")
    state = load_checkpoint(checkpoint)
    del state["config"]["timesteps"]
    with pytest.raises(SystemExit, match="its config lacks 'timesteps'"):
        run(save_checkpoint(state, tmp_path / "edited.pt"), tmp_path / "h")


def test_ctrl_c_exits_130_in_one_line(checkpoint, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(generate, "generate_images", interrupted)
    with pytest.raises(SystemExit) as caught:
        run(checkpoint, tmp_path / "g")
    assert caught.value.code == 130
    assert "the same command continues the set" in capsys.readouterr().err
