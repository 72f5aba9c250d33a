"""Where a compiled training step's time goes (the fast recipe's UNet, batches 128 and 1,024).

Times the whole step and its parts (forward + backward, forward alone, AdamW, EMA, clipping)
over ``--repeats`` (30) steps, the host's time per step without synchronising (≈ the step
time: launch-bound), and prints torch.profiler's tables for 5 steps. The defaults are the
published run (a CUDA GPU)::

    python bench/profile_step.py        # output: bench/results/profile_step_h100.txt

At toy size on a CPU (the test suite does this)::

    python bench/profile_step.py --device cpu --base_dim 8 --batch_sizes 2 --compile no \
        --repeats 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from bench_speed import RandomBatchTraining
from torch.profiler import ProfilerActivity, profile

from ddpm_lib.diffusion import diffusion_loss
from ddpm_lib.model import UNet, UNetConfig
from ddpm_lib.runtime import autocast_for, compile_with_fallback, example_batch, synchronize


def milliseconds(step: Callable[[], object], device: torch.device, repeats: int = 30) -> float:
    """Mean wall time of ``step`` over ``repeats`` calls, after 3 warm-up calls."""
    for _ in range(3):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / repeats * 1000


def profile_batch(batch: int, args: argparse.Namespace, device: torch.device) -> dict:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_dim=args.base_dim)).to(device)
    training = RandomBatchTraining(model, batch, device, lr=1e-3)
    compiled = compile_with_fallback(model, example_batch(batch, 28, device), backward=True,
                                     enabled=args.compile == "yes")

    def full():
        training.step(compiled)

    def forward_backward():
        with autocast_for(device):
            loss = diffusion_loss(compiled, training.schedule, training.x0, training.generator)
        loss.backward()

    def forward_only():
        with torch.no_grad(), autocast_for(device):
            compiled(training.x0, torch.zeros(batch, dtype=torch.long, device=device))

    parts = {"full step": full, "fwd+bwd": forward_backward, "fwd (no grad)": forward_only,
             "adamw": training.optimizer.step, "ema": lambda: training.ema.update_parameters(model),
             "clip": lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)}
    timings = {name: milliseconds(part, device, args.repeats) for name, part in parts.items()}
    print(f"batch {batch}: " + ", ".join(f"{name} {ms:.2f}" + (" ms" if name == "full step" else "")
                                         for name, ms in timings.items()), flush=True)
    for _ in range(3):
        full()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(args.repeats):
        full()
    host = (time.perf_counter() - started) / args.repeats * 1000
    synchronize(device)
    print(f"batch {batch}: host time per step without sync {host:.2f} ms", flush=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(5):
            full()
        synchronize(device)
    keys = ["self_cpu_time_total"] + (["self_cuda_time_total"] if device.type == "cuda" else [])
    for key in keys:
        print(profiler.key_averages().table(sort_by=key, row_limit=18 if "cpu" in key else 10,
                                            max_name_column_width=60), flush=True)
    return {"batch_size": batch, "milliseconds": timings, "host_milliseconds": host}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--base_dim", type=int, default=32)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--compile", choices=("yes", "no"), default="yes")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls of each part")
    args = parser.parse_args(argv)
    return [profile_batch(batch, args, torch.device(args.device)) for batch in args.batch_sizes]


if __name__ == "__main__":
    main()
