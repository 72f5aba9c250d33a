"""Draw the published quality curve from the JSON files in bench/results/.

    python bench/plot_results.py        # writes bench/results/quality_vs_time.{png,pdf}

``quality_vs_time``: digit-FID of 10,000 strided ancestral 50-step samples of each kept EMA
checkpoint (``bench/quality_curve.py``) against the wall time of its run since the run began,
compiling included; the three runs shared one four-GPU machine, one GPU each.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from ddpm_lib.evaluator import load_digit_classifier
from ddpm_lib.plots import save_figure, use_style

RESULTS = Path(__file__).parent / "results"
CURVES = {
    "old fast recipe: 32-wide, batch 1,024, 120 epochs": "curve_old_fast_recipe.json",
    "64-wide, batch 1,024, 45 epochs": "curve_w64_b1024_e45.json",
    "new fast recipe: 64-wide, batch 512, 40 epochs (NCHW)": "curve_new_fast_recipe_nchw.json",
}


def plot_quality_vs_time(
    curves: Mapping[str, Sequence[Mapping[str, float]]], floor: float
) -> plt.Figure:
    """Digit-FID (log scale) against training wall time, one line per run, with the floor.
    Each point needs ``wall_seconds`` and ``digit_fid`` (as the bench scripts write them)."""
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


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    floor = float(load_digit_classifier()[1]["floors"]["digit_fid"])
    curves = {label: json.loads((args.results / name).read_text())["curve"]
              for label, name in CURVES.items()}
    figure = plot_quality_vs_time(curves, floor)
    figure.axes[0].set_title("one H200 each: 10,000 ancestral 50-step samples of each kept EMA",
                             fontsize=9)
    written = save_figure(figure, args.results / "quality_vs_time")
    print("wrote " + ", ".join(str(p) for p in written))
    return written


if __name__ == "__main__":
    main()
