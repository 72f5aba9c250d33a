"""Draw the published benchmark figures from the JSON files in bench/results/.

    python bench/plot_results.py        # writes bench/results/quality_vs_*.{png,pdf}

- ``quality_vs_time``: the side-by-side runs (``--side_by_side``): in each, the workbook's
  network and the diffusers baseline trained in one run for the same wall time; digit-FID of
  10,000 strided ancestral 50-step samples of each EMA network against training wall time.
- ``quality_vs_time_separate_runs``: the earlier runs, one GPU call each, scored with 20-step
  DPM-Solver++(2M) samples.
- ``quality_vs_steps``: every final sampler of the run given by ``--steps_run``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from ddpm_lib.plots import plot_quality_vs_steps, plot_quality_vs_time, save_figure

RESULTS = Path(__file__).parent / "results"
SIDE_BY_SIDE = {"run A": "quality_fast_vs_diffusers.json",
                "run B": "quality_race_b256_vs_diffusers.json"}
SEPARATE_RUNS = {
    "workbook UNet, fast recipe (2.2 M, batch 1,024, compiled)": "quality_fast.json",
    "workbook UNet, assignment recipe (6.9 M, batch 128, compiled)": "quality_assignment.json",
    "diffusers UNet2DModel, assignment recipe (6.5 M, batch 128, eager)":
        "quality_diffusers.json",
    "fast recipe with a constant learning rate (earlier run)": "quality_fast_constant_lr.json",
}
SAMPLER_NAMES = {"ddpm": "DDPM (all T steps)", "ddim": "DDIM (η = 0)",
                 "dpm++": "DPM-Solver++(2M)", "dpm++sde": "SDE-DPM-Solver++(2M)",
                 "ancestral": "ancestral, strided"}


def sampler_name(row: dict) -> str:
    """A legend entry: the sampler, with its variance where it has one."""
    name = SAMPLER_NAMES[row["sampler"]]
    if row["sampler"] in ("ddpm", "ancestral"):
        name += f", σ² {row.get('variance') or 'small'}"
    return name


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--steps_run", default="quality_fast_samplers.json")
    args = parser.parse_args(argv)
    written: list[Path] = []

    curves, floor = {}, None
    for run, name in SIDE_BY_SIDE.items():
        side_by_side = json.loads((args.results / name).read_text())
        floor = side_by_side["curve"][0]["digit_fid_floor"]
        config = side_by_side["train_config"]
        curves[f"{run}: workbook UNet, batch {config['batch_size']}, {config['epochs']} epochs"] = \
            side_by_side["curve"]
        curves[f"{run}: diffusers UNet2DModel, batch 128 (eager)"] = \
            side_by_side["baseline"]["curve"]
    figure = plot_quality_vs_time(curves, floor)
    figure.axes[0].set_title("side by side, one H100: 10,000 ancestral 50-step samples of each EMA",
                             fontsize=9)
    written += save_figure(figure, args.results / "quality_vs_time")

    separate = {label: json.loads((args.results / name).read_text())["curve"]
                for label, name in SEPARATE_RUNS.items() if (args.results / name).exists()}
    if separate:
        figure = plot_quality_vs_time(separate, floor)
        figure.axes[0].set_title("separate runs: 10,000 DPM-Solver++(2M) 20-step samples")
        written += save_figure(figure, args.results / "quality_vs_time_separate_runs")

    by_sampler = defaultdict(list)
    for row in json.loads((args.results / args.steps_run).read_text())["final"]:
        if row.get("clip_denoised", True):
            by_sampler[sampler_name(row)].append(row)
    figure = plot_quality_vs_steps(by_sampler, floor)
    figure.axes[0].set_title(f"one trained network ({args.steps_run}), 10,000 samples each")
    written += save_figure(figure, args.results / "quality_vs_steps")
    print("wrote " + ", ".join(str(p) for p in written))
    return written


if __name__ == "__main__":
    main()
