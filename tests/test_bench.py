"""The benchmark scripts run at toy size on the CPU, so they cannot rot."""

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_speed  # noqa: E402


def test_speed_benchmark_runs_at_toy_size(tmp_path, capsys):
    out = tmp_path / "speed.json"
    result = bench_speed.main([
        "--device", "cpu", "--base_dim", "8", "--batch_sizes", "4", "8", "--train_steps", "2",
        "--num_images", "10", "--sample_batch", "4", "--samplers", "ddim:2", "dpm++:3",
        "--ddpm_measured_steps", "2", "--timesteps", "20", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [row["batch_size"] for row in result["training"]] == [4, 8]
    assert all(row["images_per_second"] > 0 and 0 < row["mfu"] < 1 for row in result["training"])
    assert set(result["sampling_seconds"]) == {"compile_and_warm_up", "ddim_2", "dpm++_3",
                                               "ddpm_20_extrapolated"}
    assert all(seconds > 0 for seconds in result["sampling_seconds"].values())
    assert result["forward_flops_per_image"] > 0
    assert "images/s" in capsys.readouterr().out


def test_quality_benchmark_runs_at_toy_size(tmp_path, tiny_mnist_rgb, capsys):
    import bench_quality

    out, grid = tmp_path / "quality.json", tmp_path / "grid.png"
    result = bench_quality.main([
        "--data_path", str(tiny_mnist_rgb), "--device", "cpu", "--base_dim", "8",
        "--batch_size", "8", "--epochs", "2", "--timesteps", "20", "--train_minutes", "60",
        "--eval_every_minutes", "0", "--num_images", "12", "--sample_batch", "5",
        "--final_samplers", "ddpm", "ddim:3", "dpm++:3:noclip", "ancestral:3:small,noclip",
        "--curve_sampler", "ddim:2",
        "--json", str(out), "--grid", str(grid)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    curve = result["curve"]  # scored after each of the 2 epochs of 40 images / 8 = 5 steps
    assert [(p["epoch"], p["step"], p["images_seen"]) for p in curve] == [(1, 5, 40), (2, 10, 80)]
    assert 0 < curve[0]["wall_seconds"] < curve[1]["wall_seconds"]
    assert 0 < curve[0]["loop_seconds"] < curve[1]["loop_seconds"]
    assert all(p["digit_fid"] > 0 and p["digit_fid_floor"] > 0 for p in curve)
    assert all(0 <= p["precision"] <= 1 and 0 <= p["memorised_share"] <= 1 for p in curve)
    assert [(f["sampler"], f["steps"], f["clip_denoised"], f["variance"])
            for f in result["final"]] == [
        ("ddpm", 0, True, None), ("ddim", 3, True, None), ("dpm++", 3, False, None),
        ("ancestral", 3, False, "small")]
    for row in result["final"]:
        assert abs(sum(row["class_share"]) - 1) < 1e-9 and row["sampling_seconds"] > 0
    assert result["training_images_per_second"] > 0 and grid.is_file()
    assert "digit-FID" in capsys.readouterr().out


def test_sampler_specs_parse_and_refuse_clearly():
    import bench_quality

    parse = bench_quality.parse_sampler
    assert parse("ancestral:20:large,noclip") == bench_quality.SamplerSpec("ancestral", 20, False,
                                                                           "large")
    assert parse("ddpm:0:small").label(1000) == "ddpm 1000 steps (small)"
    assert parse("dpm++").label(1000) == "dpm++ 20 steps"
    for bad in ("ddim:50:large", "ancestral:50:small,large", "ancestral:x", "euler", "ddim:5:fast"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected SAMPLER"):
            parse(bad)


def test_quality_benchmark_trains_the_diffusers_baseline_in_the_same_run(
        tmp_path, tiny_mnist_rgb, monkeypatch):
    pytest.importorskip("diffusers")
    import bench_quality

    # The baseline keeps the assignment's recipe; shrink that recipe for a CPU-sized test.
    monkeypatch.setattr(bench_quality.TrainConfig, "from_recipe", classmethod(
        lambda cls, recipe, **kw: cls(**{"base_dim": 8, "batch_size": 8, **kw})))
    result = bench_quality.main([
        "--side_by_side", "--data_path", str(tiny_mnist_rgb), "--device", "cpu",
        "--timesteps", "20", "--train_minutes", "0.01", "--eval_every_minutes", "0.001",
        "--num_images", "6", "--sample_batch", "6", "--final_samplers", "ddim:2",
        "--curve_sampler", "ddim:2",
        "--json", str(tmp_path / "q.json")])
    baseline = result["baseline"]
    assert (result["network"], baseline["network"]) == ("workbook", "diffusers")
    assert baseline["parameters"] == bench_quality.DiffusersUNet(28, 8).num_parameters()
    assert baseline["diffusers_schedule_max_abs_gap"] < 1e-6
    assert baseline["arguments"]["compile"] == "no"
    # 0.01 minutes stop the main run long before the recipe's 100 epochs, and the baseline gets
    # the same wall-time budget: it trains at least as long as the main run did
    assert result["curve"][-1]["wall_seconds"] >= 0.6 and result["curve"][-1]["epoch"] < 100
    assert baseline["curve"][-1]["wall_seconds"] >= 0.99 * result["curve"][-1]["wall_seconds"]
    assert baseline["final"][0]["digit_fid"] > 0
    assert json.loads((tmp_path / "q.json").read_text())["baseline"]["network"] == "diffusers"
    assert (tmp_path / "q_diffusers.json").is_file()


def test_quality_benchmark_scores_a_checkpoint_without_training(tmp_path, tiny_mnist_rgb):
    import bench_quality

    from ddpm_lib.train import TrainConfig, train

    train(TrainConfig(data_path=str(tiny_mnist_rgb), base_dim=8, time_emb_dim=16, epochs=1,
                      batch_size=8, timesteps=20, sample_steps=5, device="cpu",
                      checkpoint_dir=str(tmp_path / "c"), sample_dir=str(tmp_path / "s")))
    result = bench_quality.main([
        "--checkpoint", str(tmp_path / "c" / "last.pt"), "--device", "cpu", "--timesteps", "20",
        "--data_path", str(tiny_mnist_rgb),
        "--num_images", "6", "--sample_batch", "6", "--final_samplers", "ddim:2", "ancestral:2",
        "--json", str(tmp_path / "q.json")])
    assert result["curve"] == [] and result["training_images_per_second"] is None
    assert [row["sampler"] for row in result["final"]] == ["ddim", "ancestral"]
    assert all(row["digit_fid"] > 0 for row in result["final"])


def test_cuda_graph_comparison_and_step_profile_run_at_toy_size(capsys):
    """The two GPU diagnostics, on the CPU without compiling: their timing and profiling code."""
    import bench_cuda_graphs
    import profile_step

    rows = bench_cuda_graphs.main(["--device", "cpu", "--base_dims", "8", "--batch_sizes", "2",
                                   "--modes", "eager", "--warmup_steps", "1", "--steps", "2"])
    assert [(row["base_dim"], row["batch_size"], row["mode"]) for row in rows] == [(8, 2, "eager")]
    assert rows[0]["images_per_second"] > 0 and rows[0]["loss"] > 0
    profiles = profile_step.main(["--device", "cpu", "--base_dim", "8", "--batch_sizes", "2",
                                  "--compile", "no", "--repeats", "2"])
    assert set(profiles[0]["milliseconds"]) == {"full step", "fwd+bwd", "fwd (no grad)", "adamw",
                                                "ema", "clip"}
    assert all(ms > 0 for ms in profiles[0]["milliseconds"].values())
    output = capsys.readouterr().out
    assert "ms/step" in output and "host time per step" in output and "Self CPU" in output


def test_evaluator_sensitivity_table_runs_at_toy_size(tmp_path, monkeypatch, capsys):
    """Synthetic "MNIST" (random strokes) through the whole script: rows, seeds, table, JSON."""
    import bench_evaluator
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(0)

    def fake_mnist(source_dir, train=True, download_root=None):
        count = 300 if train else 60
        images = torch.zeros(count, 1, 28, 28, dtype=torch.uint8)
        for image in images:
            top, left = torch.randint(3, 15, (2,), generator=generator).tolist()
            image[0, top: top + 10, left: left + 4] = 255
        return images, torch.arange(count) % 10

    monkeypatch.setattr(bench_evaluator, "load_mnist_idx", fake_mnist)
    samples = []
    for seed, shape in ((1, (30, 28, 28)), (2, (30, 3, 28, 28))):
        path = tmp_path / f"seed{seed}.npz"
        rng = np.random.default_rng(seed)
        np.savez(path, images=rng.integers(0, 256, shape, dtype=np.uint8))
        samples.append(str(path))
    out = tmp_path / "evaluator.json"
    result = bench_evaluator.main(["--mnist_dir", str(tmp_path), "--num_images", "50",
                                   "--device", "cpu", "--samples", "noise=" + ",".join(samples),
                                   "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["MNIST test", "test + noise σ=0.1", "test + noise σ=0.3",
                          "test blurred σ=1 px", "test digits 0–4 only", "noise"]
    assert rows["MNIST test"]["count"] == 50 and rows["test digits 0–4 only"]["count"] == 50
    assert rows["noise"]["sets"] == 2 and rows["noise"]["measures"]["kid"]["std"] > 0
    kid = {name: row["measures"]["kid"]["mean"] for name, row in rows.items()}  # vs the toy train
    assert kid["test + noise σ=0.3"] > kid["test + noise σ=0.1"] > kid["MNIST test"]
    table = capsys.readouterr().out
    assert "| noise | 30 |" in table and "±" in table and "stored floor" in table


def test_evaluator_bench_spoilers():
    import bench_evaluator
    import torch

    images = torch.full((4, 1, 28, 28), 128, dtype=torch.uint8)
    noisy = bench_evaluator.with_pixel_noise(images, 0.1)
    assert noisy.dtype == torch.uint8 and 20 < (noisy.float() - 128).std() < 31
    edge = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    edge[..., 14:] = 255
    assert 0 < bench_evaluator.blurred(edge, 1.0)[0, 0, 0, 13] < 255
    labels = torch.tensor([0, 5, 1, 9])
    chosen = bench_evaluator.only_digits(torch.arange(4).view(4, 1, 1, 1), labels, range(5), 5)
    chosen = chosen.flatten().tolist()
    assert len(chosen) == 5 and chosen[:2] == [0, 2] and set(chosen) == {0, 2}  # each once first
    with pytest.raises(SystemExit, match="NAME=path.npz"):
        bench_evaluator.parse_samples(["no_equals_sign"])


def test_quality_curve_scores_every_kept_checkpoint_at_its_wall_time(tmp_path, tiny_mnist_rgb):
    import quality_curve

    from ddpm_lib.train import TrainConfig, train

    train(TrainConfig(data_path=str(tiny_mnist_rgb), base_dim=8, time_emb_dim=16, epochs=3,
                      batch_size=8, timesteps=20, sample_steps=5, device="cpu", save_interval=2,
                      eval_interval=1, checkpoint_dir=str(tmp_path / "c"),
                      sample_dir=str(tmp_path / "s")))
    curve = quality_curve.main([
        str(tmp_path / "c"), "--sampler", "ancestral:2", "--num_images", "6",
        "--sample_batch", "6", "--data_path", str(tiny_mnist_rgb), "--device", "cpu",
        "--json", str(tmp_path / "curve.json")])
    assert [point["checkpoint"] for point in curve] == ["checkpoint_epoch_0002.pt"]
    assert curve[0]["epoch"] == 2 and curve[0]["wall_seconds"] > 0 and curve[0]["digit_fid"] > 0
    assert json.loads((tmp_path / "curve.json").read_text())["curve"][0]["step"] == 10


def test_layout_benchmark_runs_at_toy_size(tmp_path, capsys):
    import bench_layout

    rows = bench_layout.main(["--device", "cpu", "--base_dim", "8", "--sample_batch", "2",
                              "--train_batch", "2", "--forward_passes", "1", "--train_steps", "1",
                              "--json", str(tmp_path / "layout.json")])
    assert [(r["channels_last"], r["cudnn_benchmark"]) for r in rows] == [
        (False, False), (False, True), (True, False), (True, True)]
    assert all(r["forward_seconds"] > 0 and r["train_images_per_second"] > 0 for r in rows)
    assert "images/s" in capsys.readouterr().out
