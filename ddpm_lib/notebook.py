"""The notebooks' first cell: where they run, small or full mode, device, seeds; :class:`Workbook`
names the files they hand each other, :func:`require` the notebook that makes a missing one;
03's training cell: :func:`finished_run` on a rerun, :func:`resumable` on an interrupt."""

import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .plots import use_style
from .runtime import pick_device


@dataclass(frozen=True)
class Workbook:
    """Where the notebooks run and the files they share: the full run writes at the repository
    root (``checkpoints/`` …), small mode under ``runs/small/`` (a test never overwrites a real
    run); both read the dataset from ``data/mnist_rgb``."""

    root: Path
    small: bool
    device: torch.device
    in_colab: bool
    in_ci: bool
    seed: int

    run_dir = property(lambda self: self.root / "runs" / "small" if self.small else self.root)
    data_dir = property(lambda self: self.root / "data" / "mnist_rgb")
    checkpoint_dir = property(lambda self: self.run_dir / "checkpoints")
    sample_dir = property(lambda self: self.run_dir / "samples")
    generated_dir = property(lambda self: self.run_dir / "generated_images")
    figures_dir = property(lambda self: self.run_dir / "figures")


def find_root(start: Path | None = None) -> Path:
    """The first folder upwards from ``start`` holding ``pyproject.toml`` and ``ddpm_lib/``."""
    here = (start or Path.cwd()).resolve()
    return next((folder for folder in (here, *here.parents)
                 if (folder / "pyproject.toml").exists() and (folder / "ddpm_lib").is_dir()), here)


def setup_notebook(seed: int = 0, small: bool | None = None) -> Workbook:
    """Detect Colab and CI, pick the device (cuda → mps → cpu), seed, style. ``small=None`` reads
    ``DDPM_SMALL``: 1 small mode (same code, small numbers), 0 full run, unset: small on a CPU."""
    device = pick_device()
    if small is None:
        setting = os.environ.get("DDPM_SMALL")
        small = device.type == "cpu" if setting is None else setting.strip() not in ("", "0")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    use_style()
    wb = Workbook(find_root(), small, device, "google.colab" in sys.modules,
                  bool(os.environ.get("CI")), seed)
    place = "Colab" if wb.in_colab else "CI" if wb.in_ci else "local"
    print(f"running {place} in {'SMALL mode (small numbers, same code)' if small else 'full mode'}"
          f" on {device}, seed {seed}; files in {wb.run_dir}")
    if wb.in_colab and device.type != "cuda":
        print("No GPU: in Colab choose Runtime → Change runtime type → a GPU, then run again.")
    return wb


def require(path: Path, made_by: str) -> Path:
    """``path`` if it exists, else a FileNotFoundError that names the notebook that makes it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: run {made_by} first (it writes this file)")
    return Path(path)


def finished_run(checkpoint_dir: Path, sample_dir: Path, total_steps: int) -> str | None:
    """None until ``checkpoint_dir/last.pt`` reaches ``total_steps``; then what the run left and
    how to train on or start over (03 skips training: a rerun would only repeat it)."""
    last, best = Path(checkpoint_dir) / "last.pt", Path(checkpoint_dir) / "best_model.pt"
    if not last.exists() or torch.load(last, "cpu", weights_only=True)["step"] < total_steps:
        return None
    best = torch.load(best, "cpu", weights_only=True)
    return (f"Already trained, so not trained again: {checkpoint_dir}/best_model.pt is from step "
            f"{best['step']:,} (epoch {best['epoch']:.1f}). To train on, raise `epochs` in the "
            f"config cell and run the training cells again (they continue from last.pt); to "
            f"start over, delete {checkpoint_dir} and {sample_dir}.")


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
