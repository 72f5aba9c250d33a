"""Speed of the workbook's training step and samplers; prints a table and writes JSON.

Training: images/s of ``ddpm_lib.train.optimization_step`` (bf16 on CUDA, fused AdamW,
clipping, EMA) on random images at each ``--batch_sizes``, the network compiled afresh for each
batch size unless ``--compile no``, and the model FLOP utilisation (forward FLOPs counted by
``torch.utils.flop_counter``, ×3 for forward + backward, against ``--peak_tflops``).
Sampling: wall time for ``--num_images`` images with each ``--samplers`` entry (``ddim:20``,
``dpm++:10`` …), measured in full, and with the T-step DDPM sampler, measured in full or, with
``--ddpm_measured_steps N``, over N of its steps and scaled to T (said so in the output). Speed does
not depend on the weights, so the network is freshly initialised. On a CPU, at toy size::

    python bench/bench_speed.py --device cpu --batch_sizes 8 --train_steps 3 --num_images 16 \\
        --sample_batch 16 --samplers ddim:2 --ddpm_measured_steps 2 --base_dim 8 \\
        --json /tmp/b.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpm_lib import __version__
from ddpm_lib.diffusion import SAMPLERS, ddpm_sample, sample
from ddpm_lib.model import UNet, UNetConfig
from ddpm_lib.runtime import (
    autocast_for,
    compile_with_fallback,
    example_batch,
    next_step,
    pick_device,
    should_compile,
    synchronize,
)
from ddpm_lib.schedule import NoiseSchedule, make_schedule
from ddpm_lib.train import exponential_moving_average, optimization_step


def forward_flops(model: UNet, image_size: int) -> int:
    """FLOPs of one forward pass for one image (multiply-adds count as two)."""
    x = torch.zeros(1, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter:
        model.cpu()(x, torch.zeros(1, dtype=torch.long))
    return counter.get_total_flops()


@dataclass
class RandomBatchTraining:
    """What one training step of ``ddpm_lib.train`` needs, on a fixed batch of random images:
    the schedule, an EMA of ``model`` (0.999), AdamW as in training (fused on CUDA), a seeded
    noise generator. The benchmarks time :meth:`step` (and its parts)."""

    model: UNet
    batch_size: int
    device: torch.device
    lr: float = 2e-4

    def __post_init__(self) -> None:
        self.schedule = make_schedule("linear", 1000).to(self.device)
        self.ema = exponential_moving_average(self.model, 0.999)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr,
                                           fused=self.device.type == "cuda")
        self.generator = torch.Generator(device=self.device).manual_seed(0)
        size = self.model.config.image_size
        self.x0 = torch.rand(self.batch_size, 3, size, size, device=self.device) * 2 - 1

    def step(self, network: torch.nn.Module) -> torch.Tensor:
        """One ``optimization_step`` through ``network`` (the model or its compiled form)."""
        next_step()
        return optimization_step(network, self.ema, self.optimizer, self.schedule, self.x0,
                                 self.generator, 1.0)


def time_training(model: UNet, batch_size: int, steps: int, device: torch.device,
                  compile: bool) -> tuple[float, float]:
    """(seconds per optimisation step at ``batch_size`` after two warm-up steps, seconds spent
    compiling). The optimizer is AdamW as in ``ddpm_lib.train`` (fused on CUDA)."""
    training = RandomBatchTraining(model, batch_size, device)
    size = model.config.image_size
    started = time.perf_counter()
    trained = model
    if compile:
        torch._dynamo.reset()  # a fresh compilation for this batch size, never a recompilation
        example = example_batch(batch_size, size, device)
        trained = compile_with_fallback(model, example, backward=True,
                                        cuda_graphs=device.type == "cuda")  # as ddpm_lib.train
    synchronize(device)
    compile_seconds = time.perf_counter() - started
    for _ in range(2):
        training.step(trained)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        training.step(trained)
    synchronize(device)
    return (time.perf_counter() - started) / steps, compile_seconds


@torch.no_grad()
def time_sampling(model: UNet, args: argparse.Namespace, device: torch.device) -> dict:
    """Wall time for ``num_images`` images with each sampler (after compiling and a warm-up)."""
    schedule = make_schedule("linear", args.timesteps).to(device)
    size, results = model.config.image_size, {}
    batches = [min(args.sample_batch, args.num_images - start)
               for start in range(0, args.num_images, args.sample_batch)]
    generator = torch.Generator(device=device).manual_seed(0)
    started = time.perf_counter()
    if should_compile(args.compile, device):
        torch._dynamo.reset()
        example = example_batch(batches[0], size, device)
        model = compile_with_fallback(model, example, backward=False)
    with autocast_for(device):
        for count in sorted(set(batches)):  # warm up (and compile) every batch shape
            sample(model, schedule, (count, 3, size, size), "ddim", 2, generator, device)
        synchronize(device)
        results["compile_and_warm_up"] = time.perf_counter() - started
        for text in args.samplers:
            name, _, steps = text.partition(":")
            if name not in SAMPLERS or name == "ddpm" or not steps.isdigit():
                raise SystemExit(f"--samplers takes NAME:N (NAME: one of {SAMPLERS[1:]}), "
                                 f"got {text!r}")
            synchronize(device)
            started = time.perf_counter()
            for count in batches:
                sample(model, schedule, (count, 3, size, size), name, int(steps), generator,
                       device)
            synchronize(device)
            results[f"{name}_{steps}"] = time.perf_counter() - started
        # DDPM's steps all cost the same: time the library's sampler over the first ``measured``
        # of them (a schedule of that length), then scale to T.
        measured = args.ddpm_measured_steps or args.timesteps
        part = NoiseSchedule.from_betas(schedule.betas[:measured].cpu()).to(device)
        synchronize(device)
        started = time.perf_counter()
        for count in batches:
            ddpm_sample(model, part, (count, 3, size, size), generator, device)
        synchronize(device)
        seconds = (time.perf_counter() - started) * args.timesteps / measured
        label = "" if measured == args.timesteps else "_extrapolated"
        results[f"ddpm_{args.timesteps}{label}"] = seconds
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
    parser.add_argument("--sample_batch", type=int, default=10000)
    parser.add_argument("--samplers", nargs="+",
                        default=["ddim:10", "ddim:20", "ddim:50", "dpm++:10", "dpm++:20",
                                 "dpm++:50"])
    parser.add_argument("--ddpm_measured_steps", type=int, default=0,
                        help="time the DDPM sampler over this many steps and scale to T "
                        "(0: all T steps)")
    parser.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                        help="torch.compile the network (auto: on CUDA)")
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
    training, compile = [], should_compile(args.compile, device)
    for batch_size in args.batch_sizes:
        seconds, compile_seconds = time_training(model, batch_size, args.train_steps, device,
                                                 compile)
        images_per_second = batch_size / seconds
        utilisation = 3 * flops * images_per_second / (args.peak_tflops * 1e12)
        training.append({"batch_size": batch_size, "images_per_second": images_per_second,
                         "mfu": utilisation, "compiled": compile,
                         "compile_seconds": compile_seconds})
        print(f"train  batch {batch_size:5d}: {images_per_second:9,.0f} images/s, "
              f"MFU {100 * utilisation:5.2f} % of {args.peak_tflops:g} TFLOP/s"
              + (f" (compiled in {compile_seconds:.0f} s)" if compile else ""))
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
