"""Where and how the work runs: the device, bf16 autocast, seeded random streams, torch.compile."""

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
    """``auto``: CUDA (this process's GPU), then Apple's MPS, then the CPU."""
    if choice != "auto":
        try:
            device = torch.device(choice)
        except RuntimeError:
            raise ValueError(f"--device {choice!r}: use auto, cpu, cuda, cuda:N or mps") from None
        available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
        if not available.get(device.type, lambda: True)():
            raise ValueError(f"--device {choice}: PyTorch sees no {device.type} device here; "
                             f"use --device auto (or cpu)")
        return device
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


def autocast_for(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA; full precision elsewhere."""
    return torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def example_batch(batch_size: int, image_size: int,
                  device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeros shaped like a call ε_θ(x_t, t): (B, 3, H, W) images and (B,) timesteps."""
    images = torch.zeros(batch_size, 3, image_size, image_size, device=device)
    return images, torch.zeros(batch_size, dtype=torch.long, device=device)


def compile_with_fallback(module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                          backward: bool, enabled: bool = True,
                          cuda_graphs: bool = False) -> torch.nn.Module:
    """``torch.compile(module, dynamic=False)`` probed at once on the example (backward too, its
    gradients dropped); ``module`` itself if that fails. ``cuda_graphs``: reduce-overhead mode."""
    if not enabled:
        return module
    compiled = torch.compile(module, dynamic=False, mode="reduce-overhead" if cuda_graphs else None)
    try:
        for _ in range(3 if cuda_graphs else 1):  # graphs: recorded on call 2, replayed on 3
            next_step()
            with torch.set_grad_enabled(backward), autocast_for(example_inputs[0].device):
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


def should_compile(choice: str, device: torch.device) -> bool:
    """``--compile`` auto, yes or no: ``auto`` compiles on CUDA only (on CPUs it costs more)."""
    return choice == "yes" or (choice == "auto" and device.type == "cuda")


def writable_folder(folder: str | Path, flag: str) -> Path:
    """``folder``, made if missing, once a probe file could be written there; else a ValueError
    naming ``flag``: found before any long work, not after it."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"cannot write into {flag} {folder} ({error.strerror}): "
                         "choose a writable folder") from None
    return Path(folder)
