"""Memory layout and cuDNN autotuning: what they do to the UNet's sampling and training speed.

For each combination of ``channels_last`` (NHWC weights and activations instead of NCHW) and
``torch.backends.cudnn.benchmark`` (cuDNN times its convolution algorithms once per shape and
keeps the fastest), compiled afresh: seconds per forward pass at the sampling batch (the
1,000-step sampler makes 1,000 of them) and images/s of the training step with CUDA graphs, as
``ddpm_lib.train`` runs it. Prints a table and writes JSON. On a CPU, at toy size::

    python bench/bench_layout.py --device cpu --base_dim 8 --sample_batch 4 --train_batch 4 \\
        --forward_passes 2 --train_steps 2 --json /tmp/layout.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from bench_speed import time_training

from ddpm_lib import __version__
from ddpm_lib.model import UNet, UNetConfig
from ddpm_lib.runtime import (
    autocast_for,
    compile_with_fallback,
    example_batch,
    pick_device,
    should_compile,
    synchronize,
)


@torch.no_grad()
def seconds_per_forward(model: UNet, batch: int, passes: int, device: torch.device,
                        compile: bool) -> float:
    """Mean wall time of one forward pass ε_θ(x_t, t) over ``batch`` images (bf16 on CUDA)."""
    x, t = example_batch(batch, model.config.image_size, device)
    network = compile_with_fallback(model, (x, t), backward=False) if compile else model
    with autocast_for(device):
        for _ in range(2):
            network(x, t)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(passes):
            network(x, t)
        synchronize(device)
    return (time.perf_counter() - started) / passes


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--base_dim", type=int, default=64)
    parser.add_argument("--sample_batch", type=int, default=10000)
    parser.add_argument("--train_batch", type=int, default=1024)
    parser.add_argument("--forward_passes", type=int, default=20)
    parser.add_argument("--train_steps", type=int, default=30)
    parser.add_argument("--compile", choices=("auto", "yes", "no"), default="auto")
    parser.add_argument("--json", type=Path, default=Path("bench/results/layout.json"))
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    compile = should_compile(args.compile, device)
    rows = []
    for channels_last in (False, True):
        for cudnn_benchmark in (False, True):
            torch.backends.cudnn.benchmark = cudnn_benchmark
            torch._dynamo.reset()
            torch.manual_seed(0)
            model = UNet(UNetConfig(base_dim=args.base_dim)).to(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            forward = seconds_per_forward(model.eval(), args.sample_batch, args.forward_passes,
                                          device, compile)
            step, _ = time_training(model.train(), args.train_batch, args.train_steps, device,
                                    compile)
            rows.append({"channels_last": channels_last, "cudnn_benchmark": cudnn_benchmark,
                         "forward_seconds": forward, "ddpm_1000_seconds": 1000 * forward,
                         "train_images_per_second": args.train_batch / step})
            print(f"channels_last={channels_last!s:5} cudnn.benchmark={cudnn_benchmark!s:5}: "
                  f"a forward pass over {args.sample_batch:,} images {1000 * forward:7.1f} ms "
                  f"(DDPM's 1,000 steps ≈ {1000 * forward:6.1f} s); training at batch "
                  f"{args.train_batch:,}: {args.train_batch / step:9,.0f} images/s", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    settings = {**vars(args), "json": str(args.json)}
    args.json.write_text(json.dumps({"device": name, "torch": torch.__version__,
                                     "ddpm_lib": __version__, "args": settings, "rows": rows},
                                    indent=1))
    return rows


if __name__ == "__main__":
    main()
