"""The benchmark scripts run at toy size on the CPU, so they cannot rot."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_speed  # noqa: E402


def test_speed_benchmark_runs_at_toy_size(tmp_path, capsys):
    out = tmp_path / "speed.json"
    result = bench_speed.main([
        "--device", "cpu", "--base_dim", "8", "--batch_sizes", "4", "8", "--train_steps", "2",
        "--num_images", "10", "--sample_batch", "4", "--ddim_steps", "2", "3",
        "--ddpm_measured_steps", "2", "--timesteps", "20", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [row["batch_size"] for row in result["training"]] == [4, 8]
    assert all(row["images_per_second"] > 0 and 0 < row["mfu"] < 1 for row in result["training"])
    assert set(result["sampling_seconds"]) == {"ddim_2", "ddim_3", "ddpm_20_extrapolated"}
    assert result["forward_flops_per_image"] > 0
    assert "images/s" in capsys.readouterr().out
