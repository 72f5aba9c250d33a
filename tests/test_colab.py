"""Colab on our machines: ``google.colab`` faked, Google Drive a folder under tmp_path, git and
pip recorded instead of run; the notebooks' set-up cell itself, executed; and the one repository
address that the badges and ``REPO_URL`` are built from."""

import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import REPO_ROOT

from ddpm_lib import notebook
from ddpm_lib.notebook import Workbook, setup_notebook

tomllib = pytest.importorskip("tomllib")  # tools/set_repository.py reads pyproject.toml with it
sys.path.insert(0, str(REPO_ROOT / "tools"))

import set_repository  # noqa: E402

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
CLONE = "/content/workbook"
STALE = "out of date: run python tools/set_repository.py"


def pyproject_address() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["project"]["urls"]["Repository"]


@pytest.fixture
def colab(monkeypatch, tmp_path):
    """Fake ``google.colab`` whose ``drive.mount`` makes ``MyDrive`` under tmp_path/drive (or
    raises, with ``colab.declined = True``); returns it, with ``colab.mounts`` recorded."""
    fake = types.SimpleNamespace(mounts=[], declined=False)

    def mount(mountpoint):
        fake.mounts.append(mountpoint)
        if fake.declined:
            raise ValueError("mount failed")
        (Path(mountpoint) / "MyDrive").mkdir(parents=True, exist_ok=True)

    drive = types.ModuleType("google.colab.drive")
    drive.mount = mount
    colab_module = types.ModuleType("google.colab")
    colab_module.drive = drive
    monkeypatch.setitem(sys.modules, "google.colab", colab_module)
    monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
    monkeypatch.setattr(notebook, "DRIVE_MOUNT", tmp_path / "drive")
    return fake


def run_setup_cell(path, monkeypatch, cloned=False):
    """Execute ``path``'s set-up cell; return its namespace and the commands and chdirs it made
    (a fresh Colab machine unless ``cloned``: the clone there and ddpm_lib installed)."""
    commands, chdirs = [], []
    is_dir, find_spec = os.path.isdir, importlib.util.find_spec
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: commands.append(command))
    monkeypatch.setattr(os, "chdir", chdirs.append)
    monkeypatch.setattr(os.path, "isdir", lambda p: cloned if p == CLONE else is_dir(p))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: (
        find_spec(name, *args) if cloned or name != "ddpm_lib" else None))
    cell = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    namespace = {}
    exec(cell.source, namespace)
    return namespace, commands, chdirs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_setup_cell_clones_installs_and_keeps_files_on_drive(path, colab, monkeypatch,
                                                                 tmp_path, capsys):
    namespace, commands, chdirs = run_setup_cell(path, monkeypatch)
    assert commands[0][:2] == ["git", "clone"] and commands[0][-2:] == [pyproject_address(), CLONE]
    assert commands[1][:4] == [sys.executable, "-m", "pip", "install"] and commands[1][-1] == CLONE
    assert chdirs == [f"{CLONE}/notebooks"]
    assert namespace["USE_DRIVE"] is True and colab.mounts == [str(tmp_path / "drive")]
    wb, drive_folder = namespace["wb"], tmp_path / "drive" / "MyDrive" / "ddpm-workbook"
    assert wb.in_colab and wb.on_drive and wb.store == drive_folder and drive_folder.is_dir()
    for folder in (wb.checkpoint_dir, wb.sample_dir, wb.generated_dir, wb.figures_dir):
        assert folder.is_relative_to(drive_folder)
    assert wb.data_dir == REPO_ROOT / "data" / "mnist_rgb"  # rebuilt in seconds, never on Drive
    (where,) = [line for line in capsys.readouterr().out.splitlines() if "files in" in line]
    assert str(wb.run_dir) in where and "Drive" in where


def test_a_rerun_of_the_setup_cell_neither_clones_nor_installs_again(colab, monkeypatch):
    namespace, commands, chdirs = run_setup_cell(NOTEBOOKS[0], monkeypatch, cloned=True)
    assert commands == [] and chdirs == [f"{CLONE}/notebooks"] and namespace["wb"].on_drive


def test_without_drive_colab_files_stay_on_the_machine_and_it_says_so(colab, capsys):
    wb = setup_notebook(use_drive=False)
    assert colab.mounts == [] and wb.in_colab and not wb.on_drive and wb.store == wb.root
    (where,) = [line for line in capsys.readouterr().out.splitlines() if "files in" in line]
    assert str(wb.run_dir) in where and "USE_DRIVE" in where  # lost with the session: the fix


def test_a_declined_drive_runs_on_without_it(colab, capsys):
    colab.declined = True
    wb = setup_notebook(use_drive=True)
    assert colab.mounts and not wb.on_drive and wb.store == wb.root
    assert "not mounted" in capsys.readouterr().out


def test_outside_colab_use_drive_changes_nothing():
    wb = setup_notebook(use_drive=True)  # google.colab is absent: importing it would fail
    assert not wb.in_colab and not wb.on_drive and wb.store == wb.root


def workbook(root: Path, in_colab: bool, store: Path | None = None) -> Workbook:
    return Workbook(root, store or root, False, torch.device("cpu"), in_colab, False, 0)


def test_a_missing_checkpoint_in_colab_says_how_to_get_it_here(tmp_path):
    missing = tmp_path / "checkpoints" / "best_model.pt"
    with pytest.raises(FileNotFoundError) as local:
        workbook(tmp_path, in_colab=False).require(missing, "03_train.ipynb")
    with pytest.raises(FileNotFoundError) as no_drive:
        workbook(tmp_path, in_colab=True).require(missing, "03_train.ipynb")
    with pytest.raises(FileNotFoundError) as drive:
        workbook(tmp_path, True, tmp_path / "drive").require(missing, "03_train.ipynb")
    for error in (local, no_drive, drive):
        assert "03_train.ipynb" in str(error.value) and str(missing) in str(error.value)
    assert "USE_DRIVE" not in str(local.value)
    assert "own machine" in str(no_drive.value) and "USE_DRIVE = True" in str(no_drive.value)
    assert str(tmp_path / "drive") in str(drive.value)  # where 03, with Drive, puts it


def test_in_colab_the_dataset_is_built_where_missing_elsewhere_01_is_named(tmp_path, monkeypatch):
    built = []

    def build(out_dir, download_dir):
        built.append((out_dir, download_dir))
        Path(out_dir).mkdir(parents=True)

    monkeypatch.setattr(notebook, "build_mnist_rgb", build)
    with pytest.raises(FileNotFoundError, match="01_data.ipynb"):
        workbook(tmp_path, in_colab=False).mnist_folder()
    assert built == []
    colab_workbook = workbook(tmp_path, in_colab=True, store=tmp_path / "drive")
    assert colab_workbook.mnist_folder() == tmp_path / "data" / "mnist_rgb"
    assert built == [(tmp_path / "data" / "mnist_rgb", tmp_path / "data" / "downloads")]
    colab_workbook.mnist_folder()
    assert len(built) == 1  # there now: only read


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_carries_its_badge_and_the_one_address(path):
    address = pyproject_address()
    cells = nbformat.read(path, as_version=4).cells
    badge = (f"[![Open In Colab]({set_repository.BADGE_IMAGE})](https://colab.research.google."
             f"com/github/{address.removeprefix('https://github.com/')}/blob/main/notebooks/"
             f"{path.name})")
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(badge + "\n"), STALE
    setup = next(cell for cell in cells if cell.cell_type == "code").source
    assert f'REPO_URL = "{address}"' in setup, STALE
    assert setup == set_repository.SETUP_CELL.format(repository=address), STALE  # one cell


def test_the_readme_has_a_badge_for_every_notebook():
    readme, address = (REPO_ROOT / "README.md").read_text(), pyproject_address()
    for path in NOTEBOOKS:
        assert set_repository.badge(address, path.name) in readme, STALE
        assert f"(notebooks/{path.name})" in readme, STALE


def copy_of_the_workbook(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / "notebooks", tmp_path / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return tmp_path


def test_the_tool_propagates_a_new_address_once(tmp_path):
    root = copy_of_the_workbook(tmp_path)
    assert set_repository.main(root) == [], STALE  # the files are up to date
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(pyproject_address(),
                                                       "https://github.com/someone/fork.git"))
    changed = set_repository.main(root)
    assert sorted(changed) == sorted([*(root / "notebooks").glob("*.ipynb"), root / "README.md"])
    for path in changed:
        text = path.read_text()
        assert "colab.research.google.com/github/someone/fork/blob/main/notebooks/" in text
        assert pyproject_address() not in text
    assert '\\"https://github.com/someone/fork\\"' in (root / "notebooks" / NOTEBOOKS[0].name
                                                       ).read_text()  # REPO_URL, no .git
    assert set_repository.main(root) == []  # idempotent


def test_the_tool_refuses_an_address_colab_cannot_open():
    with pytest.raises(ValueError, match="github.com/OWNER/REPO"):
        set_repository.colab_url("https://gitlab.com/someone/fork", "01_data.ipynb")
