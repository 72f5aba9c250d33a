"""Speed of the workbook's training step and samplers; prints a table and writes JSON.

Training: images/s of ``ddpm_lib.train.optimization_step`` (bf16 on CUDA, AdamW, clipping, EMA)
on random images at each ``--batch_sizes``, and the model FLOP utilisation (forward FLOPs
counted by ``torch.utils.flop_counter``, ×3 for forward + backward, against ``--peak_tflops``).
Sampling: wall time for ``--num_images`` images with DDIM at each ``--ddim_steps``, measured in
full, and with the T-step DDPM sampler, measured over ``--ddpm_measured_steps`` steps and
scaled to T (said so in the output). Speed does not depend on the weights, so the network is
freshly initialised. On a CPU, run it at toy size::

    python bench/bench_speed.py --device cpu --batch_sizes 8 --train_steps 3 --num_images 16 \\
        --sample_batch 16 --ddim_steps 2 --ddpm_measured_steps 2 --base_dim 8 --json /tmp/b.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpm_lib import __version__
from ddpm_lib.diffusion import ddim_sample, p_sample
from ddpm_lib.model import UNet, UNetConfig
from ddpm_lib.runtime import autocast_for, pick_device, synchronize
from ddpm_lib.schedule import make_schedule
from ddpm_lib.train import exponential_moving_average, optimization_step


def forward_flops(model: UNet, image_size: int) -> int:
    """FLOPs of one forward pass for one image (multiply-adds count as two)."""
    x = torch.zeros(1, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter:
        model.cpu()(x, torch.zeros(1, dtype=torch.long))
    return counter.get_total_flops()


def time_training(model: UNet, batch_size: int, steps: int, device: torch.device) -> float:
    """Seconds per optimisation step at ``batch_size`` (after two warm-up steps)."""
    schedule = make_schedule("linear", 1000).to(device)
    ema = exponential_moving_average(model, 0.999)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    generator = torch.Generator(device=device).manual_seed(0)
    x0 = torch.rand(batch_size, 3, model.config.image_size, model.config.image_size,
                    device=device) * 2 - 1
    for _ in range(2):
        optimization_step(model, ema, optimizer, schedule, x0, generator, 1.0)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        optimization_step(model, ema, optimizer, schedule, x0, generator, 1.0)
    synchronize(device)
    return (time.perf_counter() - started) / steps


@torch.no_grad()
def time_sampling(model: UNet, args: argparse.Namespace, device: torch.device) -> dict:
    """Wall time for ``num_images`` images: DDIM in full, DDPM per step × T."""
    schedule = make_schedule("linear", args.timesteps).to(device)
    size, results = model.config.image_size, {}
    batches = [min(args.sample_batch, args.num_images - start)
               for start in range(0, args.num_images, args.sample_batch)]
    generator = torch.Generator(device=device).manual_seed(0)
    with autocast_for(device):
        ddim_sample(model, schedule, (batches[0], 3, size, size), 2, generator=generator,
                    device=device)  # warm-up
        for steps in args.ddim_steps:
            synchronize(device)
            started = time.perf_counter()
            for count in batches:
                ddim_sample(model, schedule, (count, 3, size, size), steps, generator=generator,
                            device=device)
            synchronize(device)
            results[f"ddim_{steps}"] = time.perf_counter() - started
        synchronize(device)
        started = time.perf_counter()
        for count in batches:
            x = torch.randn(count, 3, size, size, device=device, generator=generator)
            for t in range(args.ddpm_measured_steps):
                x = p_sample(model, schedule, x, args.timesteps - 1 - t, generator)
        synchronize(device)
        per_step = (time.perf_counter() - started) / args.ddpm_measured_steps
        results[f"ddpm_{args.timesteps}_extrapolated"] = per_step * args.timesteps
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--base_dim", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--train_steps", type=int, default=50)
    parser.add_argument("--num_images", type=int, default=10000)
    parser.add_argument("--sample_batch", type=int, default=1000)
    parser.add_argument("--ddim_steps", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--ddpm_measured_steps", type=int, default=50)
    parser.add_argument("--peak_tflops", type=float, default=989.0,
                        help="the device's dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/speed.json"))
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    torch.manual_seed(0)
    model = UNet(UNetConfig(image_size=args.image_size, base_dim=args.base_dim))
    flops = forward_flops(model, args.image_size)
    model = model.to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"{name or device.type}; UNet base_dim {args.base_dim}: {model.num_parameters():,} "
          f"parameters, {flops / 1e9:.2f} GFLOP per image forward; torch {torch.__version__}")
    training = []
    for batch_size in args.batch_sizes:
        seconds = time_training(model, batch_size, args.train_steps, device)
        images_per_second = batch_size / seconds
        utilisation = 3 * flops * images_per_second / (args.peak_tflops * 1e12)
        training.append({"batch_size": batch_size, "images_per_second": images_per_second,
                         "mfu": utilisation})
        print(f"train  batch {batch_size:5d}: {images_per_second:9,.0f} images/s, "
              f"MFU {100 * utilisation:5.2f} % of {args.peak_tflops:g} TFLOP/s")
    model.eval()
    sampling = time_sampling(model, args, device)
    for key, seconds in sampling.items():
        print(f"sample {args.num_images} images, {key.replace('_', ' ')}: {seconds:8.2f} s")
    result = {"device": name, "torch": torch.__version__, "ddpm_lib": __version__,
              "parameters": model.num_parameters(), "forward_flops_per_image": flops,
              "arguments": {k: (str(v) if isinstance(v, Path) else v)
                            for k, v in vars(args).items()},
              "training": training, "sampling_seconds": sampling}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
