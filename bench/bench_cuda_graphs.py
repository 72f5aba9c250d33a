"""Training step time with and without CUDA graphs (``torch.compile`` mode "reduce-overhead").

The step is ``ddpm_lib.train.optimization_step`` (bf16 loss, backward, clipping, fused AdamW,
EMA) on random images, compiled afresh for each (width, batch, mode); 5 warm-up steps (which
compile and record), then 40 timed. Prints one line per setting. Needs a CUDA GPU::

    python bench/bench_cuda_graphs.py      # output: bench/results/cuda_graphs_h100.txt
"""

import time

import torch

from ddpm_lib.model import UNet, UNetConfig
from ddpm_lib.schedule import make_schedule
from ddpm_lib.train import exponential_moving_average, optimization_step

device = torch.device("cuda")
schedule = make_schedule("linear", 1000).to(device)
for base_dim in (32, 64):
    for batch in (128, 256, 1024):
        for mode in ("default", "reduce-overhead"):
            torch._dynamo.reset()
            torch.manual_seed(0)
            model = UNet(UNetConfig(base_dim=base_dim)).to(device)
            ema = exponential_moving_average(model, 0.999)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
            generator = torch.Generator(device=device).manual_seed(0)
            x0 = torch.rand(batch, 3, 28, 28, device=device) * 2 - 1
            compiled = torch.compile(model, dynamic=False,
                                     mode=None if mode == "default" else mode)
            started = time.perf_counter()
            try:
                losses = []
                for _ in range(5):
                    torch.compiler.cudagraph_mark_step_begin()
                    losses.append(optimization_step(compiled, ema, optimizer, schedule, x0,
                                                    generator, 1.0).detach())
                torch.cuda.synchronize()
                compile_seconds = time.perf_counter() - started
                started = time.perf_counter()
                for _ in range(40):
                    torch.compiler.cudagraph_mark_step_begin()
                    losses.append(optimization_step(compiled, ema, optimizer, schedule, x0,
                                                    generator, 1.0).detach())
                torch.cuda.synchronize()
                ms = (time.perf_counter() - started) / 40 * 1000
                print(f"base_dim {base_dim} batch {batch:5d} {mode:16s}: {ms:6.2f} ms/step = "
                      f"{batch / ms * 1000:8.0f} img/s (compile+5 steps {compile_seconds:.0f} s; "
                      f"loss {torch.stack(losses)[-1].item():.4f}, "
                      f"mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB)", flush=True)
            except Exception as error:  # report and go on with the next setting
                print(f"base_dim {base_dim} batch {batch} {mode}: FAILED "
                      f"{type(error).__name__}: {str(error)[:300]}", flush=True)
