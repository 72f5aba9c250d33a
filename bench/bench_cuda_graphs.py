"""Training step time with and without CUDA graphs (``torch.compile`` mode "reduce-overhead").

The step is ``ddpm_lib.train.optimization_step`` (bf16 loss, backward, clipping, AdamW, EMA) on
random images, compiled afresh for each (width, batch, mode); ``--warmup_steps`` steps (which
compile and record), then ``--steps`` timed. Prints one line per setting. The defaults are the
published run (a CUDA GPU)::

    python bench/bench_cuda_graphs.py      # output: bench/results/cuda_graphs_h100.txt

At toy size on a CPU (the test suite does this; "eager" skips compiling)::

    python bench/bench_cuda_graphs.py --device cpu --base_dims 8 --batch_sizes 2 --modes eager
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_speed import RandomBatchTraining

from ddpm_lib.model import UNet, UNetConfig
from ddpm_lib.runtime import synchronize


def time_step(base_dim: int, batch: int, mode: str, args: argparse.Namespace,
              device: torch.device) -> dict:
    """Milliseconds a step for one setting (and the compile time, the last loss, peak memory)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_dim=base_dim)).to(device)
    training = RandomBatchTraining(model, batch, device, lr=1e-3)
    network = model if mode == "eager" else torch.compile(
        model, dynamic=False, mode=None if mode == "default" else mode)

    def run(steps: int) -> list[torch.Tensor]:
        losses = [training.step(network).detach() for _ in range(steps)]
        synchronize(device)
        return losses

    started = time.perf_counter()
    run(args.warmup_steps)
    compile_seconds = time.perf_counter() - started
    started = time.perf_counter()
    losses = run(args.steps)
    milliseconds = (time.perf_counter() - started) / args.steps * 1000
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return {"base_dim": base_dim, "batch_size": batch, "mode": mode, "ms_per_step": milliseconds,
            "images_per_second": batch / milliseconds * 1000, "compile_seconds": compile_seconds,
            "loss": torch.stack(losses)[-1].item(), "peak_memory_gib": memory}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--base_dims", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[128, 256, 1024])
    parser.add_argument("--modes", nargs="+", default=["default", "reduce-overhead"],
                        choices=("eager", "default", "reduce-overhead"))
    parser.add_argument("--warmup_steps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results = []
    for base_dim in args.base_dims:
        for batch in args.batch_sizes:
            for mode in args.modes:
                try:
                    row = time_step(base_dim, batch, mode, args, device)
                except Exception as error:  # report and go on with the next setting
                    print(f"base_dim {base_dim} batch {batch} {mode}: FAILED "
                          f"{type(error).__name__}: {str(error)[:300]}", flush=True)
                    continue
                results.append(row)
                print(f"base_dim {base_dim} batch {batch:5d} {mode:16s}: "
                      f"{row['ms_per_step']:6.2f} ms/step = {row['images_per_second']:8.0f} img/s "
                      f"(compile+{args.warmup_steps} steps {row['compile_seconds']:.0f} s; "
                      f"loss {row['loss']:.4f}, mem {row['peak_memory_gib']:.1f} GiB)", flush=True)
    return results


if __name__ == "__main__":
    main()
