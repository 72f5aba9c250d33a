"""Where and how the work runs: the device, its precision, seeded random streams, torch.compile."""

import tempfile
from contextlib import AbstractContextManager, nullcontext
from enum import IntEnum
from pathlib import Path

import torch

#: Independent random streams, numbered 1, 2, …: each draw in the workbook comes from one.
Stream = IntEnum("Stream", "EVAL_NOISE SAMPLE_GRID EVAL_IMAGES EPOCH_ORDER TRAIN_NOISE "
                           "GENERATE VISUALIZE")


def generator_for(seed: int, *streams: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from ``seed`` and ``streams`` (a :class:`Stream`, then step, rank …)."""
    for stream in streams:
        seed = (seed * 1_000_003 + int(stream) + 1) % (2**63)
    return torch.Generator(device=device).manual_seed(seed)


def pick_device(choice: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (this process's GPU, ``local_rank``), then Apple's MPS, then the CPU.
    ``cuda`` alone is this process's GPU too; ``cuda:N`` must exist."""
    automatic = ("cuda" if torch.cuda.is_available() else
                 "mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(automatic if choice == "auto" else choice)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {choice!r}: use auto, cpu, cuda, cuda:N or mps")
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if not available.get(device.type, lambda: True)():
        raise ValueError(f"--device {choice}: PyTorch sees no {device.type} device here; "
                         f"use --device auto (or cpu)")
    if device.type != "cuda":
        return device
    index = local_rank if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {choice}: this process would use cuda:{index}, but PyTorch "
                         f"sees {torch.cuda.device_count()} GPU(s) here (cuda:0 … "
                         f"cuda:{torch.cuda.device_count() - 1}); start at most that many "
                         f"processes, or give another --device")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


#: --precision: auto picks per device (:func:`resolve_precision`).
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_precision(choice: str, device: torch.device) -> str:
    """``auto``: bf16 where the GPU computes it natively (compute capability ≥ 8.0), fp16 (with
    a gradient scaler in training) on older GPUs such as Colab's T4 (7.5), fp32 elsewhere."""
    if choice != "auto":
        return choice
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"


def autocast_for(device: torch.device, precision: str = "auto") -> AbstractContextManager:
    """Autocast to bf16 or fp16 as ``precision`` resolves on ``device``; fp32: none."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision(precision,
                                                                                  device))
    return torch.autocast(device.type, dtype) if dtype else nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def example_batch(batch_size: int, image_size: int,
                  device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeros shaped like a call ε_θ(x_t, t): (B, 3, H, W) images and (B,) timesteps."""
    images = torch.zeros(batch_size, 3, image_size, image_size, device=device)
    return images, torch.zeros(batch_size, dtype=torch.long, device=device)


class Autocast(torch.nn.Module):
    """``module`` under autocast to ``precision`` inside its own forward, so that a compiled
    graph records the dtype: PyTorch's compile cache before 2.12 keyed only whether autocast was
    on, and served a graph compiled under fp16 to a later bf16 run on the same machine, which
    then trained in fp16 without a gradient scaler and diverged (pytorch/pytorch#181564)."""

    def __init__(self, module: torch.nn.Module, precision: str) -> None:
        super().__init__()
        self.module, self.precision = module, precision

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        with autocast_for(inputs[0].device, self.precision):
            return self.module(*inputs)


def compile_with_fallback(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                          backward: bool, enabled: bool = True,
                          cuda_graphs: bool = False, precision: str = "auto") -> torch.nn.Module:
    """``torch.compile(module, dynamic=False)`` under :class:`Autocast`, probed at once on the
    example (backward too, its gradients dropped); ``module`` itself if that fails.
    ``cuda_graphs``: reduce-overhead mode."""
    if not enabled:
        return module
    compiled = torch.compile(Autocast(module, precision), dynamic=False,
                             mode="reduce-overhead" if cuda_graphs else None)
    try:
        for _ in range(3 if cuda_graphs else 1):  # graphs: recorded on call 2, replayed on 3
            next_step()
            with torch.set_grad_enabled(backward):
                output = compiled(*example_inputs)
            if backward:
                output.float().square().mean().backward()
                module.zero_grad(set_to_none=True)
    except Exception as error:  # the compiler's failures have no common type
        module.zero_grad(set_to_none=True)
        print(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); running eagerly")
        return module
    return compiled


def next_step() -> None:
    """Before each step under ``cuda_graphs``: the last replay's outputs may now be overwritten."""
    torch.compiler.cudagraph_mark_step_begin()


def should_compile(choice: str, device: torch.device, precision: str = "auto") -> bool:
    """``--compile`` auto, yes or no: ``auto`` compiles on CUDA only (on CPUs it costs more),
    and never where Inductor cannot: GPUs below compute capability 7.0, bf16 below 8.0."""
    if choice == "no" or device.type != "cuda":
        return choice == "yes"
    capability = torch.cuda.get_device_capability(device)
    bf16 = resolve_precision(precision, device) == "bf16"
    if capability < (7, 0) or capability < (8, 0) and bf16:
        print(f"not compiling: Inductor does not support {precision} on compute capability "
              f"{capability[0]}.{capability[1]}; running eagerly")
        return False
    return True


def writable_folder(folder: str | Path, flag: str, make: bool = True) -> Path:
    """``folder`` (made if missing and ``make``), once a probe file could be written into it or
    into the nearest folder above it that exists; else a ValueError naming ``flag``."""
    if not str(folder).strip():  # "" would be the current folder: an unset shell variable?
        raise ValueError(f"{flag} is empty: give a folder")
    folder = Path(folder)
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is a file")
        with tempfile.TemporaryFile(dir=existing):
            pass
        if make:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot write into {flag} {folder} ({error.strerror}): "
                         "choose a writable folder") from None
    return folder
