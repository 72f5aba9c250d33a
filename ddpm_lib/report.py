"""The report's figure pack: stable names, and the results table as CSV, Markdown, PNG and PDF."""

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from .plots import save_figure

#: Each figure's notebook, which writes ``figures/<name>.png`` (300 dpi) and ``.pdf``.
MADE_BY = {**dict.fromkeys(("schedules", "forward_process"), "02_forward_diffusion.ipynb"),
           **dict.fromkeys(("loss_curve", "diffusion_process", "samples", "results_table"),
                           "04_sample_and_report.ipynb")}


def write_results_table(rows: Sequence[tuple[str, str]], figures_dir: str | Path) -> plt.Figure:
    """Write ``results_table.csv``, ``.md``, ``.png`` and ``.pdf`` into ``figures_dir``; return
    the figure: the (quantity, value) rows as two text columns, the figure sized to the text."""
    width = max(len(quantity) for quantity, _ in rows) + 2
    text = "\n".join(f"{quantity:<{width}}{value}" for quantity, value in rows)
    fig = plt.figure(figsize=(1, 1), dpi=100)
    fig.add_axes((0, 0, 1, 1)).set_axis_off()  # a figure without axes is not shown inline
    box = fig.text(0.1, 0.1, f"Results\n\n{text}", family="monospace", fontsize=9)
    extent = box.get_window_extent(fig.canvas.get_renderer())  # in pixels: 0.1-inch margins
    fig.set_size_inches(extent.width / fig.dpi + 0.2, extent.height / fig.dpi + 0.2)
    box.set_position((0.1 / fig.get_figwidth(), 0.1 / fig.get_figheight()))
    stem = Path(figures_dir) / "results_table"
    save_figure(fig, stem)  # makes the folder
    with stem.with_suffix(".csv").open("w", newline="") as file:
        csv.writer(file).writerows([("quantity", "value"), *rows])
    lines = ["| quantity | value |", "| --- | --- |", *(f"| {q} | {v} |" for q, v in rows)]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return fig


def missing_figures(figures_dir: str | Path) -> list[str]:
    """The figure-pack files not in ``figures_dir``, each with the notebook that makes it."""
    return [f"{name}.{suffix} (made by {notebook})" for name, notebook in MADE_BY.items()
            for suffix in ("png", "pdf") if not (Path(figures_dir) / f"{name}.{suffix}").exists()]
