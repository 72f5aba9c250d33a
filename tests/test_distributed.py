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


@pytest.mark.slow
def test_a_run_resumed_on_another_number_of_processes_continues_it(tiny_mnist_rgb, tmp_path):
    """Same global batch, 2 processes then 1: the weights of an unbroken 1-process run."""
    def common(name: str) -> list[str]:
        return ["--data_path", str(tiny_mnist_rgb), "--checkpoint_dir", str(tmp_path / name),
                "--sample_dir", str(tmp_path / name / "samples"), *TINY]

    two = torchrun(*common("switched"), "--max_steps", "3")
    assert two.returncode == 0, two.stderr[-3000:]
    for args in (common("switched") + ["--resume"], common("unbroken")):
        done = subprocess.run([sys.executable, "-m", "ddpm_lib.train", *args],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    losses = {}
    for name in ("switched", "unbroken"):
        with open(tmp_path / name / "train_log.csv") as file:
            losses[name] = torch.tensor([float(row["loss"]) for row in csv.DictReader(file)])
    # the same t, ε and images at every step: the losses agree to rounding, on 2 processes too
    # (with each process drawing its own, the first three differed by 0.1-0.9 %)
    assert len(losses["switched"]) == 10
    assert torch.allclose(losses["switched"], losses["unbroken"], rtol=1e-3)
    switched, unbroken = (torch.load(tmp_path / name / "last.pt", weights_only=True)
                          for name in ("switched", "unbroken"))
    assert switched["step"] == unbroken["step"] == 10
    for key, weights in unbroken["model"].items():  # AdamW magnifies rounding near zero
        assert torch.allclose(switched["model"][key], weights, atol=1e-3), key
