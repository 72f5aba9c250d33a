import os, sys, time, torch
from ddpm_lib.model import UNet
from ddpm_lib import runtime
precision, fixed = sys.argv[1], sys.argv[2] == "fixed"
torch.manual_seed(0)
model = UNet(base_dim=8, time_emb_dim=16).cuda()
x, t = runtime.example_batch(4, 28, "cuda")
dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
if fixed:
    compiled = runtime.compile_with_fallback(model, (x, t), backward=False, precision=precision)
else:
    compiled = torch.compile(model, dynamic=False)
s = time.time()
with torch.autocast("cuda", dtype):
    out = compiled(x, t)
print(precision, "fixed" if fixed else "plain", "output dtype", out.dtype, f"{time.time()-s:.1f}s")
