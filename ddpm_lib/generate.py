"""Generate the graded PNGs from a checkpoint, or (``--mode visualize``) the report's grid;
from a class-conditional checkpoint, ``--digit D|all`` with ``--guidance W``."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
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

from . import __version__, runtime
from .checkpoint import (
    MODEL_DEFINING_KEYS,
    CheckpointError,
    build_model,
    check_compatible,
    load_checkpoint,
)
from .diffusion import SAMPLERS, VARIANCES, NoisePredictor, sample, sampler_timesteps
from .model import UNet
from .plots import plot_diffusion_process, save_figure
from .runtime import writable_folder
from .schedule import NoiseSchedule, make_schedule


@dataclass
class LoadedCheckpoint:
    """A network ready to sample, with the schedule it was trained with."""

    model: UNet
    schedule: NoiseSchedule
    config: dict
    step: int
    path: Path
    weights: str
    sha256: str  # of the checkpoint file, as sha256sum prints it


def load_for_sampling(path: str | Path, device: torch.device | str = "cpu", weights: str = "ema",
                      requested: dict | None = None) -> LoadedCheckpoint:
    """Load a checkpoint's EMA (or raw) weights and schedule; ``requested`` values must agree."""
    path = Path(path)
    state = load_checkpoint(path)
    config = state["config"]
    check_compatible(config, requested or {}, path)
    try:
        model = build_model(state, weights, path).to(device)
        schedule = make_schedule(config.get("schedule", "linear"), config["timesteps"],
                                 config["beta_start"], config["beta_end"]).to(device)
    except KeyError as key:
        raise CheckpointError(f"{path}: its config lacks {key}, so it was not written by "
                              f"python -m ddpm_lib.train; give one that was") from None
    with path.open("rb") as file:
        sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    return LoadedCheckpoint(model, schedule, config, state["step"], path, weights, sha256)


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) floats in [-1, 1] → uint8 levels {0 … 255}, rounding to the nearest."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def digit_label(digit: str | int | None) -> str | None:
    """``--digit`` as provenance records it: None, "all", or one of "0" … "9" ("03" → "3");
    ValueError, naming the flag, for anything else."""
    if digit is None or digit == "all":
        return digit
    text = str(digit).strip()
    if not (text.isascii() and text.isdecimal() and int(text) <= 9):
        raise ValueError(f"--digit {digit}: choose 0 … 9, or all")
    return str(int(text))


def class_labels(digit: str | None, count: int, num_classes: int, guidance: float = 0.0,
                 label_dropout: float | None = None) -> torch.Tensor | None:
    """The labels (count,) of ``--digit``: None (unconditional), all ``digit``, or for "all" a
    balanced set in a fixed order, image i (from 0) showing i mod 10. ValueError, naming the
    flag, for a digit not 0 … 9, a guidance w not finite and >= 0 or without --digit, a digit
    asked of an unconditional net, or guidance of one whose ``label_dropout`` was 0 (its
    ε_θ(x_t, t, ∅), which guidance needs, was never trained)."""
    if not (math.isfinite(guidance) and guidance >= 0):
        raise ValueError(f"--guidance {guidance}: w must be a number >= 0 (0: no guidance)")
    if guidance and digit is None:
        raise ValueError(f"--guidance {guidance} guides toward a --digit: give one (or all)")
    digit = digit_label(digit)
    if digit is None:
        return None
    if not num_classes:
        raise ValueError(f"--digit {digit}: this checkpoint is unconditional; train one with "
                         f"python -m ddpm_lib.train --class_conditional")
    if guidance and label_dropout == 0:
        raise ValueError(f"--guidance {guidance}: this checkpoint was trained with "
                         f"--label_dropout 0, so never without a label, as guidance needs; use "
                         f"--guidance 0, or train with --label_dropout 0.1")
    if digit == "all":
        return torch.arange(count) % num_classes
    return torch.full((count,), int(digit))


def checkpoint_labels(loaded: LoadedCheckpoint, digit: str | None, count: int,
                      guidance: float) -> torch.Tensor | None:
    """:func:`class_labels` for the network and training settings of ``loaded``."""
    return class_labels(digit, count, loaded.model.config.num_classes, guidance,
                        loaded.config.get("label_dropout"))


def check_sampling_steps(loaded: LoadedCheckpoint, sampler: str, sampling_steps: int) -> None:
    """ValueError, naming the flag, unless ``sampler`` is ddpm (all T steps) or 1 <= steps <= T."""
    if sampler != "ddpm" and not 1 <= sampling_steps <= loaded.schedule.num_timesteps:
        raise ValueError(f"--sampling_steps {sampling_steps}: {sampler} takes 1 … T = "
                         f"{loaded.schedule.num_timesteps}")


def sample_batch(model: NoisePredictor, schedule: NoiseSchedule, shape: tuple[int, ...],
                 seed: int, batch: int, sampler: str = "ddpm", sampling_steps: int | None = None,
                 device: torch.device | str = "cpu", variance: str | None = None,
                 clip_denoised: bool = True, progress: bool = False,
                 labels: torch.Tensor | None = None, guidance: float = 0.0) -> torch.Tensor:
    """Batch ``batch`` of a run seeded ``seed`` (autocast per device); its noise comes from a
    generator seeded from (seed, batch), so any batch can be redone alone. ``progress``: a bar
    of its steps. ``labels``: guided by ``guidance`` (``diffusion.classifier_free_guidance``)."""
    device = torch.device(device)
    generator = runtime.generator_for(seed, runtime.Stream.GENERATE, batch, device=device)
    with runtime.autocast_for(device):
        return sample(model, schedule, shape, sampler, sampling_steps, generator, device,
                      progress=progress, clip_denoised=clip_denoised, variance=variance,
                      labels=labels, guidance=guidance)[0]


def network_for_sampling(model: UNet, compile: str, device: torch.device, batch: int,
                         conditional: bool, guidance: float = 0.0) -> NoisePredictor:
    """``model``, torch.compiled per ``compile`` for calls on ``batch`` images (with labels if
    ``conditional``; 2 × ``batch`` under guidance, the doubled batch [c, ∅])."""
    if not runtime.should_compile(compile, device):
        return model
    batch *= 2 if conditional and guidance else 1
    example = runtime.example_batch(batch, model.config.image_size, device)
    example = (*example, torch.zeros_like(example[1])) if conditional else example
    return runtime.compile_with_fallback(model, example, backward=False)


def provenance(loaded: LoadedCheckpoint, sampler: str, sampling_steps: int, seed: int,
               batch_size: int, device: torch.device, variance: str | None,
               digit: str | None = None, guidance: float = 0.0) -> dict:
    """All that fixes a generated set's pixels, kept as JSON in each PNG's "Source" text: the
    checkpoint (its file's sha256) and weights, the sampler, its steps and σ_t², the seed, the
    batch size (a batch's noise is drawn at once), the device type (bf16 on CUDA), the version;
    the digit and guidance of a conditional set."""
    return {"checkpoint": f"step {loaded.step} sha256 {loaded.sha256[:12]}",
            "checkpoint_file": loaded.path.name, "weights": loaded.weights, "sampler": sampler,
            "steps": loaded.schedule.num_timesteps if sampler == "ddpm" else sampling_steps,
            "variance": (variance or "small") if sampler in ("ddpm", "ancestral") else None,
            "seed": seed, "batch_size": batch_size, "device": device.type,
            "ddpm_lib": __version__,
            **({} if digit is None else {"digit": str(digit), "guidance": guidance})}


def read_provenance(path: Path, image_size: int) -> dict:
    """The :func:`provenance` of one generated ``image_size``² RGB PNG. OSError or SyntaxError
    (PIL's bad checksum) if it is cut short or damaged; ValueError if it is another image."""
    with Image.open(path) as image:
        image.verify()  # every chunk's checksum, up to the closing IEND
    with Image.open(path) as image:
        made, text = (*image.size, image.mode), image.text.get("Source", "")
    if made != (image_size, image_size, "RGB"):
        raise ValueError(f"{made[0]}×{made[1]} {made[2]}, not {image_size}² RGB")
    if not text.startswith("{"):
        raise ValueError("no provenance: not written by python -m ddpm_lib.generate")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("its provenance (the PNG's Source text) is damaged") from None


def pixel_settings(provenance: dict) -> dict:
    """What fixes a set's pixels: the provenance but the checkpoint's file name (a renamed copy
    of a checkpoint, the same sha256, continues its set)."""
    return {**provenance, "checkpoint_file": None}


def set_key(provenance: dict) -> str:
    """:func:`pixel_settings` as text, a dictionary key."""
    return json.dumps(pixel_settings(provenance), sort_keys=True)


def same_set(made: dict, now: dict) -> bool:
    """Whether two provenances make the same pixels."""
    return pixel_settings(made) == pixel_settings(now)


def first_difference(made: dict, now: dict) -> str:
    """The first setting in which two provenances differ: ``"seed differs: 0 vs 1"``."""
    key = next(key for key in {**made, **now}
               if key != "checkpoint_file" and made.get(key) != now.get(key))
    def shown(provenance: dict) -> str:  # a checkpoint with its file's name
        file = provenance.get("checkpoint_file", "") if key == "checkpoint" else ""
        return f"{file} {provenance.get(key)}".strip()
    return f"{key} differs: {shown(made)} vs {shown(now)}"


def files_to_keep(paths: list[Path], made_by: dict, image_size: int) -> set[Path]:
    """Of ``paths`` (``00001.png`` … of one folder), those already written with ``made_by``;
    unreadable ones (a crash's) are to be redone. Refuses, naming a file, a folder holding
    other PNGs or images of another provenance; removes leftover temporary files."""
    folder, keep = paths[0].parent, set()
    fix = f"use another --output_dir or delete {folder}"
    strays = sorted(p.name for p in set(folder.glob("*.png")).difference(paths))
    if strays:
        raise ValueError(f"{folder} holds {len(strays)} PNGs besides 00001.png … "
                         f"{paths[-1].name} (first: {strays[0]}): {fix}")
    for leftover in folder.glob(".*.png.tmp"):
        leftover.unlink()
    for path in filter(Path.exists, paths):
        try:
            made = read_provenance(path, image_size)
        except (OSError, SyntaxError):
            continue  # cut short: redone
        except ValueError as error:
            raise ValueError(f"{path}: {error}; {fix}") from None
        if not same_set(made, made_by):
            raise ValueError(f"{path} was made with other settings than this run's "
                             f"({first_difference(made, made_by)}); {fix}")
        keep.add(path)
    return keep


def write_png(pixels: np.ndarray, path: Path, metadata: PngInfo) -> None:
    """Write one (H, W, 3) uint8 image as PNG atomically (temporary name, then rename)."""
    temporary = path.with_name(f".{path.name}.tmp")
    Image.fromarray(pixels).save(temporary, format="PNG", pnginfo=metadata)
    temporary.replace(path)


#: The most images of one set: their names have five digits, 00001.png … 99999.png.
MAX_IMAGES = 99_999


def generate_images(loaded: LoadedCheckpoint, output_dir: str | Path, num_images: int = 10000,
                    batch_size: int = 64, sampler: str = "ddpm", sampling_steps: int = 50,
                    seed: int = 0, device: torch.device | str = "cpu", compile: str = "no",
                    variance: str | None = None, digit: str | None = None,
                    guidance: float = 0.0) -> dict:
    """Write ``num_images`` :func:`sample_batch`es as ``00001.png`` … into ``output_dir``, each
    with its :func:`provenance`. A rerun continues only a set of the same provenance (else
    ValueError before sampling), redoing each batch with a file missing or cut short: the
    images an unbroken run writes. ``digit`` and ``guidance``: see :func:`class_labels`.
    Returns timings."""
    if not (1 <= num_images <= MAX_IMAGES and batch_size >= 1):
        raise ValueError(f"--num_images {num_images} and --batch_size {batch_size}: need 1 … "
                         f"{MAX_IMAGES:,} images (five-digit names) and a batch >= 1")
    check_sampling_steps(loaded, sampler, sampling_steps)
    digit, labels = digit_label(digit), checkpoint_labels(loaded, digit, num_images, guidance)
    output_dir, device = writable_folder(output_dir, "--output_dir"), torch.device(device)
    all_paths = [output_dir / f"{i:05d}.png" for i in range(1, num_images + 1)]
    made_by = provenance(loaded, sampler, sampling_steps, seed, batch_size, device, variance,
                         digit, guidance)
    size, started = loaded.config["image_size"], time.perf_counter()
    done = files_to_keep(all_paths, made_by, size)
    metadata = PngInfo()
    metadata.add_text("Source", json.dumps(made_by))
    model = network_for_sampling(loaded.model, compile, device, min(batch_size, num_images),
                                 labels is not None, guidance)
    compile_seconds = time.perf_counter() - started
    writes = []
    with ThreadPoolExecutor(max_workers=4) as writer:
        for batch, start in enumerate(tqdm(range(0, num_images, batch_size), desc="generating")):
            paths = all_paths[start:start + batch_size]
            if done.issuperset(paths):
                continue
            wanted = None if labels is None else labels[start:start + batch_size]
            images = sample_batch(model, loaded.schedule, (len(paths), 3, size, size), seed,
                                  batch, sampler, sampling_steps, device, variance,
                                  progress=num_images <= batch_size,  # one batch: its steps
                                  labels=wanted, guidance=guidance)
            pixels = to_pixels(images).permute(0, 2, 3, 1).cpu().numpy()
            for image, path in zip(pixels, paths, strict=True):
                writes.append(writer.submit(write_png, image, path, metadata))
        for write in writes:
            write.result()  # raise any error of the writers here
    return {"written": len(writes), "skipped": num_images - len(writes),
            "seconds": time.perf_counter() - started, "compile_seconds": compile_seconds}


def visualization_timesteps(schedule: NoiseSchedule, sampler: str, sampling_steps: int,
                            columns: int = 8) -> list[int]:
    """``columns`` timesteps evenly spaced along ``sampler``'s path from noise (T) to image (0)."""
    visited = [schedule.num_timesteps, *sampler_timesteps(schedule, sampler, sampling_steps)]
    if len(visited) < columns:
        raise ValueError(f"--sampling_steps {sampling_steps}: {sampler} then visits "
                         f"{len(visited)} timesteps, and the grid shows {columns}; give at least "
                         f"{columns - 1}")
    picks = np.linspace(0, len(visited) - 1, columns).round().astype(int)
    return [visited[i] for i in picks]


def visualize_process(loaded: LoadedCheckpoint, output_dir: str | Path, sampler: str = "ddpm",
                      sampling_steps: int = 50, seed: int = 0, device: torch.device | str = "cpu",
                      variance: str | None = None, digit: str | None = None,
                      guidance: float = 0.0) -> tuple[list[Path], Figure]:
    """The report's 8 × 8 grid, samples × timesteps from noise to image: diffusion_process.png
    (bare, as the assignment's code wrote it) and diffusion_process_labeled.png/.pdf (titled)."""
    check_sampling_steps(loaded, sampler, sampling_steps)
    labels = checkpoint_labels(loaded, digit, 8, guidance)
    timesteps = visualization_timesteps(loaded.schedule, sampler, sampling_steps)
    output_dir, device, size = Path(output_dir), torch.device(device), loaded.config["image_size"]
    if (submission := output_dir / "00001.png").exists():
        raise ValueError(f"--output_dir {output_dir} holds a generated set ({submission.name} "
                         f"…), which the grid's files would spoil: give the grid a folder of "
                         f"its own (default: ./diffusion_visualization)")
    output_dir.mkdir(parents=True, exist_ok=True)
    generator = runtime.generator_for(seed, runtime.Stream.VISUALIZE, device=device)
    with runtime.autocast_for(device):
        _, kept = sample(loaded.model, loaded.schedule, (8, 3, size, size), sampler,
                         sampling_steps, generator, device, return_steps=timesteps,
                         progress=True, variance=variance, labels=labels, guidance=guidance)
    steps = {t: x.float().cpu() for t, x in kept.items()}
    grid = torch.stack([steps[t] for t in timesteps], dim=1)  # (samples, columns, C, H, W)
    grid_path = output_dir / "diffusion_process.png"
    save_image((grid.flatten(0, 1) + 1) / 2, grid_path, nrow=len(timesteps))
    figure = plot_diffusion_process(steps, timesteps)
    return [grid_path, *save_figure(figure, output_dir / "diffusion_process_labeled")], figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ddpm_lib.generate", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="path to the trained checkpoint")
    for flag, default, text in (
            ("output_dir", None, "folder for the images (default ./generated_images), or for "
             "--mode visualize the grid (default ./diffusion_visualization)"),
            ("num_images", 10000, "images to generate"),
            ("batch_size", 64, "images sampled at once"),
            ("sampling_steps", 50, "steps of the samplers other than ddpm (all T steps)"),
            ("seed", 0, "seed of the starting noise"),
            ("device", "auto", "auto (cuda → mps → cpu) or a device"),
            ("guidance", 0.0, "with --digit, w of classifier-free guidance, ε = (1 + w) ε(x, t, c)"
             " − w ε(x, t, ∅); 0: the conditional model alone, one network call a step (larger w:"
             " surer, less varied digits, two calls a step; bench/bench_guidance.py measures w)")):
        parser.add_argument(f"--{flag}", type=str if default is None else type(default),
                            default=default, help=text)
    parser.add_argument("--digit", help="a class-conditional checkpoint's digit 0 … 9, or all: "
                        "a balanced set, image i (from 0) of digit i mod 10 (None: unconditional)")
    for flag, choices, default, text in (
            ("mode", ("generate", "visualize"), "generate", "00001.png …, or an 8 × 8 grid"),
            ("sampler", SAMPLERS, "ddpm", "dpm++: DPM-Solver++(2M); ancestral: DDPM's, strided"),
            ("variance", VARIANCES, None, "σ_t² of ddpm and ancestral (None: small)"),
            ("compile", ("auto", "yes", "no"), "auto", "torch.compile the network (auto: CUDA)"),
            ("weights", ("ema", "model"), "ema", "the EMA of the weights, or the raw weights")):
        parser.add_argument(f"--{flag}", choices=choices, default=default, help=text)
    checks = parser.add_argument_group("model parameters", "from the checkpoint; must match it")
    for key in MODEL_DEFINING_KEYS:
        kind = str if key == "schedule" else float if key.startswith("beta") else int
        checks.add_argument(f"--{key}", type=kind, default=None)
    args = parser.parse_args(argv)
    if args.output_dir is None:
        args.output_dir = ("./generated_images" if args.mode == "generate"
                           else "./diffusion_visualization")
    try:
        writable_folder(args.output_dir, "--output_dir", make=False)  # before any sampling
        device = runtime.pick_device(args.device)
        loaded = load_for_sampling(args.checkpoint, device, args.weights,
                                   {key: getattr(args, key) for key in MODEL_DEFINING_KEYS})
        print(f"loaded {args.checkpoint} (step {loaded.step}, {args.weights} weights, "
              f"{loaded.model.num_parameters():,} parameters) on {device}")
        if args.mode == "generate":
            report = generate_images(loaded, args.output_dir, args.num_images, args.batch_size,
                                     args.sampler, args.sampling_steps, args.seed, device,
                                     args.compile, args.variance, args.digit, args.guidance)
            print(f"wrote {report['written']} images ({report['skipped']} already there) in "
                  f"{report['seconds']:.1f} s ({report['compile_seconds']:.1f} s compiling)")
        else:
            paths, _ = visualize_process(loaded, args.output_dir, args.sampler,
                                         args.sampling_steps, args.seed, device, args.variance,
                                         args.digit, args.guidance)
            print("wrote " + ", ".join(str(p) for p in paths))
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        if args.mode == "generate":
            print(f"\ninterrupted: the images written so far are whole and kept; the same "
                  f"command continues the set in {args.output_dir}", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
