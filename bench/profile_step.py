"""Where a compiled training step's time goes (the fast recipe's UNet, batches 128 and 1,024).

Times the whole step and its parts (forward + backward, forward alone, AdamW, EMA, clipping)
over 30 steps, the host's time per step without synchronising (≈ the step time: launch-bound),
and prints torch.profiler's tables for 5 steps. Needs a CUDA GPU::

    python bench/profile_step.py        # output: bench/results/profile_step_h100.txt
"""

import time

import torch
from torch.profiler import ProfilerActivity, profile

from ddpm_lib.diffusion import diffusion_loss
from ddpm_lib.model import UNet, UNetConfig
from ddpm_lib.runtime import autocast_for, compile_with_fallback, example_batch
from ddpm_lib.schedule import make_schedule
from ddpm_lib.train import exponential_moving_average, optimization_step

device = torch.device("cuda")
schedule = make_schedule("linear", 1000).to(device)


def milliseconds(step, repeats: int = 30) -> float:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats * 1000


def profile_batch(batch: int) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_dim=32)).to(device)
    ema = exponential_moving_average(model, 0.999)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    generator = torch.Generator(device=device).manual_seed(0)
    x0 = torch.rand(batch, 3, 28, 28, device=device) * 2 - 1
    compiled = compile_with_fallback(model, example_batch(batch, 28, device), backward=True)

    def full():
        optimization_step(compiled, ema, optimizer, schedule, x0, generator, 1.0)

    def forward_backward():
        with autocast_for(device):
            loss = diffusion_loss(compiled, schedule, x0, generator)
        loss.backward()

    def forward_only():
        with torch.no_grad(), autocast_for(device):
            compiled(x0, torch.zeros(batch, dtype=torch.long, device=device))

    print(f"batch {batch}: full step {milliseconds(full):.2f} ms, fwd+bwd "
          f"{milliseconds(forward_backward):.2f}, fwd (no grad) {milliseconds(forward_only):.2f}, "
          f"adamw {milliseconds(optimizer.step):.2f}, "
          f"ema {milliseconds(lambda: ema.update_parameters(model)):.2f}, clip "
          f"{milliseconds(lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)):.2f}",
          flush=True)
    for _ in range(3):
        full()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(30):
        full()
    host = (time.perf_counter() - started) / 30 * 1000
    torch.cuda.synchronize()
    print(f"batch {batch}: host time per step without sync {host:.2f} ms", flush=True)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        for _ in range(5):
            full()
        torch.cuda.synchronize()
    for key in ("self_cpu_time_total", "self_cuda_time_total"):
        print(profiler.key_averages().table(sort_by=key, row_limit=18 if "cpu" in key else 10,
                                            max_name_column_width=60), flush=True)


for batch in (128, 1024):
    profile_batch(batch)
