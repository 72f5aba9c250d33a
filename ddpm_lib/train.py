"""Training: ε-prediction on the ``mnist_rgb`` folder, with EMA, checkpoints and sample grids.

Command line (the assignment's arguments and defaults)::

    python -m ddpm_lib.train --data_path ./data/mnist_rgb --epochs 100 --batch_size 128

The same script runs on the CPU, one GPU, or several through ``torchrun``::

    torchrun --nproc_per_node=2 -m ddpm_lib.train ...

``--batch_size`` is the global batch: with N processes each takes ``batch_size / N`` images a
step, so a run does the same optimisation whatever the number of GPUs.

``--recipe fast`` swaps the assignment's defaults for the workbook's faster recipe (see
:data:`RECIPES` and docs/BENCHMARKS.md); any flag given explicitly still wins::

    python -m ddpm_lib.train --recipe fast
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torchvision.utils import save_image
from tqdm.auto import tqdm

from .checkpoint import (
    MODEL_DEFINING_KEYS,
    CheckpointError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)
from .data import MnistRGBFolder
from .diffusion import diffusion_loss, q_sample, sample
from .model import UNet, UNetConfig
from .runtime import (
    Stream,
    autocast_for,
    compile_with_fallback,
    example_batch,
    generator_for,
    next_step,
    pick_device,
    should_compile,
    stream_seed,
    synchronize,
)
from .schedule import SCHEDULES, NoiseSchedule, make_schedule

#: Named sets of defaults. "assignment" is the original code's; "fast" is the workbook's
#: recipe for one GPU, chosen with the digit evaluator for quality per minute of wall time: the
#: assignment's UNet, 40 epochs in batches of 512 with a learning rate raised to 10⁻³ after a
#: short linear warm-up and decayed to zero on a cosine, evaluated and saved every 5 epochs.
#: Measured against each other, and against the 32-wide recipe it replaced, in
#: docs/BENCHMARKS.md.
RECIPES: dict[str, dict[str, Any]] = {
    "assignment": {},
    "fast": {"batch_size": 512, "lr": 1e-3, "warmup_steps": 100, "lr_schedule": "cosine",
             "epochs": 40, "eval_interval": 5},
}


@dataclass
class TrainConfig:
    """Every training argument; the first fifteen are the assignment's, with its defaults."""

    data_path: str = "./data/mnist_rgb"
    image_size: int = 28
    timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    time_emb_dim: int = 128
    base_dim: int = 64
    epochs: int = 100
    batch_size: int = 128
    lr: float = 2e-4
    checkpoint_dir: str = "./checkpoints"
    sample_dir: str = "./samples"
    save_interval: int = 10
    sample_interval: int = 500
    resume: str | None = None
    schedule: str = "linear"
    ema_decay: float = 0.999
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_steps: int = 0
    max_images: int = 0
    num_eval_images: int = 1024
    sample_sampler: str = "ddim"
    sample_steps: int = 50
    seed: int = 0
    device: str = "auto"
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    compile: str = "auto"
    min_snr_gamma: float = 0.0
    eval_interval: int = 1
    recipe: str = "assignment"

    @classmethod
    def from_recipe(cls, recipe: str = "assignment", **overrides: Any) -> TrainConfig:
        """The recipe's settings (:data:`RECIPES`), then ``overrides`` on top."""
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
        return cls(**{**RECIPES[recipe], "recipe": recipe, **overrides})

    def model_config(self) -> UNetConfig:
        return UNetConfig(
            image_size=self.image_size, base_dim=self.base_dim, time_emb_dim=self.time_emb_dim
        )

    def noise_schedule(self) -> NoiseSchedule:
        return make_schedule(self.schedule, self.timesteps, self.beta_start, self.beta_end)


@dataclass
class TrainResult:
    """What a call of :func:`train` did."""

    steps: int
    epochs_completed: float
    final_loss: float
    eval_loss: float
    best_eval_loss: float
    images_per_second: float
    checkpoint_dir: Path
    sample_dir: Path


# ----------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class ProcessGroup:
    """Where this process stands in a ``torchrun`` launch (rank 0 of 1 when run plainly)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_processes(device_choice: str) -> tuple[ProcessGroup, torch.device]:
    """Join the ``torchrun`` group if launched by it (NCCL on GPUs, gloo on CPUs); pick a device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    group = ProcessGroup(
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=world_size,
    )
    device = pick_device(device_choice, group.local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return group, device


def ema_update_with_warmup(decay: float) -> Callable:
    """The EMA update θ̄ ← β θ̄ + (1 - β) θ with β = min(decay, (1 + n) / (10 + n)) after n updates.

    A fixed β = 0.999 would leave the average dominated by the random initial weights for the
    first thousand steps; the warm-up lets it follow the weights closely early in training.
    For ``torch.optim.swa_utils.AveragedModel(multi_avg_fn=...)``.
    """

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor],
               num_averaged: torch.Tensor) -> None:
        # β stays a tensor on the parameters' device: no host-device synchronisation per step.
        beta = ((1 + num_averaged) / (10 + num_averaged)).clamp(max=decay).float()
        torch._foreach_lerp_(averaged, current, [1 - beta] * len(averaged))

    return update


def exponential_moving_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (swa_utils.AveragedModel) updated by ema_update_with_warmup."""
    return AveragedModel(model, multi_avg_fn=ema_update_with_warmup(decay), use_buffers=True)


# ----------------------------------------------------------------------------- logs


class CsvLog:
    """An append-only CSV file; on resume, rows past the resumed step are dropped."""

    def __init__(self, path: Path, columns: list[str], keep_until_step: int | None):
        self.path, self.columns = path, columns
        rows = []
        if keep_until_step is not None and path.exists():
            with path.open(newline="") as file:
                rows = [r for r in csv.DictReader(file) if int(r["step"]) <= keep_until_step]
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, rows: list[dict[str, Any]]) -> None:
        with self.path.open("a", newline="") as file:
            csv.DictWriter(file, fieldnames=self.columns).writerows(rows)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def fixed_eval_loss(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    images: torch.Tensor,
    seed: int,
    batch_size: int = 256,
) -> float:
    """L_simple of ``model`` on fixed images, timesteps and noise: comparable between epochs.

    The timesteps are stratified, t_i = ⌊i·T/N⌋, so every part of the chain counts equally;
    the noise comes from a generator seeded with ``seed``. This is the checkpoints' "best".
    """
    count = len(images)
    noise = torch.randn(images.shape, generator=generator_for(seed, Stream.EVAL_NOISE))
    noise = noise.to(images.device)
    timesteps = (torch.arange(count) * schedule.num_timesteps // count).to(images.device)
    total = 0.0
    for start in range(0, count, batch_size):
        x0 = to_model_range(images[start : start + batch_size])
        t = timesteps[start : start + batch_size]
        eps = noise[start : start + batch_size]
        with autocast_for(images.device):
            predicted = model(q_sample(schedule, x0, t, eps), t)
        total += torch.nn.functional.mse_loss(predicted.float(), eps, reduction="sum").item()
    return total / noise.numel()


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels {0 … 255} → floats in [-1, 1]."""
    return images.float() / 127.5 - 1.0


def save_sample_grid(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    config: TrainConfig,
    device: torch.device,
    path: Path,
    count: int = 64,
) -> Path:
    """Sample ``count`` images with fixed noise (the same at every call) and save an 8-wide grid."""
    generator = generator_for(config.seed, Stream.SAMPLE_GRID, device=device)
    shape = (count, 3, config.image_size, config.image_size)
    with autocast_for(device):
        images, _ = sample(
            model, schedule, shape, config.sample_sampler, config.sample_steps, generator, device
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.float() + 1) / 2, path, nrow=8)
    return path


# ----------------------------------------------------------------------------- training


def optimization_step(
    trained: torch.nn.Module,
    ema: AveragedModel,
    optimizer: torch.optim.Optimizer,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator: torch.Generator,
    grad_clip: float,
    min_snr_gamma: float = 0.0,
) -> torch.Tensor:
    """One step of Algorithm 1 on ``x0``: L_simple (bf16 on CUDA), AdamW, gradient clipping, EMA.

    ``trained`` is the network (or its DistributedDataParallel wrapper); returns the loss.
    ``min_snr_gamma`` > 0 weights the loss by Min-SNR-γ (see :func:`diffusion_loss`).
    """
    with autocast_for(x0.device):
        loss = diffusion_loss(trained, schedule, x0, generator, min_snr_gamma)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(trained.parameters(), grad_clip)
    optimizer.step()
    ema.update_parameters(getattr(trained, "module", trained))
    return loss


def learning_rate_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) out of ``total_steps``.

    Linear warm-up over W = ``warmup_steps``: lr · (step + 1) / W. Then ``constant``: lr; or
    ``cosine``: lr · ½ (1 + cos(π p)), p = (step - W) / (total_steps - W), falling to 0 at the
    end. A function of the step alone, so a resumed run continues the same schedule.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train(
    config: TrainConfig,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    network: torch.nn.Module | None = None,
) -> TrainResult:
    """Train ε_θ with L_simple (DDPM Algorithm 1) as ``config`` says; returns what it did.

    ``on_progress`` (rank 0 only) receives ``{"kind": "loss", "rows": [...]}`` as losses are
    logged and ``{"kind": "eval", ...}`` at every evaluation (used by the notebooks' live plots
    and the benchmarks). ``network`` replaces the workbook's UNet by any module called as
    ``network(x_t, t) → ε̂`` (the benchmark's diffusers baseline); its checkpoints then hold
    that module's weights under this config.
    """
    group, device = start_processes(config.device)
    try:
        return _train(config, group, device, on_progress, network)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(
    config: TrainConfig,
    group: ProcessGroup,
    device: torch.device,
    on_progress: Callable[[dict[str, Any]], None] | None,
    network: torch.nn.Module | None = None,
) -> TrainResult:
    run_started = time.perf_counter()
    validate(config, group)
    checkpoint_dir, sample_dir = Path(config.checkpoint_dir), Path(config.sample_dir)
    resume_state = load_resume_state(config)
    earlier_wall_seconds = resume_state.get("wall_seconds", 0.0) if resume_state else 0.0

    images = MnistRGBFolder(config.data_path, image_size=config.image_size).load_all(
        progress=group.is_main
    )
    if config.max_images:
        images = images[: config.max_images]
    steps_per_epoch = len(images) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"--batch_size {config.batch_size} is larger than the {len(images)} training images"
        )
    images = images.to(device)
    eval_images = images[
        torch.randperm(len(images), generator=generator_for(config.seed, Stream.EVAL_IMAGES))[
            : config.num_eval_images
        ].to(device)
    ]

    torch.manual_seed(config.seed)
    model = (network if network is not None else UNet(config.model_config())).to(device)
    if device.type == "cuda":  # NHWC convolutions: 11 % faster training steps on an H200
        model = model.to(memory_format=torch.channels_last)
    ema = exponential_moving_average(model, config.ema_decay)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
        fused=device.type == "cuda",
    )
    schedule = config.noise_schedule().to(device)

    step, best_eval_loss = 0, math.inf
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        ema.module.load_state_dict(resume_state["ema_model"])
        ema.n_averaged.fill_(resume_state["ema_num_averaged"])
        optimizer.load_state_dict(resume_state["optimizer"])
        step, best_eval_loss = resume_state["step"], resume_state["best_eval_loss"]
    trained = DistributedDataParallel(model) if group.world_size > 1 else model
    per_rank = config.batch_size // group.world_size
    if should_compile(config.compile, device):
        synchronize(device)
        compile_started = time.perf_counter()
        example = example_batch(per_rank, config.image_size, device)
        # CUDA graphs for one process; under DDP its gradient hooks stay eager.
        trained = compile_with_fallback(trained, example, backward=True,
                                        cuda_graphs=group.world_size == 1 and device.type == "cuda")
        synchronize(device)
        if group.is_main:
            print(f"compiled the training step in {time.perf_counter() - compile_started:.0f} s")

    total_steps = config.epochs * steps_per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)

    loss_log = eval_log = None
    if group.is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        kept = step if resume_state is not None else None
        loss_log = CsvLog(checkpoint_dir / "train_log.csv", ["step", "epoch", "loss"], kept)
        eval_log = CsvLog(
            checkpoint_dir / "eval_log.csv",
            ["step", "epoch", "eval_loss", "best", "wall_seconds"], kept
        )
        print(
            f"training on {device} ({group.world_size} process(es)): {len(images)} images, "
            f"{model.num_parameters():,} parameters, {steps_per_epoch} steps/epoch, "
            f"steps {step} → {total_steps}"
        )

    def checkpoint_state(eval_loss: float) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "ema_model": ema.module.state_dict(),
            "ema_num_averaged": int(ema.n_averaged.item()),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "epoch": step / steps_per_epoch,
            "config": asdict(config),
            "model_config": config.model_config().to_dict(),
            "eval_loss": eval_loss,
            "best_eval_loss": best_eval_loss,
            "wall_seconds": wall_seconds(),
        }

    def wall_seconds() -> float:
        """Seconds since this run began (data loading and compiling included), over sessions."""
        return earlier_wall_seconds + time.perf_counter() - run_started

    def evaluate_and_save(final: bool) -> float:
        """Rank 0: evaluate the EMA, write last.pt, best_model.pt if better, and interval files."""
        nonlocal best_eval_loss
        eval_loss = fixed_eval_loss(ema.module, schedule, eval_images, config.seed)
        is_best = eval_loss < best_eval_loss
        best_eval_loss = min(best_eval_loss, eval_loss)
        epoch = step / steps_per_epoch
        eval_log.append([{"step": step, "epoch": f"{epoch:.4f}", "eval_loss": eval_loss,
                          "best": int(is_best), "wall_seconds": f"{wall_seconds():.1f}"}])
        state = checkpoint_state(eval_loss)
        save_checkpoint(state, checkpoint_dir / "last.pt")
        if is_best:  # for sampling: no optimizer state, half the size
            sampling_state = {k: v for k, v in state.items() if k != "optimizer"}
            save_checkpoint(sampling_state, checkpoint_dir / "best_model.pt")
        whole_epochs = step // steps_per_epoch
        if step % steps_per_epoch == 0 and whole_epochs % config.save_interval == 0:
            save_checkpoint(state, checkpoint_dir / f"checkpoint_epoch_{whole_epochs:04d}.pt")
        if final:
            save_sample_grid(ema.module, schedule, config, device,
                             sample_dir / f"samples_step_{step:07d}.png")
        if on_progress:
            on_progress({"kind": "eval", "step": step, "epoch": epoch, "eval_loss": eval_loss,
                         "best": is_best, "final": final, "train_seconds": train_seconds,
                         "images_seen": images_seen, "ema_model": ema.module})
        return eval_loss

    pending_losses: list[torch.Tensor] = []

    def flush_losses() -> float:
        """Write the losses gathered since the last flush to train_log.csv (one sync per flush)."""
        if not pending_losses:
            return math.nan
        values = torch.stack(pending_losses).float().cpu().tolist()
        first = step - len(values) + 1
        rows = [{"step": first + i, "epoch": f"{(first + i) / steps_per_epoch:.4f}",
                 "loss": value} for i, value in enumerate(values)]
        pending_losses.clear()
        if loss_log is not None:
            loss_log.append(rows)
            if on_progress:
                on_progress({"kind": "loss", "rows": rows})
        return values[-1]

    noise_generator = torch.Generator(device=device)
    last_loss, eval_loss = math.nan, math.nan
    images_seen, train_seconds = 0, 0.0
    model.train()
    try:
        while step < total_steps:
            epoch = step // steps_per_epoch
            order_generator = generator_for(config.seed, Stream.EPOCH_ORDER, epoch)
            order = torch.randperm(len(images), generator=order_generator).to(device)
            first_batch = step % steps_per_epoch
            last_batch = min(steps_per_epoch, first_batch + total_steps - step)
            bar = tqdm(range(first_batch, last_batch), desc=f"epoch {epoch + 1}/{config.epochs}",
                       initial=first_batch, total=last_batch, disable=not group.is_main,
                       leave=False)
            synchronize(device)
            started = time.perf_counter()
            for batch in bar:
                indices = order[batch * config.batch_size : (batch + 1) * config.batch_size]
                x0 = to_model_range(images[indices[group.rank :: group.world_size]])
                noise_generator.manual_seed(
                    stream_seed(config.seed, Stream.TRAIN_NOISE, step, group.rank)
                )
                if config.warmup_steps or config.lr_schedule != "constant":
                    set_learning_rate(optimizer, learning_rate_at(config, step, total_steps))
                next_step()
                loss = optimization_step(trained, ema, optimizer, schedule, x0, noise_generator,
                                         config.grad_clip, config.min_snr_gamma)
                step += 1
                pending_losses.append(loss.detach())
                if len(pending_losses) >= 50:
                    last_loss = flush_losses()
                    bar.set_postfix(loss=f"{last_loss:.4f}")
                if step % config.sample_interval == 0 and group.is_main:
                    sampling_started = time.perf_counter()
                    save_sample_grid(ema.module, schedule, config, device,
                                     sample_dir / f"samples_step_{step:07d}.png")
                    started += time.perf_counter() - sampling_started  # not training time
            synchronize(device)
            epoch_seconds = time.perf_counter() - started
            epoch_images = (last_batch - first_batch) * per_rank * group.world_size
            train_seconds += epoch_seconds
            images_seen += epoch_images
            last_loss = flush_losses() if pending_losses else last_loss
            finished, whole_epochs = step >= total_steps, step // steps_per_epoch
            due = any(whole_epochs % every == 0
                      for every in (config.eval_interval, config.save_interval))
            if group.is_main and (finished or due):
                eval_loss = evaluate_and_save(final=finished)
                print(
                    f"epoch {step / steps_per_epoch:.2f}/{config.epochs}: loss {last_loss:.4f}, "
                    f"EMA eval loss {eval_loss:.4f} (best {best_eval_loss:.4f}), "
                    f"{epoch_images / max(epoch_seconds, 1e-9):,.0f} images/s"
                )
            if group.world_size > 1:
                check_replicas_identical(model, group)
    except KeyboardInterrupt:
        if group.is_main:
            flush_losses()
            save_checkpoint(checkpoint_state(math.nan), checkpoint_dir / "last.pt")
            print(f"\ninterrupted at step {step}: saved {checkpoint_dir / 'last.pt'}; "
                  f"continue with --resume")
        raise

    images_per_second = images_seen / max(train_seconds, 1e-9)
    if group.is_main:
        print(f"done: {step} steps, {images_seen:,} images in {train_seconds:.1f} s of training "
              f"= {images_per_second:,.0f} images/s; checkpoints in {checkpoint_dir}")
    return TrainResult(
        steps=step,
        epochs_completed=step / steps_per_epoch,
        final_loss=last_loss,
        eval_loss=eval_loss,
        best_eval_loss=best_eval_loss,
        images_per_second=images_per_second,
        checkpoint_dir=checkpoint_dir,
        sample_dir=sample_dir,
    )


def check_replicas_identical(model: torch.nn.Module, group: ProcessGroup) -> None:
    """Under DistributedDataParallel every process must hold the same weights: verify it."""
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(weights) for _ in range(group.world_size)]
    dist.all_gather(gathered, weights)
    differing = [rank for rank, other in enumerate(gathered) if not torch.equal(other, weights)]
    if differing:
        raise RuntimeError(f"rank {group.rank}: weights differ from ranks {differing}")
    if group.is_main:
        print(f"weights identical on all {group.world_size} processes")


def validate(config: TrainConfig, group: ProcessGroup) -> None:
    """Reject impossible settings with a message that says which argument to change."""
    problems = []
    for name in ("epochs", "batch_size", "timesteps", "save_interval", "sample_interval",
                 "eval_interval"):
        if getattr(config, name) < 1:
            problems.append(f"--{name} must be at least 1 (got {getattr(config, name)})")
    if config.lr <= 0:
        problems.append(f"--lr must be positive (got {config.lr})")
    if config.schedule not in SCHEDULES:
        problems.append(f"--schedule must be one of {SCHEDULES} (got {config.schedule!r})")
    if not 0 <= config.ema_decay < 1:
        problems.append(f"--ema_decay must be in [0, 1) (got {config.ema_decay})")
    if config.min_snr_gamma < 0:
        problems.append(f"--min_snr_gamma must be 0 (off) or positive (got {config.min_snr_gamma})")
    if config.warmup_steps < 0:
        problems.append(f"--warmup_steps must be 0 or more (got {config.warmup_steps})")
    if config.lr_schedule not in ("constant", "cosine"):
        problems.append(f"--lr_schedule must be constant or cosine (got {config.lr_schedule!r})")
    if config.compile not in ("auto", "yes", "no"):
        problems.append(f"--compile must be auto, yes or no (got {config.compile!r})")
    if config.recipe not in RECIPES:
        problems.append(f"--recipe must be one of {sorted(RECIPES)} (got {config.recipe!r})")
    if config.batch_size % group.world_size:
        problems.append(
            f"--batch_size {config.batch_size} (the global batch) must be divisible by the "
            f"{group.world_size} processes"
        )
    if problems:
        raise ValueError("; ".join(problems))
    config.model_config()  # raises if the network cannot be built at this size


def load_resume_state(config: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint to resume from (``--resume`` alone means ``checkpoint_dir/last.pt``)."""
    if config.resume is None:
        existing = Path(config.checkpoint_dir) / "last.pt"
        if existing.exists():
            raise ValueError(
                f"{existing} exists: a new run would overwrite it. Continue that run with "
                f"--resume, or choose another --checkpoint_dir (or delete the old one)"
            )
        return None
    last = Path(config.checkpoint_dir) / "last.pt"
    path = last if config.resume == "last" else Path(config.resume)
    state = load_checkpoint(path)
    check_compatible(state["config"], {key: getattr(config, key) for key in MODEL_DEFINING_KEYS},
                     path)
    for key in ("optimizer", "ema_num_averaged", "best_eval_loss"):
        if key not in state:
            raise CheckpointError(
                f"{path} holds no {key}: it cannot resume training (best_model.pt keeps only "
                f"what sampling needs; resume from last.pt or a checkpoint_epoch_XXXX.pt)"
            )
    return state


# ----------------------------------------------------------------------------- command line

HELP = {
    "data_path": "folder of 28×28 RGB PNGs, in digit subfolders 0/ … 9/",
    "image_size": "image height and width",
    "timesteps": "number of diffusion timesteps T",
    "beta_start": "first β of the linear schedule",
    "beta_end": "last β of the linear schedule",
    "time_emb_dim": "dimension of the sinusoidal time embedding",
    "base_dim": "UNet width at full resolution (doubles at each lower one)",
    "epochs": "training epochs",
    "batch_size": "global batch size (split across torchrun processes)",
    "lr": "AdamW learning rate",
    "checkpoint_dir": "where last.pt, best_model.pt, checkpoint_epoch_*.pt and the logs go",
    "sample_dir": "where sample grids go",
    "save_interval": "keep a checkpoint_epoch_XXXX.pt every this many epochs",
    "sample_interval": "save a sample grid every this many steps",
    "resume": "resume from this checkpoint (alone: checkpoint_dir/last.pt)",
    "schedule": "noise schedule: linear (β from beta_start to beta_end) or cosine",
    "ema_decay": "decay of the exponential moving average of the weights",
    "weight_decay": "AdamW weight decay",
    "grad_clip": "clip the gradient norm to this (0: no clipping)",
    "max_steps": "stop after this many optimizer steps in all (0: run all epochs)",
    "max_images": "train on the first N images only (0: all), for quick runs",
    "num_eval_images": "images in the fixed evaluation batch that defines best_model.pt",
    "sample_sampler": "sampler for the grids made during training: ddim or ddpm",
    "sample_steps": "DDIM steps for those grids",
    "seed": "seed of every random draw",
    "device": "auto (cuda → mps → cpu), or a torch device such as cpu or cuda:0",
    "warmup_steps": "raise the learning rate linearly from 0 over this many steps (0: none)",
    "lr_schedule": "after the warm-up: constant, or cosine (decays to 0 at the last step)",
    "compile": "torch.compile the network: auto (on CUDA), yes or no; falls back to eager",
    "min_snr_gamma": "weight each example's loss by min(SNR_t, γ)/SNR_t (Min-SNR-γ; 0: off)",
    "eval_interval": "evaluate the EMA and write last.pt/best_model.pt every this many epochs",
    "recipe": "defaults to start from: assignment (the original code's) or fast (see RECIPES)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddpm_lib.train",
        description="Train a DDPM UNet on the RGB MNIST folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in fields(TrainConfig):
        if field.name == "recipe":
            parser.add_argument("--recipe", choices=sorted(RECIPES), default="assignment",
                                help=HELP["recipe"])
            continue
        if field.name == "resume":
            parser.add_argument("--resume", nargs="?", const="last", default=None,
                                help=HELP["resume"])
            continue
        parser.add_argument(f"--{field.name}", type=type(field.default), default=field.default,
                            help=HELP[field.name])
    return parser


def main(argv: list[str] | None = None) -> TrainResult:
    parser = build_parser()
    recipe = parser.parse_known_args(argv)[0].recipe
    parser.set_defaults(**RECIPES[recipe])  # flags given explicitly still win
    config = TrainConfig(**vars(parser.parse_args(argv)))
    try:
        return train(config)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
