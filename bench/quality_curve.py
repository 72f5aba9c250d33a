"""Quality against training time of a finished run, from the checkpoints it kept.

A run of ``python -m ddpm_lib.train`` keeps ``checkpoint_epoch_XXXX.pt`` every
``--save_interval`` epochs (with the EMA weights) and writes, in ``eval_log.csv``, the wall time
since the run began (data loading and compiling included) at each of them. This script samples
``--num_images`` images from each kept EMA with one sampler, scores them with the offline digit
evaluator, and prints and writes (JSON) the curve: wall seconds → digit-FID and the other
measures. The run itself is timed as a student runs it, with nothing else in its process::

    python -m ddpm_lib.train --recipe fast --save_interval 5 --checkpoint_dir runs/fast/ck
    python bench/quality_curve.py runs/fast/ck --json bench/results/curve_fast.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch
from bench_quality import Scorer, parse_sampler

from ddpm_lib.generate import load_for_sampling
from ddpm_lib.runtime import pick_device


def kept_checkpoints(checkpoint_dir: Path) -> list[tuple[Path, dict]]:
    """Each ``checkpoint_epoch_XXXX.pt`` with its ``eval_log.csv`` row (epoch, wall_seconds…)."""
    with (checkpoint_dir / "eval_log.csv").open(newline="") as file:
        rows = {round(float(row["epoch"]), 4): row for row in csv.DictReader(file)}
    kept = []
    for path in sorted(checkpoint_dir.glob("checkpoint_epoch_*.pt")):
        epoch = float(path.stem.rsplit("_", 1)[1])
        if epoch in rows:
            kept.append((path, rows[epoch]))
    if not kept:
        raise SystemExit(f"{checkpoint_dir} holds no checkpoint_epoch_*.pt listed in eval_log.csv")
    return kept


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint_dir", type=Path)
    parser.add_argument("--sampler", type=parse_sampler, default="ancestral:50:small")
    parser.add_argument("--num_images", type=int, default=10000)
    parser.add_argument("--sample_batch", type=int, default=10000)
    parser.add_argument("--data_path", default="./data/mnist_rgb")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", choices=("auto", "yes", "no"), default="no")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("bench/results/curve.json"))
    args = parser.parse_args(argv)
    args.sampler = parse_sampler(args.sampler) if isinstance(args.sampler, str) else args.sampler
    device = pick_device(args.device)
    curve, scorer = [], None
    for path, row in kept_checkpoints(args.checkpoint_dir):
        loaded = load_for_sampling(path, device)
        args.image_size, args.timesteps = loaded.config["image_size"], loaded.config["timesteps"]
        if scorer is None:
            scorer = Scorer(args, loaded.schedule, device)
        scorer.schedule = loaded.schedule
        scored = scorer.score(loaded.model, args.sampler)
        scored.pop("images")
        point = {"checkpoint": path.name, "epoch": float(row["epoch"]), "step": int(row["step"]),
                 "wall_seconds": float(row["wall_seconds"]), **scored}
        curve.append(point)
        print(f"[{point['wall_seconds']:7.1f} s] epoch {point['epoch']:6.1f}: digit-FID "
              f"{point['digit_fid']:.3f} ({point['ratio_to_floor']:.2f}× floor), "
              f"{args.sampler.label(args.timesteps)}", flush=True)
        scorer.compiled.clear()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    settings = {key: str(value) for key, value in vars(args).items()}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    args.json.write_text(json.dumps({"device": name, "arguments": settings, "curve": curve},
                                    indent=1))
    return curve


if __name__ == "__main__":
    main()
