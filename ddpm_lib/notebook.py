"""What every notebook's first cell needs: where it runs, fast or full mode, device, seeds, paths.

The notebooks hand results to each other through files; :class:`Workbook` names those files, and
:func:`require` says which notebook makes a missing one.
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .plots import use_style
from .runtime import pick_device

FAST_VARIABLE = "DDPM_FAST"
"""Set to 1 for the small, fast mode (CPU, tests), to 0 for the full run; unset: fast on a CPU."""


@dataclass(frozen=True)
class Workbook:
    """Where the notebooks run and the files they share.

    Full mode uses the assignment's folders at the repository root (``checkpoints/``,
    ``generated_images/`` …) and ``figures/``; fast mode keeps everything under ``runs/fast/`` so
    a test run never overwrites a real one. The dataset folder is shared by both.
    """

    root: Path
    fast: bool
    device: torch.device
    in_colab: bool
    in_ci: bool
    seed: int

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / "fast" if self.fast else self.root

    @property
    def data_dir(self) -> Path:
        return self.root / "data" / "mnist_rgb"

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def sample_dir(self) -> Path:
        return self.run_dir / "samples"

    @property
    def generated_dir(self) -> Path:
        return self.run_dir / "generated_images"

    @property
    def figures_dir(self) -> Path:
        return self.run_dir / "figures"

    def describe(self) -> str:
        place = "Colab" if self.in_colab else "CI" if self.in_ci else "local"
        mode = "FAST (small numbers, same code)" if self.fast else "full"
        return (
            f"running {place}, {mode} mode, on {self.device}, seed {self.seed}; "
            f"files in {self.run_dir}"
        )


def find_root(start: Path | None = None) -> Path:
    """The repository root: the first folder upwards holding ``pyproject.toml`` and ``ddpm_lib``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "ddpm_lib").is_dir():
            return folder
    return here


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_notebook(seed: int = 0, fast: bool | None = None) -> Workbook:
    """Detect Colab and CI, read ``DDPM_FAST``, pick the device (cuda → mps → cpu), seed, style."""
    in_colab = "google.colab" in sys.modules
    in_ci = bool(os.environ.get("CI"))
    device = pick_device()
    if fast is None:
        setting = os.environ.get(FAST_VARIABLE)
        fast = device.type == "cpu" if setting is None else setting.strip() not in ("", "0")
    seed_everything(seed)
    use_style()
    workbook = Workbook(find_root(), fast, device, in_colab, in_ci, seed)
    print(workbook.describe())
    if in_colab and device.type != "cuda":
        print("No GPU: in Colab choose Runtime → Change runtime type → a GPU, then run again.")
    return workbook


def require(path: Path, made_by: str) -> Path:
    """``path`` if it exists, else a FileNotFoundError that names the notebook that makes it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: run {made_by} first (it writes this file)")
    return Path(path)
