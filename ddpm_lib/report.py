"""The report's figure pack: stable names, and the results table as CSV, Markdown, PNG and PDF."""

import csv
from collections.abc import Sequence
from pathlib import Path

from .plots import plot_results_table, save_figure

#: Each figure's notebook, which writes ``figures/<name>.png`` (300 dpi) and ``.pdf``.
MADE_BY = {**dict.fromkeys(("schedules", "forward_process"), "02_forward_diffusion.ipynb"),
           **dict.fromkeys(("loss_curve", "diffusion_process", "samples", "results_table"),
                           "04_sample_and_report.ipynb")}


def write_results_table(rows: Sequence[tuple[str, str]], figures_dir: str | Path) -> list[Path]:
    """Write ``results_table.csv``, ``.md``, ``.png`` and ``.pdf`` into ``figures_dir``."""
    stem = Path(figures_dir) / "results_table"
    figure_paths = save_figure(plot_results_table(rows), stem)  # makes the folder
    with stem.with_suffix(".csv").open("w", newline="") as file:
        csv.writer(file).writerows([("quantity", "value"), *rows])
    lines = ["| quantity | value |", "| --- | --- |", *(f"| {q} | {v} |" for q, v in rows)]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return [stem.with_suffix(".csv"), stem.with_suffix(".md"), *figure_paths]


def missing_figures(figures_dir: str | Path) -> list[str]:
    """The figure-pack files not in ``figures_dir``, each with the notebook that makes it."""
    return [f"{name}.{suffix} (made by {notebook})" for name, notebook in MADE_BY.items()
            for suffix in ("png", "pdf") if not (Path(figures_dir) / f"{name}.{suffix}").exists()]
