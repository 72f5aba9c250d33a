"""The report's figure pack: stable names, and the results table in every format."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from .plots import plot_results_table, save_figure

FIGURE_NAMES = (
    "schedules",
    "forward_process",
    "loss_curve",
    "diffusion_process",
    "samples",
    "results_table",
)
"""Each is written to ``figures/<name>.png`` (300 dpi) and ``figures/<name>.pdf``."""

MADE_BY = {
    "schedules": "02_forward_diffusion.ipynb",
    "forward_process": "02_forward_diffusion.ipynb",
}


def write_results_table(rows: Sequence[tuple[str, str]], figures_dir: str | Path) -> list[Path]:
    """Write ``results_table.csv``, ``.md``, ``.png`` and ``.pdf`` into ``figures_dir``."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    csv_path = figures_dir / "results_table.csv"
    with csv_path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["quantity", "value"])
        writer.writerows(rows)
    markdown_path = figures_dir / "results_table.md"
    lines = ["| quantity | value |", "| --- | --- |", *(f"| {q} | {v} |" for q, v in rows)]
    markdown_path.write_text("\n".join(lines) + "\n")
    return [csv_path, markdown_path,
            *save_figure(plot_results_table(rows), figures_dir / "results_table")]


def missing_figures(figures_dir: str | Path) -> list[str]:
    """The figure-pack files not yet in ``figures_dir``, each with the notebook that makes it."""
    figures_dir = Path(figures_dir)
    return [
        f"{name}.{suffix} (made by {MADE_BY.get(name, '04_sample_and_report.ipynb')})"
        for name in FIGURE_NAMES
        for suffix in ("png", "pdf")
        if not (figures_dir / f"{name}.{suffix}").exists()
    ]
