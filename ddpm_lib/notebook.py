"""The notebooks' first cell: where they run, small or full mode, device, seeds, and in Colab
Google Drive; :class:`Workbook` names the files they hand each other, :meth:`Workbook.require`
the notebook that makes a missing one; 03's training cell: :func:`finished_run` on a rerun,
:func:`resumable` on an interrupt."""

import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import build_mnist_rgb
from .plots import use_style
from .runtime import pick_device

#: Colab: where Google Drive is mounted, and the workbook's folder in it (kept between sessions).
DRIVE_MOUNT = Path("/content/drive")
DRIVE_FOLDER = Path("MyDrive") / "ddpm-workbook"


@dataclass(frozen=True)
class Workbook:
    """Where the notebooks run and the files they share. A run's files go under ``store``: the
    repository root, or in Colab with Drive a folder of Google Drive, where every notebook finds
    them, in a later session too (Colab gives each notebook its own machine). There the full run
    writes ``checkpoints/`` …, small mode ``runs/small/…`` (a test never overwrites a real run).
    The dataset stays at the repository's ``data/mnist_rgb``: in Colab a notebook that needs it
    builds it in seconds, faster than its 60,000 files would come back from Drive."""

    root: Path
    store: Path
    small: bool
    device: torch.device
    in_colab: bool
    in_ci: bool
    seed: int

    on_drive = property(lambda self: self.store != self.root)
    run_dir = property(lambda self: self.store / "runs" / "small" if self.small else self.store)
    data_dir = property(lambda self: self.root / "data" / "mnist_rgb")
    checkpoint_dir = property(lambda self: self.run_dir / "checkpoints")
    sample_dir = property(lambda self: self.run_dir / "samples")
    generated_dir = property(lambda self: self.run_dir / "generated_images")
    figures_dir = property(lambda self: self.run_dir / "figures")

    def require(self, path: Path, made_by: str) -> Path:
        """:func:`require`; in Colab, also how ``made_by``'s files reach this notebook."""
        if not self.in_colab:
            return require(path, made_by)
        if self.on_drive:
            return require(path, made_by, f", with USE_DRIVE on: its files go to {self.store}")
        return require(path, made_by, f". Colab gives each notebook its own machine, so only "
                       f"Google Drive carries files from {made_by} to this one: set USE_DRIVE = "
                       f"True in the first cell of both notebooks, then run {made_by} again")

    def mnist_folder(self) -> Path:
        """``data_dir``; in Colab built if missing (a new machine has none; it takes seconds),
        elsewhere a missing one names 01_data.ipynb, which builds it."""
        if self.in_colab and not self.data_dir.exists():
            print(f"{self.data_dir}: not on this machine yet, building it (seconds)")
            build_mnist_rgb(self.data_dir, download_dir=self.root / "data" / "downloads")
        return self.require(self.data_dir, "01_data.ipynb")


def find_root(start: Path | None = None) -> Path:
    """The first folder upwards from ``start`` holding ``pyproject.toml`` and ``ddpm_lib/``."""
    here = (start or Path.cwd()).resolve()
    return next((folder for folder in (here, *here.parents)
                 if (folder / "pyproject.toml").exists() and (folder / "ddpm_lib").is_dir()), here)


def colab_store(root: Path, use_drive: bool) -> Path:
    """Where a Colab notebook keeps its files: the Drive folder if ``use_drive`` (mounting Drive
    asks the student's permission), else, or if the mount fails, ``root`` on this machine."""
    if not use_drive:
        return root
    from google.colab import drive

    try:
        drive.mount(str(DRIVE_MOUNT))
    except Exception as error:  # declined or failed: the notebook runs on, without Drive
        print(f"Google Drive not mounted ({error}); files stay on this machine")
        return root
    store = DRIVE_MOUNT / DRIVE_FOLDER
    store.mkdir(parents=True, exist_ok=True)
    return store


def where_files_live(wb: Workbook) -> str:
    """One line: where this notebook's files are, and whether they outlive the session."""
    if wb.on_drive:
        return f"files in {wb.run_dir}, on Google Drive: kept between sessions and notebooks"
    if wb.in_colab:
        return (f"files in {wb.run_dir}, on this Colab machine: gone when the session ends "
                f"(USE_DRIVE = True in the first cell keeps them on Google Drive)")
    return f"files in {wb.run_dir}"


def setup_notebook(seed: int = 0, small: bool | None = None, use_drive: bool = False) -> Workbook:
    """Detect Colab and CI, pick the device (cuda → mps → cpu), seed, style. ``small=None`` reads
    ``DDPM_SMALL``: 1 small mode (same code, small numbers), 0 full run, unset: small on a CPU.
    In Colab, ``use_drive`` keeps the run's files on Google Drive (:func:`colab_store`)."""
    device = pick_device()
    if small is None:
        setting = os.environ.get("DDPM_SMALL")
        small = device.type == "cpu" if setting is None else setting.strip() not in ("", "0")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    use_style()
    root, in_colab = find_root(), "google.colab" in sys.modules
    store = colab_store(root, use_drive) if in_colab else root
    wb = Workbook(root, store, small, device, in_colab, bool(os.environ.get("CI")), seed)
    place = "Colab" if wb.in_colab else "CI" if wb.in_ci else "local"
    print(f"running {place} in {'SMALL mode (small numbers, same code)' if small else 'full mode'}"
          f" on {device}, seed {seed}")
    print(where_files_live(wb))
    if wb.in_colab and device.type != "cuda":
        print("No GPU: in Colab choose Runtime → Change runtime type → a GPU, then run again.")
    return wb


def require(path: Path, made_by: str, advice: str = "") -> Path:
    """``path`` if it exists, else a FileNotFoundError that names the notebook that makes it
    (and ``advice``, appended)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: run {made_by} first (it writes this "
                                f"file){advice}")
    return Path(path)


def finished_run(checkpoint_dir: Path, sample_dir: Path, total_steps: int) -> str | None:
    """None until ``checkpoint_dir/last.pt`` reaches ``total_steps``, or the end of its own
    epochs where it cannot train on (a cosine decay ended at zero, or a ``time_budget`` fitted
    them); then what the run left and how to go on or start over (03 skips training: a rerun
    would only repeat it)."""
    last, best = Path(checkpoint_dir) / "last.pt", Path(checkpoint_dir) / "best_model.pt"
    if not last.exists():
        return None
    state = torch.load(last, "cpu", weights_only=True)
    saved = state.get("config", {})
    ended = state["epoch"] >= saved.get("epochs", float("inf"))
    fixed = bool(saved.get("time_budget")) or saved.get("lr_schedule") == "cosine"
    if state["step"] < total_steps and not (ended and fixed):
        return None
    best = torch.load(best, "cpu", weights_only=True)
    if ended and saved.get("time_budget"):
        go_on = f"Its time_budget of {saved['time_budget']:g} min fitted {saved['epochs']} epochs"
    elif ended and fixed:
        go_on = (f"Its learning rate decayed to zero over its {saved['epochs']} epochs, so it "
                 f"cannot train on")
    else:
        go_on = ("To train on, raise `epochs` in the config cell and run the training cells "
                 "again (they continue from last.pt)")
    return (f"Already trained, so not trained again: {checkpoint_dir}/best_model.pt is from step "
            f"{best['step']:,} (epoch {best['epoch']:.1f}). {go_on}; to start over, delete "
            f"{checkpoint_dir} and {sample_dir}.")


class TrainingInterrupted(Exception):
    """An interrupt, shown as its one line instead of a traceback (IPython's hook)."""

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


@contextmanager
def resumable() -> Iterator[None]:
    """Around a notebook's ``train(…)``: an interrupt ends the cell (and Run All) in one line."""
    try:
        yield
    except KeyboardInterrupt:
        raise TrainingInterrupted("Interrupted; last.pt is saved: in this notebook, run the "
                                  "training cells again to continue from it.") from None
