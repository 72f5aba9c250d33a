"""Two CPU processes under torchrun (gloo): training, identical weights, one writer, resume."""

import csv
import os
import subprocess
import sys

import pytest
import torch

TINY = ["--epochs", "2", "--batch_size", "8", "--timesteps", "50", "--base_dim", "8",
        "--time_emb_dim", "16", "--save_interval", "1", "--sample_interval", "4",
        "--sample_steps", "3", "--num_eval_images", "16", "--device", "cpu"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", "-m", "ddpm_lib.train", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_gloo_processes_train_identical_replicas_and_resume(tiny_mnist_rgb, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    common = ["--data_path", str(tiny_mnist_rgb), "--checkpoint_dir", str(checkpoints),
              "--sample_dir", str(tmp_path / "samples"), *TINY]
    first = torchrun(*common, "--max_steps", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 process(es)" in first.stdout
    assert first.stdout.count("weights identical on all 2 processes") == 1

    resumed = torchrun(*common, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("weights identical on all 2 processes") == 1  # at the end

    state = torch.load(checkpoints / "last.pt", weights_only=True)
    assert state["step"] == 10
    with open(checkpoints / "train_log.csv") as file:
        steps = [int(row["step"]) for row in csv.DictReader(file)]
    assert steps == list(range(1, 11))  # one writer: no step logged twice
    assert sorted(p.name for p in (tmp_path / "samples").glob("*.png")) == [
        "samples_step_0000003.png", "samples_step_0000004.png", "samples_step_0000008.png",
        "samples_step_0000010.png"]
    assert sorted(p.name for p in checkpoints.glob("*.pt")) == [
        "best_model.pt", "checkpoint_epoch_0001.pt", "checkpoint_epoch_0002.pt", "last.pt"]
