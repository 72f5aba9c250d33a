"""One plotting style for every figure, and figure saving as 300-dpi PNG plus vector PDF."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "image.cmap": "gray",
}


def use_style() -> None:
    """Apply the workbook's matplotlib style."""
    plt.rcParams.update(STYLE)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] → [0, 1] for display."""
    return ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)


def show_image_grid(
    images: torch.Tensor, nrow: int = 8, ax: plt.Axes | None = None, title: str | None = None
) -> plt.Axes:
    """Draw (B, C, H, W) images in [-1, 1] as one grid, without axes."""
    use_style()
    ax = ax or plt.subplots(figsize=(nrow * 0.6, (len(images) + nrow - 1) // nrow * 0.6))[1]
    grid = make_grid(to_unit_range(images), nrow=nrow, padding=2, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def plot_diffusion_process(
    steps: Mapping[int, torch.Tensor], timesteps: Sequence[int], num_samples: int = 8
) -> plt.Figure:
    """Rows: samples; columns: x_t at ``timesteps`` (noise on the left, images on the right)."""
    use_style()
    fig, axes = plt.subplots(
        num_samples, len(timesteps), figsize=(len(timesteps) * 0.9, num_samples * 0.9),
        squeeze=False,
    )
    for column, t in enumerate(timesteps):
        images = to_unit_range(steps[t][:num_samples])
        for row in range(num_samples):
            axes[row, column].imshow(images[row].permute(1, 2, 0).numpy())
            axes[row, column].set_axis_off()
        axes[0, column].set_title(f"t = {t}")
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


def save_figure(fig: plt.Figure, path_stem: str | Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` (300 dpi) and ``<stem>.pdf`` (vector); returns both paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path)
    return paths
