"""The notebooks' first cell: small or full mode, separate folders, messages for missing files;
03's rerun and interrupt messages (Colab: tests/test_colab.py)."""

import pytest
import torch

from ddpm_lib.notebook import (
    TrainingInterrupted,
    find_root,
    finished_run,
    require,
    resumable,
    setup_notebook,
)


def test_small_mode_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DDPM_SMALL", "1")
    assert setup_notebook().small
    monkeypatch.setenv("DDPM_SMALL", "0")
    assert not setup_notebook().small
    monkeypatch.delenv("DDPM_SMALL")
    assert setup_notebook().small == (setup_notebook().device.type == "cpu")


def test_small_mode_writes_under_runs_small_and_shares_the_data():
    small, full = setup_notebook(small=True), setup_notebook(small=False)
    assert small.checkpoint_dir == small.root / "runs" / "small" / "checkpoints"
    assert small.figures_dir.parent == small.generated_dir.parent == small.root / "runs" / "small"
    assert full.checkpoint_dir == full.root / "checkpoints"
    assert full.figures_dir == full.root / "figures"
    assert small.data_dir == full.data_dir == full.root / "data" / "mnist_rgb"


def test_the_root_is_found_from_the_notebooks_folder(tmp_path):
    (tmp_path / "ddpm_lib").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    assert find_root(tmp_path / "notebooks") == tmp_path


def test_a_missing_file_names_the_notebook_that_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="03_train.ipynb") as error:
        require(tmp_path / "best_model.pt", "03_train.ipynb")
    assert "best_model.pt" in str(error.value)
    (tmp_path / "best_model.pt").write_text("")
    assert require(tmp_path / "best_model.pt", "03_train.ipynb") == tmp_path / "best_model.pt"


def test_a_finished_run_is_not_trained_again_and_says_how_to_go_on(tmp_path):
    checkpoints, samples = tmp_path / "checkpoints", tmp_path / "samples"
    assert finished_run(checkpoints, samples, 64) is None  # nothing yet: train
    checkpoints.mkdir()
    torch.save({"step": 32, "epoch": 1.0}, checkpoints / "last.pt")
    torch.save({"step": 32, "epoch": 1.0}, checkpoints / "best_model.pt")
    assert finished_run(checkpoints, samples, 64) is None  # half way: go on
    torch.save({"step": 64, "epoch": 2.0}, checkpoints / "last.pt")
    message = finished_run(checkpoints, samples, 64)
    assert "best_model.pt" in message and "step 32" in message and "epoch 1.0" in message
    assert "epochs" in message and "last.pt" in message  # train on: raise epochs, it resumes
    assert f"delete {checkpoints} and {samples}" in message  # start over
    assert finished_run(checkpoints, samples, 128) is None  # more epochs asked for: go on


def test_a_finished_cosine_run_says_it_cannot_train_on(tmp_path):
    checkpoints, samples = tmp_path / "checkpoints", tmp_path / "samples"
    checkpoints.mkdir()
    config = {"epochs": 2, "lr_schedule": "cosine", "time_budget": 0.0}
    torch.save({"step": 64, "epoch": 2.0, "config": config}, checkpoints / "last.pt")
    torch.save({"step": 64, "epoch": 2.0}, checkpoints / "best_model.pt")
    message = finished_run(checkpoints, samples, 128)  # more epochs asked: a resume would refuse
    assert message is not None and "cannot train on" in message and "raise" not in message
    assert f"delete {checkpoints} and {samples}" in message
    torch.save({"step": 32, "epoch": 1.0, "config": config}, checkpoints / "last.pt")
    assert finished_run(checkpoints, samples, 128) is None  # interrupted half way: go on


def test_an_interrupt_in_a_notebook_is_one_line_naming_last_pt():
    with pytest.raises(TrainingInterrupted) as error, resumable():
        raise KeyboardInterrupt
    (line,) = error.value._render_traceback_()
    assert "last.pt" in line and "--resume" not in line
    with resumable():
        pass  # no interrupt: nothing happens


def test_a_run_that_its_time_budget_cut_short_is_finished(tmp_path):
    checkpoints, samples = tmp_path / "checkpoints", tmp_path / "samples"
    checkpoints.mkdir()
    asked = 40 * 32  # 40 epochs of 32 steps asked for; the budget fitted 3
    cut = {"time_budget": 40.0, "epochs": 3}
    torch.save({"step": 64, "epoch": 2.0, "config": cut}, checkpoints / "last.pt")
    torch.save({"step": 64, "epoch": 2.0}, checkpoints / "best_model.pt")
    assert finished_run(checkpoints, samples, asked) is None  # interrupted within the budget
    torch.save({"step": 96, "epoch": 3.0, "config": cut}, checkpoints / "last.pt")
    message = finished_run(checkpoints, samples, asked)
    assert "time_budget" in message and "3 epochs" in message and "raise `epochs`" not in message
    assert f"delete {checkpoints} and {samples}" in message
    no_budget = {"time_budget": 0.0, "epochs": 3}
    torch.save({"step": 96, "epoch": 3.0, "config": no_budget}, checkpoints / "last.pt")
    assert finished_run(checkpoints, samples, asked) is None  # 3 of 40 epochs: go on
