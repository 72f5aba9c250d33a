"""Classifier-free guidance: fidelity and quality against the guidance strength w.

For each w of ``--guidance``, ``--num_images`` balanced samples from a class-conditional
checkpoint's EMA (image i of digit i mod 10: the images of ``python -m ddpm_lib.generate --digit
all --guidance w`` with the same seed, batch size and sampler; every w starts from the same
noise), scored by the offline digit evaluator: **fidelity**, the share of samples it classifies
as the digit asked for, and the balanced set's digit-FID against its real-data floor, precision,
recall and mean confidence. Prints a table; writes JSON. On one GPU::

    python bench/bench_guidance.py --checkpoint checkpoints/best_model.pt \\
        --json bench/results/guidance.json

At toy size on a CPU (the test suite does this)::

    python bench/bench_guidance.py --checkpoint tiny.pt --data_path tiny/ --device cpu \\
        --num_images 20 --batch_size 10 --sampling_steps 3 --guidance 0 2
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ddpm_lib import __version__, runtime
from ddpm_lib.diffusion import SAMPLERS, NoisePredictor
from ddpm_lib.evaluator import (
    evaluate_samples,
    label_fidelity,
    load_digit_classifier,
    load_training_images,
)
from ddpm_lib.generate import (
    LoadedCheckpoint,
    check_sampling_steps,
    checkpoint_labels,
    load_for_sampling,
    network_for_sampling,
    sample_batch,
    to_pixels,
)

#: The issue's target: ≥ 99 % fidelity at some w whose digit-FID is within 1.2× the floor.
TARGET_FIDELITY, TARGET_RATIO = 0.99, 1.2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a checkpoint of python -m ddpm_lib.train --class_conditional")
    parser.add_argument("--data_path", default="./data/mnist_rgb", help="MNIST's training PNGs")
    parser.add_argument("--guidance", type=float, nargs="+", default=[0, 0.5, 1, 2, 3, 4, 6, 8])
    parser.add_argument("--num_images", type=int, default=10000)
    parser.add_argument("--batch_size", type=int, default=2500,
                        help="images a batch (the network sees twice as many under guidance)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="dpm++sde")
    parser.add_argument("--sampling_steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", choices=("auto", "yes", "no"), default="auto")
    parser.add_argument("--json", type=Path, default=Path("bench/results/guidance.json"))
    return parser


def sample_balanced(network: NoisePredictor, loaded: LoadedCheckpoint, labels: torch.Tensor,
                    guidance: float, args: argparse.Namespace,
                    device: torch.device) -> tuple[torch.Tensor, float]:
    """(uint8 images (N, 3, H, W), seconds): ``labels``' images at guidance w, batch by batch
    as ``ddpm_lib.generate`` makes them."""
    size, images = loaded.config["image_size"], []
    runtime.synchronize(device)
    started = time.perf_counter()
    for batch, wanted in enumerate(labels.split(args.batch_size)):
        images.append(to_pixels(sample_batch(
            network, loaded.schedule, (len(wanted), 3, size, size), args.seed, batch,
            args.sampler, args.sampling_steps, device, labels=wanted, guidance=guidance)))
    runtime.synchronize(device)
    return torch.cat(images), time.perf_counter() - started


def print_table(rows: list[dict], floor: float) -> None:
    print(f"{'w':>5} {'fidelity %':>10} {'digit-FID':>10} {'×floor':>7} {'precision':>9} "
          f"{'recall':>7} {'confidence':>10} {'seconds':>8}   (floor {floor:.3f})")
    for row in rows:
        print(f"{row['guidance']:5g} {100 * row['fidelity']:10.2f} {row['digit_fid']:10.3f} "
              f"{row['ratio_to_floor']:7.2f} {row['precision']:9.3f} {row['recall']:7.3f} "
              f"{row['mean_confidence']:10.3f} {row['sampling_seconds']:8.1f}")


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.num_images < 2 or args.batch_size < 1:
        raise ValueError(f"--num_images {args.num_images} (>= 2) and --batch_size "
                         f"{args.batch_size} (>= 1)")
    if args.json.is_dir():
        raise ValueError(f"--json {args.json} is a folder: give a file name")
    runtime.writable_folder(args.json.parent, "--json's folder")  # before any sampling
    device = runtime.pick_device(args.device)
    loaded = load_for_sampling(args.checkpoint, device)
    check_sampling_steps(loaded, args.sampler, args.sampling_steps)
    for guidance in args.guidance:  # each w finite, >= 0, and one the checkpoint can take
        checkpoint_labels(loaded, "all", 1, guidance)
    labels = checkpoint_labels(loaded, "all", args.num_images, 0.0)
    classifier, facts = load_digit_classifier(device)
    train_images = load_training_images(args.data_path)
    started = time.perf_counter()  # one compiled network per batch shape: B and, guided, 2B
    batch = min(args.batch_size, args.num_images)
    networks = {guided: network_for_sampling(loaded.model, args.compile, device, batch, True,
                                             float(guided))
                for guided in sorted({w > 0 for w in args.guidance})}
    compile_seconds, rows = time.perf_counter() - started, []
    for guidance in args.guidance:
        images, seconds = sample_balanced(networks[guidance > 0], loaded, labels, guidance, args,
                                          device)
        report = evaluate_samples(images, train_images, classifier, facts, args.seed)
        rows.append({"guidance": guidance, "fidelity": label_fidelity(images, labels, classifier),
                     "digit_fid": report.digit_fid, "ratio_to_floor": report.digit_fid
                     / report.digit_fid_floor, "kid": report.kid, "precision": report.precision,
                     "recall": report.recall, "mean_confidence": report.mean_confidence,
                     "class_tv": report.class_tv, "memorised_share": report.memorised_share,
                     "sampling_seconds": seconds})
        print_table(rows[-1:], report.digit_fid_floor)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    result = {"device": name or device.type, "torch": torch.__version__, "ddpm_lib": __version__,
              "checkpoint": f"{loaded.path} step {loaded.step} sha256 {loaded.sha256[:12]}",
              "arguments": {key: str(value) if isinstance(value, Path) else value
                            for key, value in vars(args).items()},
              "digit_fid_floor": facts["floors"]["digit_fid"], "compile_seconds": compile_seconds,
              "target_met": any(row["fidelity"] >= TARGET_FIDELITY
                                and row["ratio_to_floor"] <= TARGET_RATIO for row in rows),
              "rows": rows}
    print_table(rows, result["digit_fid_floor"])
    args.json.write_text(json.dumps(result, indent=2))
    print(f"target (≥ {100 * TARGET_FIDELITY:g} % fidelity at ≤ {TARGET_RATIO}× the floor) "
          f"{'met' if result['target_met'] else 'not met'}; wrote {args.json}")
    return result


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
