"""Issue 10 probe: what makes the 64-wide UNet's forward over 10,000 images faster."""
import time

import torch
from torch.profiler import ProfilerActivity, profile

from ddpm_lib.model import UNet, UNetConfig

dev = torch.device("cuda")


def run(name, batch=10000, dtype=torch.bfloat16, cl=False, mode="none", passes=10):
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = UNet(UNetConfig(base_dim=64)).to(dev).eval()
    if cl:
        m = m.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 28, 28, device=dev)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (batch,), device=dev)
    t0 = time.perf_counter()
    net = m if mode == "none" else torch.compile(
        m, dynamic=False, mode=None if mode == "default" else mode)
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
        net(x, t)
        torch.cuda.synchronize()
        ct = time.perf_counter() - t0
        net(x, t)
        torch.cuda.synchronize()
        s = time.perf_counter()
        for _ in range(passes):
            net(x, t)
        torch.cuda.synchronize()
    per = (time.perf_counter() - s) / passes * 10000 / batch
    print(f"{name:42s} compile+first {ct:6.1f} s   {1000*per:6.1f} ms per 10k-image forward "
          f"(DDPM-1000 ≈ {per*1000:5.1f} s)", flush=True)
    return m, net, x, t


torch.backends.cudnn.benchmark = True
run("eager bf16 NCHW")
run("eager bf16 channels-last", cl=True)
run("compile bf16 NCHW", mode="default")
m, net, x, t = run("compile bf16 channels-last", cl=True, mode="default")
with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16), profile(
        activities=[ProfilerActivity.CUDA]) as p:
    net(x, t)
    torch.cuda.synchronize()
print(p.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=70))
run("compile fp16 channels-last", cl=True, mode="default", dtype=torch.float16)
run("compile bf16 CL batch 5000", batch=5000, cl=True, mode="default")
run("compile bf16 CL batch 2500", batch=2500, cl=True, mode="default")
run("max-autotune-no-cudagraphs bf16 CL", cl=True, mode="max-autotune-no-cudagraphs")
