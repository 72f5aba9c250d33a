"""Where and how the work runs: the device, mixed precision, and seeded random streams."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from enum import IntEnum

import torch


class Stream(IntEnum):
    """Independent random streams: each draw in the workbook comes from one of these."""

    EVAL_NOISE = 1
    SAMPLE_GRID = 2
    EVAL_IMAGES = 3
    EPOCH_ORDER = 4
    TRAIN_NOISE = 5
    GENERATE = 6
    VISUALIZE = 7


def stream_seed(seed: int, *streams: int) -> int:
    """Mix ``seed`` with stream numbers (a :class:`Stream`, then step, rank …) into one seed."""
    mixed = seed
    for stream in streams:
        mixed = (mixed * 1_000_003 + int(stream) + 1) % (2**63)
    return mixed


def generator_for(seed: int, *streams: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded by :func:`stream_seed`: the same arguments give the same draws."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, *streams))


def pick_device(choice: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA (this process's GPU), then Apple's MPS, then the CPU."""
    if choice != "auto":
        return torch.device(choice)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_for(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA; full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def example_batch(
    batch_size: int, image_size: int, device: torch.device | str, channels: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeros shaped like a network call ε_θ(x_t, t): (B, C, H, W) images and (B,) timesteps, the
    example :func:`compile_with_fallback` compiles for."""
    return (torch.zeros(batch_size, channels, image_size, image_size, device=device),
            torch.zeros(batch_size, dtype=torch.long, device=device))


def compile_with_fallback(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    backward: bool,
    enabled: bool = True,
    cuda_graphs: bool = False,
) -> torch.nn.Module:
    """``torch.compile(module)``, tried at once on ``example_inputs``; the eager module if it fails.

    The compiled graphs are specialised to the example's shapes (``dynamic=False``): call it only
    with those shapes when training, since a recompilation after a batch-size change once crashed
    a compiled GroupNorm backward ("misaligned address"). ``backward=True`` also compiles the
    backward pass (training); its gradients are discarded. ``cuda_graphs=True`` compiles with
    ``mode="reduce-overhead"``: the network's forward and backward kernels are replayed as CUDA
    graphs, which removes the per-kernel launch cost that bounds small UNets (call
    :func:`next_step` before each step). The probe then runs three times, so that the graphs are
    recorded and replayed before anything depends on them. Compilation errors (no Triton, an
    unsupported operation) print a message and return ``module`` unchanged, so a run never
    depends on the compiler.
    """
    if not enabled:
        return module
    compiled = torch.compile(module, dynamic=False, mode="reduce-overhead" if cuda_graphs else None)
    try:
        for _ in range(3 if cuda_graphs else 1):
            next_step()
            if backward:
                with autocast_for(example_inputs[0].device):
                    output = compiled(*example_inputs)
                output.float().square().mean().backward()
                module.zero_grad(set_to_none=True)
            else:
                with torch.no_grad(), autocast_for(example_inputs[0].device):
                    compiled(*example_inputs)
    except Exception as error:  # the compiler's failures have no common type
        module.zero_grad(set_to_none=True)
        print(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); "
              f"running eagerly instead")
        return module
    return compiled


def next_step() -> None:
    """Tell CUDA-graph replays (``cuda_graphs=True`` above) that a new step begins, so the last
    step's graph outputs may be overwritten; does nothing without them."""
    torch.compiler.cudagraph_mark_step_begin()


def should_compile(choice: str, device: torch.device) -> bool:
    """``--compile``: ``auto`` compiles on CUDA only (on CPUs it costs more than it saves)."""
    if choice not in ("auto", "yes", "no"):
        raise ValueError(f"--compile must be auto, yes or no, got {choice!r}")
    return choice == "yes" or (choice == "auto" and device.type == "cuda")
