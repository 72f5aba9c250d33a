"""The notebooks' first cell: fast or full mode, separate folders, messages for missing files."""

import pytest

from ddpm_lib.notebook import find_root, require, setup_notebook


def test_fast_mode_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DDPM_FAST", "1")
    assert setup_notebook().fast
    monkeypatch.setenv("DDPM_FAST", "0")
    full = setup_notebook()
    assert not full.fast


def test_fast_mode_writes_under_runs_fast_and_shares_the_data(monkeypatch):
    monkeypatch.setenv("DDPM_FAST", "1")
    fast = setup_notebook()
    monkeypatch.setenv("DDPM_FAST", "0")
    full = setup_notebook()
    assert fast.checkpoint_dir == fast.root / "runs" / "fast" / "checkpoints"
    assert full.checkpoint_dir == full.root / "checkpoints"
    assert full.figures_dir == full.root / "figures"
    assert fast.data_dir == full.data_dir == full.root / "data" / "mnist_rgb"


def test_the_root_is_found_from_the_notebooks_folder(tmp_path):
    (tmp_path / "ddpm_lib").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    assert find_root(tmp_path / "notebooks") == tmp_path


def test_a_missing_file_names_the_notebook_that_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="run 03_train.ipynb first"):
        require(tmp_path / "best_model.pt", "03_train.ipynb")
    (tmp_path / "best_model.pt").write_text("")
    assert require(tmp_path / "best_model.pt", "03_train.ipynb") == tmp_path / "best_model.pt"
