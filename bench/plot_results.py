"""Draw the published benchmark figures from the JSON files in bench/results/.

    python bench/plot_results.py        # writes bench/results/quality_vs_*.{png,pdf}

Quality against training time: one line per bench_quality run (the digit-FID of 10,000
DPM-Solver++ 20-step samples of the EMA network, against the run's wall time). Quality against
sampler steps: every final sampler of the run given by --steps_run.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from ddpm_lib.plots import plot_quality_vs_steps, plot_quality_vs_time, save_figure

RESULTS = Path(__file__).parent / "results"
RUNS = {
    "workbook UNet, fast recipe (2.2 M, batch 1,024, compiled)": "quality_fast.json",
    "workbook UNet, assignment recipe (6.9 M, batch 128, compiled)": "quality_assignment.json",
    "diffusers UNet2DModel, assignment recipe (6.5 M, batch 128, eager)":
        "quality_diffusers.json",
    "fast recipe with a constant learning rate (earlier run)": "quality_fast_constant_lr.json",
}
SAMPLER_NAMES = {"ddpm": "DDPM (ancestral, all T steps)", "ddim": "DDIM (η = 0)",
                 "dpm++": "DPM-Solver++(2M)", "ancestral": "ancestral, strided (η = 1)"}


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--steps_run", default="quality_fast_constant_lr.json")
    args = parser.parse_args(argv)

    curves, floor = {}, None
    for label, name in RUNS.items():
        path = args.results / name
        if path.exists():
            result = json.loads(path.read_text())
            curves[label] = result["curve"]
            floor = result["curve"][0]["digit_fid_floor"]
            if "baseline" in result:  # --side_by_side: the diffusers baseline of the same run
                curves[f"diffusers baseline beside: {label}"] = result["baseline"]["curve"]
    if not curves:
        raise SystemExit(f"no bench_quality results in {args.results}")
    figure = plot_quality_vs_time(curves, floor)
    figure.axes[0].set_title("EMA network's 10,000 DPM-Solver++(2M) 20-step samples, one H100")
    written = save_figure(figure, args.results / "quality_vs_time")

    by_sampler = defaultdict(list)
    for row in json.loads((args.results / args.steps_run).read_text())["final"]:
        if row.get("clip_denoised", True):
            by_sampler[SAMPLER_NAMES[row["sampler"]]].append(row)
    figure = plot_quality_vs_steps(by_sampler, floor)
    figure.axes[0].set_title(f"one trained network ({args.steps_run}), 10,000 samples each")
    written += save_figure(figure, args.results / "quality_vs_steps")
    print("wrote " + ", ".join(str(p) for p in written))
    return written


if __name__ == "__main__":
    main()
