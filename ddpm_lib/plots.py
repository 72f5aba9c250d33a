"""One plotting style for every figure, and figure saving as 300-dpi PNG plus vector PDF.

Each function draws one thing and returns its figure; the notebooks call them and
:func:`save_figure` writes the report's files.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torchvision.utils import make_grid

from .diffusion import q_sample
from .schedule import NoiseSchedule

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


def plot_image_files(paths: Sequence[str | Path], titles: Sequence[str] = ()) -> plt.Figure:
    """Image files (sample grids, say) side by side, each with its title."""
    from PIL import Image

    use_style()
    fig, axes = plt.subplots(1, len(paths), figsize=(3.2 * len(paths), 3.4), squeeze=False)
    for index, (ax, path) in enumerate(zip(axes[0], paths, strict=True)):
        with Image.open(path) as image:
            ax.imshow(np.asarray(image.convert("RGB")))
        ax.set_axis_off()
        ax.set_title(titles[index] if index < len(titles) else Path(path).stem)
    return fig


# ----------------------------------------------------------------------------- the data


def plot_examples_per_digit(
    images: torch.Tensor, labels: Sequence[int], per_digit: int = 8, seed: int = 0
) -> plt.Figure:
    """One row per digit 0–9 of ``per_digit`` random examples; ``images`` uint8 (N, 3, H, W)."""
    use_style()
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(10, 1, figsize=(per_digit * 0.55, 10 * 0.6))
    for digit, ax in enumerate(axes):
        chosen = rng.choice(np.flatnonzero(labels == digit), size=per_digit, replace=False)
        row = images[torch.as_tensor(chosen)].float() / 127.5 - 1
        show_image_grid(row, nrow=per_digit, ax=ax)
        ax.text(-4, images.shape[-1] / 2, str(digit), ha="right", va="center")
    return fig


def plot_class_counts(counts: Mapping[int, int]) -> plt.Figure:
    """A bar per digit with its number of images."""
    use_style()
    fig, ax = plt.subplots(figsize=(5, 2.6))
    digits = sorted(counts)
    bars = ax.bar(digits, [counts[d] for d in digits], color="0.3")
    ax.bar_label(bars, fontsize=7)
    ax.set(xticks=digits, xlabel="digit", ylabel="images")
    return fig


def plot_pixel_histogram(images: torch.Tensor) -> plt.Figure:
    """The distribution of pixel values 0–255 over ``images`` (uint8), on a log scale."""
    use_style()
    fig, ax = plt.subplots(figsize=(5, 2.6))
    values = images[:, 0].flatten().numpy()
    ax.hist(values, bins=64, range=(0, 256), color="0.3", log=True)
    ax.set(xlabel="pixel value", ylabel="pixels (log scale)")
    return fig


# ----------------------------------------------------------------------------- the forward process


def plot_schedules(schedules: Mapping[str, NoiseSchedule]) -> plt.Figure:
    """β_t, ᾱ_t and log SNR(t) of each named schedule, side by side."""
    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
    for name, schedule in schedules.items():
        t = np.arange(1, schedule.num_timesteps + 1)
        axes[0].plot(t, schedule.betas.numpy(), label=name)
        axes[1].plot(t, schedule.alphas_cumprod.numpy(), label=name)
        axes[2].plot(t, np.log(schedule.snr.numpy()), label=name)
    for ax, title in zip(axes, ("β_t (log scale)", "ᾱ_t", "log SNR(t) = log ᾱ_t / (1 - ᾱ_t)"),
                         strict=True):
        ax.set(xlabel="t", title=title)
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    return fig


def plot_forward_step(
    x0: torch.Tensor, x_t: torch.Tensor, t: int, axes: Sequence[plt.Axes]
) -> None:
    """Draw x_0, x_t and both pixel histograms into three ``axes`` (images (3, H, W) in [-1, 1])."""
    for ax in axes:
        ax.clear()
    show_image_grid(x0[None], nrow=1, ax=axes[0], title="x_0")
    show_image_grid(x_t[None].clamp(-1, 1), nrow=1, ax=axes[1], title=f"x_t, t = {t}")
    bins = np.linspace(-4, 4, 81)
    axes[2].hist(x0.flatten().numpy(), bins=bins, color="0.6", label="x_0", density=True)
    axes[2].hist(x_t.flatten().numpy(), bins=bins, histtype="step", color="k", label="x_t",
                 density=True)
    axes[2].set(xlabel="pixel value", ylim=(0, 3), title="pixel histogram")
    axes[2].legend(loc="upper right")


def plot_forward_views(
    x0: torch.Tensor, schedule: NoiseSchedule, timesteps: Sequence[int], seed: int = 0
) -> plt.Figure:
    """x_0, one draw of x_t ~ q(x_t | x_0) and both histograms, a row per 1-based step ``t``."""
    use_style()
    fig, axes = plt.subplots(len(timesteps), 3, figsize=(8, 2.4 * len(timesteps)),
                             squeeze=False, gridspec_kw={"width_ratios": [1, 1, 2]})
    for row, t in zip(axes, timesteps, strict=True):
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        x_t = q_sample(schedule, x0[None], torch.tensor([t - 1]), noise[None])[0]
        plot_forward_step(x0, x_t, t, row)
    fig.tight_layout()
    return fig


def plot_forward_process(
    x0: torch.Tensor, schedule: NoiseSchedule, timesteps: Sequence[int], seed: int = 0
) -> plt.Figure:
    """Rows: the images ``x0`` (B, 3, H, W); columns: x_t at each 1-based step in ``timesteps``."""
    use_style()
    generator = torch.Generator().manual_seed(seed)
    fig, axes = plt.subplots(len(x0), len(timesteps), squeeze=False,
                             figsize=(len(timesteps) * 0.9, len(x0) * 0.9))
    for column, t in enumerate(timesteps):
        noise = torch.randn(x0.shape, generator=generator)
        step = torch.full((len(x0),), t - 1) if t > 0 else None
        x_t = x0 if step is None else q_sample(schedule, x0, step, noise)
        for row in range(len(x0)):
            show_image_grid(x_t[row : row + 1].clamp(-1, 1), nrow=1, ax=axes[row, column])
        axes[0, column].set_title(f"t = {t}")
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


# ----------------------------------------------------------------------------- training


def read_log(path: str | Path) -> list[dict[str, float]]:
    """A training log CSV (``train_log.csv``, ``eval_log.csv``) as a list of rows of numbers."""
    with open(path, newline="") as file:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]


def plot_loss_curve(
    train_rows: Sequence[Mapping[str, float]],
    eval_rows: Sequence[Mapping[str, float]] = (),
    ax: plt.Axes | None = None,
) -> plt.Figure:
    """The training loss per step (faint) and its running mean, with the EMA's evaluation loss."""
    use_style()
    fig = ax.figure if ax is not None else plt.subplots(figsize=(6, 3))[1].figure
    ax = ax or fig.axes[0]
    ax.clear()
    steps = np.array([row["step"] for row in train_rows])
    losses = np.array([row["loss"] for row in train_rows])
    ax.plot(steps, losses, color="0.8", linewidth=0.5, label="training loss (per step)")
    window = max(1, len(losses) // 50)
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, color="k", label=f"running mean of {window}")
    if eval_rows:
        ax.plot([r["step"] for r in eval_rows], [r["eval_loss"] for r in eval_rows], "o-",
                color="tab:red", markersize=3, label="EMA loss, fixed evaluation batch")
    ax.set(xlabel="step", ylabel="ε-prediction MSE", yscale="log")
    ax.legend(fontsize=8)
    return fig


class LiveLossPlot:
    """A ``train(..., on_progress=LiveLossPlot())`` callback: the loss curve, redrawn in place."""

    def __init__(self, every: int = 200):
        from IPython.display import display

        self.every, self.rows, self.evals, self.since_draw = every, [], [], 0
        self.figure = plot_loss_curve([], [])
        plt.close(self.figure)
        self.handle = display(self.figure, display_id=True)

    def __call__(self, event: dict[str, Any]) -> None:
        if event["kind"] == "loss":
            self.rows.extend(event["rows"])
            self.since_draw += len(event["rows"])
        else:
            self.evals.append(event)
        if event["kind"] == "eval" or self.since_draw >= self.every:
            self.since_draw = 0
            rows = [{"step": r["step"], "loss": float(r["loss"])} for r in self.rows]
            plot_loss_curve(rows, self.evals, ax=self.figure.axes[0])
            self.handle.update(self.figure)


# ----------------------------------------------------------------------------- the report


def plot_results_table(rows: Sequence[tuple[str, str]], title: str = "Results") -> plt.Figure:
    """A two-column table (quantity, value) drawn as a figure for the report."""
    use_style()
    width = 2.2 + 0.1 * max(len(str(value)) for _, value in rows)  # inches, for 9-pt text
    fig, ax = plt.subplots(figsize=(width, 0.3 * len(rows) + 0.6))
    ax.set_axis_off()
    table = ax.table(cellText=[list(row) for row in rows], colLabels=["", "value"],
                     loc="center", cellLoc="left", colLoc="left",
                     colWidths=[2.0 / width, 1 - 2.0 / width])
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.3)
    ax.set_title(title)
    return fig


def plot_quality_vs_time(
    curves: Mapping[str, Sequence[Mapping[str, float]]], floor: float
) -> plt.Figure:
    """Digit-FID (log scale) against training wall time, one line per run, with the floor.

    Each point needs ``wall_seconds`` and ``digit_fid`` (as ``bench/bench_quality.py`` writes).
    """
    use_style()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, points in curves.items():
        minutes = [p["wall_seconds"] / 60 for p in points]
        ax.plot(minutes, [p["digit_fid"] for p in points], marker="o", markersize=3, label=label)
    ax.axhline(floor, color="gray", linestyle="--", linewidth=1)
    ax.axhline(1.5 * floor, color="gray", linestyle=":", linewidth=1)
    ax.text(0.01, floor, " real-data floor", va="bottom", fontsize=8, color="gray",
            transform=ax.get_yaxis_transform())
    ax.set(yscale="log", xlabel="training wall time (minutes)", ylabel="digit-FID (10,000 samples)")
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    return fig
