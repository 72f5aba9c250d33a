"""Generation: the graded 10,000 PNGs, and the report's grid of the reverse process.

Command line (the assignment's arguments and defaults)::

    python -m ddpm_lib.generate --checkpoint ./checkpoints/best_model.pt \\
        --output_dir ./generated_images --num_images 10000 --batch_size 64 --mode generate
    python -m ddpm_lib.generate --checkpoint ./checkpoints/best_model.pt \\
        --output_dir ./diffusion_visualization --mode visualize

The network's shape and the schedule come from the checkpoint. Flags such as ``--base_dim``
may be given, but one that contradicts the checkpoint is an error.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torchvision.utils import save_image
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import MODEL_DEFINING_KEYS, build_model, check_compatible, load_checkpoint
from .diffusion import SAMPLERS, VARIANCES, sample, sampler_timesteps
from .model import UNet
from .plots import plot_diffusion_process, save_figure
from .runtime import (
    Stream,
    autocast_for,
    compile_with_fallback,
    example_batch,
    generator_for,
    pick_device,
    should_compile,
    synchronize,
)
from .schedule import NoiseSchedule, make_schedule


@dataclass
class LoadedCheckpoint:
    """A network ready to sample, with the schedule it was trained with."""

    model: UNet
    schedule: NoiseSchedule
    config: dict
    step: int
    path: Path


def load_for_sampling(
    path: str | Path,
    device: torch.device | str = "cpu",
    weights: str = "ema",
    requested: dict | None = None,
) -> LoadedCheckpoint:
    """Load a checkpoint's EMA (or raw) weights and schedule; ``requested`` values must agree."""
    state = load_checkpoint(path)
    config = state["config"]
    check_compatible(config, requested or {}, path)
    model = build_model(state, weights, path).to(device)
    schedule = make_schedule(
        config.get("schedule", "linear"), config["timesteps"], config["beta_start"],
        config["beta_end"],
    ).to(device)
    return LoadedCheckpoint(model, schedule, config, state["step"], Path(path))


def image_name(index: int) -> str:
    """The submission's file name of the ``index``-th image (1-based): ``00001.png`` …"""
    return f"{index:05d}.png"


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) floats in [-1, 1] → uint8 levels {0 … 255}, rounding to the nearest."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [-1, 1] → (B, H, W, 3) uint8 for PIL, as :func:`to_pixels`."""
    return to_pixels(images).permute(0, 2, 3, 1).cpu().numpy()


def write_png(pixels: np.ndarray, path: Path, metadata: PngInfo) -> None:
    """Write one RGB PNG atomically (temporary name, then rename)."""
    temporary = path.with_name(f".{path.name}.tmp")
    Image.fromarray(pixels).save(temporary, format="PNG", pnginfo=metadata)
    os.replace(temporary, path)


def generate_images(
    loaded: LoadedCheckpoint,
    output_dir: str | Path,
    num_images: int = 10000,
    batch_size: int = 64,
    sampler: str = "ddpm",
    sampling_steps: int = 50,
    seed: int = 0,
    device: torch.device | str = "cpu",
    compile: str = "no",
    variance: str | None = None,
) -> dict:
    """Write ``num_images`` samples as ``00001.png`` … into ``output_dir``; returns timings.

    Batch b uses a generator seeded from (seed, b), so an interrupted run, started again with
    the same arguments, skips the batches already written and produces the same images.
    ``compile`` (auto, yes, no) compiles the network for the batch shape first; the PNGs are
    written by a few threads while the next batch is sampled. ``variance``: σ_t² of the ddpm and
    ancestral samplers (:data:`~ddpm_lib.diffusion.VARIANCES`; None = the sampler's default).
    """
    if num_images < 1 or batch_size < 1:
        raise ValueError(f"--num_images and --batch_size must be at least 1 "
                         f"(got {num_images} and {batch_size})")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    expected = {image_name(i) for i in range(1, num_images + 1)}
    strays = sorted(p.name for p in output_dir.glob("*.png") if p.name not in expected)
    if strays:
        raise ValueError(
            f"{output_dir} already holds {len(strays)} PNG files that are not part of "
            f"00001.png … {image_name(num_images)} (first: {strays[0]}); a submission must hold "
            f"exactly those names: choose an empty --output_dir or remove them"
        )
    for leftover in output_dir.glob(".*.png.tmp"):
        leftover.unlink()
    metadata = PngInfo()
    metadata.add_text("Software", f"ddpm_lib {__version__}")
    steps = loaded.schedule.num_timesteps if sampler == "ddpm" else sampling_steps
    variance_text = f", {variance} variance" if variance else ""
    metadata.add_text("Source", f"{loaded.path.name} step {loaded.step}, {sampler} {steps} "
                      f"steps{variance_text}, seed {seed}")
    size = loaded.config["image_size"]
    device = torch.device(device)
    num_batches = (num_images + batch_size - 1) // batch_size
    started = time.perf_counter()
    model = loaded.model
    if should_compile(compile, device):
        example = example_batch(min(batch_size, num_images), size, device)
        model = compile_with_fallback(model, example, backward=False)
    compile_seconds = time.perf_counter() - started
    written, writes = 0, []
    with ThreadPoolExecutor(max_workers=4) as writer:
        for batch in tqdm(range(num_batches), desc="generating", unit="batch"):
            indices = range(batch * batch_size + 1, min((batch + 1) * batch_size, num_images) + 1)
            paths = [output_dir / image_name(i) for i in indices]
            if all(path.exists() for path in paths):
                continue
            generator = generator_for(seed, Stream.GENERATE, batch, device=device)
            with autocast_for(device):
                images, _ = sample(model, loaded.schedule, (len(paths), 3, size, size),
                                   sampler, sampling_steps, generator, device, variance=variance)
            for pixels, path in zip(to_uint8(images), paths, strict=True):
                writes.append(writer.submit(write_png, pixels, path, metadata))
            written += len(paths)
        for write in writes:
            write.result()  # raise any error of the writers here
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"written": written, "skipped": num_images - written, "seconds": seconds,
            "compile_seconds": compile_seconds,
            "images_per_second": written / seconds if seconds > 0 else 0.0}


def visualization_timesteps(
    schedule: NoiseSchedule, sampler: str, sampling_steps: int, columns: int = 8
) -> list[int]:
    """``columns`` timesteps that ``sampler`` visits, from the start noise (t = T) to the final
    image (t = 0), evenly spaced along its path."""
    visited = [schedule.num_timesteps, *sampler_timesteps(schedule, sampler, sampling_steps)]
    if len(visited) < columns:
        raise ValueError(f"{sampler} visits only {len(visited)} timesteps; need {columns}")
    picks = np.linspace(0, len(visited) - 1, columns).round().astype(int)
    return [visited[i] for i in picks]


def sample_process(
    loaded: LoadedCheckpoint,
    num_samples: int = 8,
    columns: int = 8,
    sampler: str = "ddpm",
    sampling_steps: int = 50,
    seed: int = 0,
    device: torch.device | str = "cpu",
    variance: str | None = None,
) -> tuple[list[int], dict[int, torch.Tensor]]:
    """Sample ``num_samples`` images, keeping x_t at ``columns`` timesteps from T down to 0."""
    size = loaded.config["image_size"]
    timesteps = visualization_timesteps(loaded.schedule, sampler, sampling_steps, columns)
    generator = generator_for(seed, Stream.VISUALIZE, device=torch.device(device))
    with autocast_for(torch.device(device)):
        _, steps = sample(loaded.model, loaded.schedule, (num_samples, 3, size, size), sampler,
                          sampling_steps, generator, device, return_steps=timesteps,
                          progress=True, variance=variance)
    return timesteps, {t: x.float().cpu() for t, x in steps.items()}


def visualize_process(
    loaded: LoadedCheckpoint,
    output_dir: str | Path,
    num_samples: int = 8,
    columns: int = 8,
    sampler: str = "ddpm",
    sampling_steps: int = 50,
    seed: int = 0,
    device: torch.device | str = "cpu",
    variance: str | None = None,
) -> tuple[list[Path], Figure]:
    """The report's figure: ``num_samples`` rows × ``columns`` timesteps from noise to image.

    Writes ``diffusion_process.png`` (the bare image grid, as the assignment's code did) and
    ``diffusion_process_labeled.png``/``.pdf`` (with the timestep over each column); returns
    their paths and the labelled figure.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    timesteps, steps = sample_process(loaded, num_samples, columns, sampler, sampling_steps, seed,
                                      device, variance)
    grid = torch.stack([steps[t].float() for t in timesteps], dim=1)  # (samples, columns, …)
    grid_path = output_dir / "diffusion_process.png"
    save_image((grid.flatten(0, 1) + 1) / 2, grid_path, nrow=columns)
    figure = plot_diffusion_process(steps, timesteps, num_samples)
    return [grid_path, *save_figure(figure, output_dir / "diffusion_process_labeled")], figure


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddpm_lib.generate",
        description="Generate images (or the diffusion-process grid) from a trained checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="path to the trained checkpoint")
    parser.add_argument("--output_dir", default="./generated_images",
                        help="folder for the images (or the grid)")
    parser.add_argument("--num_images", type=int, default=10000, help="images to generate")
    parser.add_argument("--batch_size", type=int, default=64, help="images sampled at once")
    parser.add_argument("--mode", choices=("generate", "visualize"), default="generate",
                        help="generate: 00001.png …; visualize: 8 samples × 8 timesteps grid")
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddpm",
                        help="ddpm: all T ancestral steps; ddim, dpm++ (DPM-Solver++(2M)), "
                        "dpm++sde (its stochastic form) or ancestral (DDPM's, strided): "
                        "--sampling_steps steps")
    parser.add_argument("--sampling_steps", type=int, default=50,
                        help="steps of the ddim, dpm++, dpm++sde or ancestral sampler")
    parser.add_argument("--variance", choices=VARIANCES, default=None,
                        help="σ_t² of ddpm and ancestral: β̃_t (small, the default) or β_t "
                        "(large)")
    parser.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                        help="torch.compile the network (auto: on CUDA); falls back to eager")
    parser.add_argument("--weights", choices=("ema", "model"), default="ema",
                        help="the EMA of the weights, or the raw weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    parser.add_argument("--device", default="auto", help="auto (cuda → mps → cpu) or a device")
    checks = parser.add_argument_group(
        "model parameters", "taken from the checkpoint; if given, they must match it"
    )
    for key, kind in (("image_size", int), ("timesteps", int), ("beta_start", float),
                      ("beta_end", float), ("schedule", str), ("time_emb_dim", int),
                      ("base_dim", int)):
        checks.add_argument(f"--{key}", type=kind, default=None)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    device = pick_device(args.device)
    requested = {key: getattr(args, key) for key in MODEL_DEFINING_KEYS}
    try:
        loaded = load_for_sampling(args.checkpoint, device, args.weights, requested)
        print(f"loaded {args.checkpoint} (step {loaded.step}, {args.weights} weights, "
              f"{loaded.model.num_parameters():,} parameters) on {device}")
        if args.mode == "generate":
            report = generate_images(loaded, args.output_dir, args.num_images, args.batch_size,
                                     args.sampler, args.sampling_steps, args.seed, device,
                                     args.compile, args.variance)
            print(f"wrote {report['written']} images ({report['skipped']} already there) to "
                  f"{args.output_dir} in {report['seconds']:.1f} s (compiling "
                  f"{report['compile_seconds']:.1f} s of it) = "
                  f"{report['images_per_second']:.1f} images/s")
        else:
            paths, _ = visualize_process(loaded, args.output_dir, sampler=args.sampler,
                                      sampling_steps=args.sampling_steps, seed=args.seed,
                                      device=device, variance=args.variance)
            print("wrote " + ", ".join(str(p) for p in paths))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
