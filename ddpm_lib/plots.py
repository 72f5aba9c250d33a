"""One plotting style for every figure, saved as 300-dpi PNG and PDF; images in [-1, 1]."""

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torchvision.utils import make_grid

from .data import to_model_range
from .diffusion import q_sample
from .schedule import NoiseSchedule


def use_style() -> None:
    """Apply the workbook's matplotlib style (done on import; again after a style change)."""
    plt.rcParams.update({"savefig.dpi": 300, "savefig.bbox": "tight", "font.size": 10,
                         "axes.titlesize": 10, "axes.spines.top": False,
                         "axes.spines.right": False, "image.cmap": "gray"})


use_style()


def show_image_grid(images: torch.Tensor, nrow: int = 8, ax: plt.Axes | None = None,
                    title: str | None = None) -> plt.Axes:
    """Draw ``images`` as one grid without axes; returns its axes."""
    ax = ax or plt.subplots(figsize=(nrow * 0.6, -(-len(images) // nrow) * 0.6))[1]
    unit = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    ax.imshow(make_grid(unit, nrow=nrow, padding=2, pad_value=1.0).permute(1, 2, 0).numpy())
    ax.set_axis_off()
    ax.set_title(title or "")
    return ax


def plot_diffusion_process(steps: Mapping[int, torch.Tensor], timesteps: Sequence[int],
                           num_samples: int = 8) -> plt.Figure:
    """Rows: samples; columns: x_t at ``timesteps`` (x_T, the noise, … x_0, the images)."""
    rows, columns = len(steps[timesteps[0]][:num_samples]), len(timesteps)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 0.9), squeeze=False,
                             gridspec_kw={"wspace": 0.05, "hspace": 0.05})
    for column, t in enumerate(timesteps):
        for row in range(rows):
            show_image_grid(steps[t][row : row + 1], nrow=1, ax=axes[row, column])
        axes[0, column].set_title(f"$x_{{{t}}}$")
    return fig


def plot_forward_process(x0: torch.Tensor, schedule: NoiseSchedule, timesteps: Sequence[int],
                         seed: int = 0) -> plt.Figure:
    """Rows: the images ``x0``; columns: x_t ~ q(x_t | x_0) at each state t (0: x_0 itself)."""
    generator = torch.Generator().manual_seed(seed)
    steps = {}
    for t in timesteps:
        noise = torch.randn(x0.shape, generator=generator)
        steps[t] = x0 if t == 0 else q_sample(schedule, x0, torch.full((len(x0),), t - 1), noise)
    return plot_diffusion_process(steps, timesteps, num_samples=len(x0))


def plot_forward_views(x0: torch.Tensor, schedule: NoiseSchedule, timesteps: Sequence[int],
                       seed: int = 0) -> plt.Figure:
    """A row per t ≥ 1: the image ``x0`` (3, H, W), one draw of x_t and both pixel histograms."""
    fig, axes = plt.subplots(len(timesteps), 3, figsize=(8, 2.4 * len(timesteps)), squeeze=False,
                             width_ratios=[1, 1, 2], layout="constrained")
    for row, t in zip(axes, timesteps, strict=True):
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
        x_t = q_sample(schedule, x0[None], torch.tensor([t - 1]), noise[None])[0]
        show_image_grid(x0[None], nrow=1, ax=row[0], title="$x_0$")
        show_image_grid(x_t[None].clamp(-1, 1), nrow=1, ax=row[1], title=f"$x_{{{t}}}$")
        row[2].hist([x0.flatten().numpy(), x_t.flatten().numpy()], bins=np.linspace(-4, 4, 81),
                    density=True, histtype="step", color=["0.6", "k"], label=["$x_0$", "$x_t$"])
        row[2].set(xlabel="pixel value", ylim=(0, 3), title="pixel histogram")
        row[2].legend(loc="upper right")
    return fig


def save_figure(fig: plt.Figure, path_stem: str | Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` (300 dpi) and ``<stem>.pdf``; returns both paths."""
    paths = [Path(path_stem).with_suffix(suffix) for suffix in (".png", ".pdf")]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        fig.savefig(path)
    return paths


def plot_examples_per_digit(images: torch.Tensor, labels: Sequence[int], per_digit: int = 10,
                            seed: int = 0) -> plt.Figure:
    """A row of ``per_digit`` random examples of each digit 0–9; ``images`` uint8 (N, 3, H, W)."""
    labels, rng = np.asarray(labels), np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == d), per_digit, replace=False) for d in range(10)]
    rows = to_model_range(images[torch.as_tensor(np.concatenate(chosen))])
    return show_image_grid(rows, nrow=per_digit, title="digits 0 to 9, a row each").figure


def plot_schedules(schedules: Mapping[str, NoiseSchedule]) -> plt.Figure:
    """β_t, ᾱ_t and log SNR of each named schedule against the step index t = 0 … T-1."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8), layout="constrained")
    for name, s in schedules.items():
        for ax, values in zip(axes, (s.betas, s.alphas_cumprod, s.snr.log()), strict=True):
            ax.plot(values.numpy(), label=name)
    for ax, title in zip(axes, ("β_t", "ᾱ_t", "log SNR = log ᾱ_t / (1 - ᾱ_t)"), strict=True):
        ax.set(xlabel="t", title=title)
    axes[0].set(yscale="log")
    axes[0].legend()
    return fig


def read_log(path: str | Path) -> list[dict[str, float]]:
    """A training log CSV (``train_log.csv``, ``eval_log.csv``) as rows of numbers."""
    with open(path, newline="") as file:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]


def plot_loss_curve(train_rows: Sequence[Mapping], eval_rows: Sequence[Mapping] = (),
                    ax: plt.Axes | None = None) -> plt.Figure:
    """Each step's training loss (faint), its running mean, and the EMA's evaluation loss."""
    ax = ax or plt.subplots(figsize=(6, 3))[1]
    ax.clear()
    steps, losses = (np.array([row[key] for row in train_rows]) for key in ("step", "loss"))
    ax.plot(steps, losses, color="0.8", linewidth=0.5, label="training loss (per step)")
    window = max(1, len(losses) // 50)
    if len(losses):
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, color="k", label=f"running mean of {window}")
    if eval_rows:
        ax.plot([r["step"] for r in eval_rows], [r["eval_loss"] for r in eval_rows], "o-",
                color="tab:red", markersize=3, label="EMA loss, fixed evaluation batch")
    ax.set(xlabel="step", ylabel="ε-prediction MSE", yscale="log")
    ax.legend(fontsize=8)
    return ax.figure


class LiveLossPlot:
    """A ``train(…, on_progress=LiveLossPlot(total_steps))`` callback: the loss curve, redrawn in
    place about ``redraws`` times a run (as losses arrive), at each evaluation and at the end."""

    def __init__(self, total_steps: int, redraws: int = 30):
        from IPython.display import display
        self.total, self.redraws, self.every = total_steps, redraws, max(1, total_steps // redraws)
        self.rows, self.evals, self.drawn = [], [], 0
        self.figure = plot_loss_curve([])
        plt.close(self.figure)
        self.handle = display(self.figure, display_id=True)

    def __call__(self, event: dict) -> None:
        if event["kind"] == "budget":  # the steps a --time_budget fitted
            self.total = event["total_steps"]
            self.every = max(1, self.total // self.redraws)
            return
        self.rows += [{"step": r["step"], "loss": float(r["loss"])} for r in event.get("rows", ())]
        self.evals += [event] if event["kind"] == "eval" else []
        step = self.rows[-1]["step"] if self.rows else 0
        if event["kind"] == "eval" or step >= min(self.drawn + self.every, self.total):
            self.drawn = step
            plot_loss_curve(self.rows, self.evals, ax=self.figure.axes[0])
            self.handle.update(self.figure)

