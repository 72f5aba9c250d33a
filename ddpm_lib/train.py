"""Training: ε-prediction with L_simple (DDPM Algorithm 1) on the ``mnist_rgb`` folder.

    python -m ddpm_lib.train --data_path ./data/mnist_rgb --epochs 100 --batch_size 128
    torchrun --nproc_per_node=2 -m ddpm_lib.train ...    # several GPUs (gloo on CPUs)
    python -m ddpm_lib.train --recipe fast               # other defaults: see RECIPES
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import operator
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.amp import GradScaler
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel
from torchvision.utils import save_image
from tqdm.auto import tqdm

from . import runtime
from .checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint
from .data import MnistRGBFolder, to_model_range
from .diffusion import SAMPLERS, diffusion_loss, q_sample, sample
from .model import UNet, UNetConfig
from .runtime import Stream, autocast_for, compile_with_fallback, example_batch, generator_for
from .schedule import SCHEDULES, NoiseSchedule, make_schedule

#: Named sets of defaults (flags given explicitly win). "assignment": the original code's;
#: "fast": the workbook's recipe for one GPU, measured in docs/BENCHMARKS.md.
RECIPES: dict[str, dict[str, Any]] = {
    "assignment": {},
    "fast": {"batch_size": 512, "lr": 1e-3, "warmup_steps": 100, "lr_schedule": "cosine",
             "epochs": 40, "eval_interval": 5},
}

#: --label_dropout's default: p_uncond, the share of labels dropped in conditional training.
LABEL_DROPOUT = 0.1

#: The flags that name a file or folder ("" would be the current folder).
PATH_FLAGS = ("data_path", "checkpoint_dir", "sample_dir", "resume")

#: What a field's metadata may demand of its value: key → (holds(value, bound), words).
CHECKS = {"choices": (lambda value, choices: value in choices, "one of"),
          "at_least": (operator.ge, "at least"), "above": (operator.gt, "above"),
          "below": (operator.lt, "below")}


def is_inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both given, not empty)."""
    return bool(path.strip() and folder.strip()
                and Path(path).resolve().is_relative_to(Path(folder).resolve()))


def arg(default: Any, help_text: str, **options: Any) -> Any:
    """A TrainConfig field: default, help, checks (:data:`CHECKS`), argparse's nargs/const."""
    return field(default=default, metadata={"help": help_text, **options})


@dataclass
class TrainConfig:
    """Every training argument; the first fourteen are the assignment's, with its defaults."""

    data_path: str = arg("./data/mnist_rgb", "folder of RGB PNGs in subfolders 0/ … 9/")
    image_size: int = arg(28, "image height and width", at_least=1)
    timesteps: int = arg(1000, "number of diffusion timesteps T", at_least=1)
    beta_start: float = arg(0.0001, "first β of the linear schedule")
    beta_end: float = arg(0.02, "last β of the linear schedule")
    time_emb_dim: int = arg(128, "dimension of the sinusoidal time embedding", at_least=2)
    base_dim: int = arg(64, "UNet width at its first resolution (× channel_mults below it)",
                        at_least=1)
    epochs: int = arg(100, "training epochs", at_least=1)
    batch_size: int = arg(128, "global batch (split across torchrun processes)", at_least=1)
    lr: float = arg(2e-4, "AdamW learning rate", above=0)
    checkpoint_dir: str = arg("./checkpoints", "where last.pt, best_model.pt and the logs go")
    sample_dir: str = arg("./samples", "where the sample grids go")
    save_interval: int = arg(10, "keep checkpoint_epoch_XXXX.pt every N epochs", at_least=1)
    sample_interval: int = arg(500, "save a sample grid every N steps", at_least=1)
    resume: str | None = arg(None, "resume from this checkpoint (alone: checkpoint_dir/last.pt)",
                             nargs="?", const="last")
    schedule: str = arg("linear", "noise schedule", choices=SCHEDULES)
    ema_decay: float = arg(0.999, "decay of the weights' moving average", at_least=0, below=1)
    weight_decay: float = arg(0.0, "AdamW weight decay", at_least=0)
    grad_clip: float = arg(1.0, "clip the gradient norm to this (0: no clipping)", at_least=0)
    max_steps: int = arg(0, "stop after N optimizer steps in all, as if interrupted (0: never)",
                         at_least=0)
    max_images: int = arg(0, "train on the first N images only (0: all)", at_least=0)
    num_eval_images: int = arg(1024, "images in the fixed evaluation batch", at_least=1)
    sample_sampler: str = arg("ddim", "sampler for the grids made while training",
                              choices=SAMPLERS)
    sample_steps: int = arg(50, "sampler steps for those grids (at most --timesteps)",
                            at_least=1)
    seed: int = arg(0, "seed of every random draw")
    device: str = arg("auto", "auto (cuda → mps → cpu) or a torch device such as cuda:0")
    warmup_steps: int = arg(0, "raise the learning rate linearly over N steps", at_least=0)
    lr_schedule: str = arg("constant", "then constant, or cosine decay to 0 at the last epoch",
                           choices=("constant", "cosine"))
    compile: str = arg("auto", "torch.compile (auto: on CUDA)", choices=("auto", "yes", "no"))
    min_snr_gamma: float = arg(0.0, "Min-SNR-γ loss weights (0: off)", at_least=0)
    eval_interval: int = arg(1, "evaluate the EMA and write last.pt every N epochs", at_least=1)
    recipe: str = arg("assignment", "defaults to start from", choices=tuple(RECIPES))
    channel_mults: tuple[int, ...] = arg((1, 2, 2), "UNet width per resolution, × base_dim",
                                         nargs="+", type=int)
    patch_size: int = arg(1, "fold p×p pixel patches into channels (2: the UNet at 14×14)",
                          at_least=1)
    time_budget: float = arg(0.0, "minutes of wall time: after the warm-up, --epochs is cut to "
                             "what fits (0: no limit)", at_least=0)
    precision: str = arg("auto", "autocast: auto is bf16 on GPUs of compute capability ≥ 8.0, "
                         "fp16 with a gradient scaler below, fp32 on CPUs",
                         choices=runtime.PRECISIONS)
    class_conditional: bool = arg(False, "learn ε_θ(x_t, t, c) for the digit c of each image's "
                                  "folder, for classifier-free guidance (generate --digit)")
    label_dropout: float = arg(LABEL_DROPOUT, "with --class_conditional: share of labels "
                               "dropped to ∅ (p_uncond; Ho & Salimans 2022 found 0.1–0.2 best)",
                               at_least=0, below=1)

    def __post_init__(self) -> None:
        """Refuse impossible settings, naming each flag to change."""
        self.channel_mults = tuple(self.channel_mults)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        infinite = [name for name, value in values.items()
                    if isinstance(value, float) and not math.isfinite(value)]
        problems = [f"--{name} must be a finite number (got {values[name]})" for name in infinite]
        problems += [f"--{name} is empty: give a path" for name in PATH_FLAGS
                     if values[name] is not None and not values[name].strip()]
        problems += [f"--{f.name} must be {words} {f.metadata[key]} (got {values[f.name]!r})"
                     for f in fields(self) for key, (holds, words) in CHECKS.items()
                     if key in f.metadata and f.name not in infinite
                     and not holds(values[f.name], f.metadata[key])]
        problems += [f"--{flag} {getattr(self, flag)} is inside --data_path {self.data_path}: "
                     f"the run's files would join the training images; choose a folder outside "
                     f"it" for flag in ("checkpoint_dir", "sample_dir")
                     if is_inside(getattr(self, flag), self.data_path)]
        if not self.class_conditional and self.label_dropout != LABEL_DROPOUT:
            problems.append(f"--label_dropout {self.label_dropout} acts only with "
                            f"--class_conditional: add that flag, or leave --label_dropout out")
        if problems:
            raise ValueError("; ".join(problems))
        self.model_config()  # raises if the network cannot be built at this size
        self.noise_schedule()  # raises for β outside (0, 1)

    @classmethod
    def from_recipe(cls, recipe: str = "assignment", **overrides: Any) -> TrainConfig:
        """The recipe's settings (:data:`RECIPES`), then ``overrides`` on top."""
        return cls(**{**RECIPES.get(recipe, {}), "recipe": recipe, **overrides})

    def model_config(self) -> UNetConfig:
        return UNetConfig(image_size=self.image_size, base_dim=self.base_dim,
                          time_emb_dim=self.time_emb_dim, channel_mults=self.channel_mults,
                          patch_size=self.patch_size,
                          num_classes=10 if self.class_conditional else 0)

    def noise_schedule(self) -> NoiseSchedule:
        return make_schedule(self.schedule, self.timesteps, self.beta_start, self.beta_end)


@dataclass
class TrainResult:
    """What a call of :func:`train` did (images per second: of the training loop alone)."""

    steps: int
    epochs_completed: float
    eval_loss: float
    best_eval_loss: float
    images_per_second: float


def ema_update_with_warmup(decay: float) -> Callable:
    """θ̄ ← β θ̄ + (1 - β) θ with β = min(decay, (1 + n) / (10 + n)) after n updates: early on,
    the average follows the weights, not their random start. For ``AveragedModel``."""
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        beta = ((1 + n) / (10 + n)).clamp(max=decay).float()  # a tensor: no host sync per step
        torch._foreach_lerp_(averaged, current, [1 - beta] * len(averaged))
    return update


def exponential_moving_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` updated by :func:`ema_update_with_warmup`."""
    return AveragedModel(model, multi_avg_fn=ema_update_with_warmup(decay), use_buffers=True)


def learning_rate_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig,
                           total_steps: int, step: int = 0) -> LambdaLR:
    """Step s takes lr · (s + 1) / W in a warm-up of W steps, then lr (``constant``) or
    lr · ½ (1 + cos(π p)), p = (s - W) / (total_steps - W) (``cosine``: 0 at the end).
    ``step`` > 0: a new length for a schedule that has taken that many steps."""
    warmup, decay_steps = config.warmup_steps, max(1, total_steps - config.warmup_steps)
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / decay_steps)
        return 1.0 if config.lr_schedule == "constant" else 0.5 * (1 + math.cos(math.pi * progress))
    return LambdaLR(optimizer, factor, last_epoch=step - 1)


def average_gradients(model: torch.nn.Module) -> None:
    """Data parallelism in one bucket: each process's gradients become the mean of all the
    processes' (one all-reduce of them all, flattened: 27 MB for the 64-wide UNet)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([grad.flatten() for grad in grads]).div_(dist.get_world_size())
    dist.all_reduce(flat)
    torch._foreach_copy_(grads, torch._utils._unflatten_dense_tensors(flat, grads))


def optimization_step(trained: torch.nn.Module, ema: AveragedModel,
                      optimizer: torch.optim.Optimizer, schedule: NoiseSchedule, x0: torch.Tensor,
                      generator: torch.Generator, grad_clip: float,
                      min_snr_gamma: float = 0.0, part: tuple[int, int] = (0, 1),
                      precision: str = "auto", scaler: GradScaler | None = None,
                      labels: torch.Tensor | None = None, label_dropout: float = 0.0
                      ) -> torch.Tensor:
    """Algorithm 1 on ``x0`` in [-1, 1]: L_simple (autocast per ``precision``; Min-SNR-γ
    weighted if ``min_snr_gamma`` > 0; given ``labels``, each dropped to ∅ with probability
    ``label_dropout``), backward (through ``scaler`` for fp16), the gradients
    averaged over the processes (``x0`` is ``part`` (k, n) of the batch: see
    ``diffusion_loss``), gradient clipping, AdamW (skipped by the scaler on overflow), EMA."""
    scaler = scaler or GradScaler(x0.device.type, enabled=False)
    with autocast_for(x0.device, precision):
        loss = diffusion_loss(trained, schedule, x0, generator, min_snr_gamma, part, labels,
                              label_dropout)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if part[1] > 1:
        average_gradients(trained)
    scaler.unscale_(optimizer)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(trained.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    ema.update_parameters(trained)
    return loss


@torch.no_grad()
def fixed_eval_loss(model: torch.nn.Module, schedule: NoiseSchedule, images: torch.Tensor,
                    seed: int, batch_size: int = 256, precision: str = "auto",
                    labels: torch.Tensor | None = None) -> float:
    """L_simple on fixed uint8 ``images`` (and their ``labels``, for ε_θ(x_t, t, c)), timesteps
    t_i = ⌊i·T/N⌋ and noise drawn from ``seed``: comparable from one evaluation to the next.
    It picks best_model.pt."""
    noise = torch.randn(images.shape, generator=generator_for(seed, Stream.EVAL_NOISE))
    noise, total = noise.to(images.device), 0.0
    timesteps = (torch.arange(len(images)) * schedule.num_timesteps // len(images))
    for start in range(0, len(images), batch_size):
        batch = slice(start, start + batch_size)
        x0, t, eps = to_model_range(images[batch]), timesteps[batch].to(images.device), noise[batch]
        with autocast_for(images.device, precision):
            x_t = q_sample(schedule, x0, t, eps)
            predicted = model(x_t, t) if labels is None else model(x_t, t, labels[batch])
        total += torch.nn.functional.mse_loss(predicted.float(), eps, reduction="sum").item()
    return total / noise.numel()


def start_log(path: Path, columns: list[str], keep_until_step: int | None) -> None:
    """A CSV file with a header and, on resume, its rows up to the resumed step."""
    rows = []
    if keep_until_step is not None and path.exists():
        with path.open(newline="") as file:
            rows = [r for r in csv.DictReader(file) if int(r["step"]) <= keep_until_step]
    with path.open("w", newline="") as file:
        csv.DictWriter(file, fieldnames=columns).writeheader()
    append_log(path, rows)


def append_log(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a", newline="") as file:
        csv.DictWriter(file, fieldnames=list(rows[0]) if rows else []).writerows(rows)


#: What a run writes into --checkpoint_dir: checkpoints and logs.
CHECKPOINT_FILES, LOG_FILES = ("last.pt", "best_model.pt", "checkpoint_epoch_*.pt"), \
    ("train_log.csv", "eval_log.csv")


def refuse_to_overwrite(config: TrainConfig, resumed: Path) -> None:
    """ValueError if a new run, or one resumed from a checkpoint of another folder, would
    overwrite the files of an earlier run in --checkpoint_dir or --sample_dir."""
    folder = Path(config.checkpoint_dir)
    checkpoints = [file for pattern in CHECKPOINT_FILES for file in sorted(folder.glob(pattern))]
    earlier = checkpoints + [folder / name for name in LOG_FILES if (folder / name).exists()]
    earlier += sorted(Path(config.sample_dir).glob("samples_step_*.png"))
    elsewhere = resumed.resolve().parent != folder.resolve()
    if earlier and (config.resume is None or elsewhere):
        what = "a new run" if config.resume is None else f"a run resumed from {resumed}"
        resume = "continue that run with --resume, or " if checkpoints else ""  # none to resume
        raise ValueError(f"{earlier[0]} exists: {what} would overwrite an earlier run's "
                         f"files; {resume}choose another --checkpoint_dir and --sample_dir (or "
                         f"delete them to start over)")


def load_resume_state(config: TrainConfig) -> dict[str, Any] | None:
    """The ``--resume`` checkpoint ("last": checkpoint_dir/last.pt), checked against ``config``;
    without ``--resume``, a refusal to overwrite any file of an earlier run."""
    last = Path(config.checkpoint_dir) / "last.pt"
    path = last if config.resume in ("last", None) else Path(config.resume)
    refuse_to_overwrite(config, path)
    if config.resume is None:
        return None
    state = load_checkpoint(path)
    resume_time_budget(state["config"], config, path)
    check_compatible(state["config"], asdict(config), path)
    for key in ("optimizer", "lr_scheduler", "ema_num_averaged", "best_eval_loss"):
        if key not in state:
            raise CheckpointError(f"{path} holds no {key}, so it cannot resume training (as "
                                  f"best_model.pt): resume from last.pt or checkpoint_epoch_*.pt")
    refuse_changed_optimisation(state["config"], config, path)  # names the flags
    network = config.model_config().to_dict()
    if changed := [f"{key} {network.get(key)} (checkpoint: {value})"
                   for key, value in state["model_config"].items() if network.get(key) != value]:
        raise CheckpointError(f"{path} holds another network: {'; '.join(changed)}; give its "
                              f"settings again, or start a new run in another --checkpoint_dir")
    return state


def resume_time_budget(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """A budget is fitted once, at the end of a run's warm-up: a resumed run keeps the saved
    run's (and its --epochs as the budget cut them), or gives none (--epochs rules, as for any
    run). A budget new to the run, or another one, is refused: it could not be honoured."""
    budget = saved.get("time_budget", 0.0)
    if config.time_budget and config.time_budget != budget:
        was = f"with --time_budget {budget:g}" if budget else "without --time_budget"
        raise ValueError(f"--time_budget {config.time_budget:g}: {path} was trained {was}, and a "
                         f"budget is fitted once, at a run's start; resume with "
                         f"{f'--time_budget {budget:g}' if budget else 'no --time_budget'} (or "
                         f"none, and --epochs), or start a new run in another --checkpoint_dir")
    if config.time_budget:  # --epochs as the budget cut it
        config.epochs = saved.get("epochs", config.epochs)


#: What the optimizer, the EMA and the data order were built with: fixed for a resumed run.
OPTIMISATION_KEYS = ("lr", "batch_size", "warmup_steps", "lr_schedule", "weight_decay",
                     "ema_decay", "grad_clip", "min_snr_gamma", "seed", "max_images",
                     "class_conditional", "label_dropout", "num_eval_images")


def refuse_changed_optimisation(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """A resumed run continues the saved one exactly, so its optimisation settings must be the
    checkpoint's (--epochs may grow a constant-rate run; a cosine decay is planned over them)."""
    keys = OPTIMISATION_KEYS + (("epochs",) if config.lr_schedule == "cosine" else ())
    changed = [f"--{key} {getattr(config, key)} (checkpoint: {saved[key]})"
               for key in keys if key in saved and saved[key] != getattr(config, key)]
    if changed:
        raise ValueError(f"{path} was trained with other settings: {'; '.join(changed)}. "
                         f"--resume continues that run as it was: give its settings again "
                         f"(its --recipe was {saved.get('recipe', 'assignment')}) or start a new "
                         f"run in another --checkpoint_dir")


def claim_run_folder(directory: Path, take: bool = True) -> None:
    """Refuse a --checkpoint_dir another live process of this machine is training into (its
    id and host in .run.lock: a lock left on a shared drive by another machine, as Colab's
    ended sessions leave them, is not checked); ``take``: write this process's id there and
    remove a killed run's unfinished writes."""
    lock, this = directory / ".run.lock", f"{os.getpid()} {socket.gethostname()}"
    try:
        holder, host = lock.read_text().split(maxsplit=1)
        live = host == socket.gethostname() and holder != str(os.getpid())
        if live:
            os.kill(int(holder), 0)  # signal 0: ProcessLookupError if that run is gone
    except PermissionError:  # it exists, another user's
        live = True
    except (OSError, ValueError):  # no lock, a damaged one, or its run is gone (killed)
        live = False
    if live:
        raise ValueError(f"--checkpoint_dir {directory} is in use by another run (process "
                         f"{holder}): wait for it or stop it, or choose another folder")
    if take:
        lock.write_text(this)
        for leftover in directory.glob(".*.pt.tmp"):  # a write a kill cut short
            leftover.unlink()


class Training:
    """One process's run, set up from ``config`` (and ``--resume``); rank 0 writes the files."""

    def __init__(self, config: TrainConfig, on_progress: Callable | None = None) -> None:
        self.config, self.on_progress, self.started = config, on_progress, time.perf_counter()
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.is_main, self.directory = self.rank == 0, Path(config.checkpoint_dir)
        self.device = runtime.pick_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
        cuda = self.device.type == "cuda"
        if self.world_size > 1 and cuda and ":" in config.device:
            raise ValueError(f"--device {config.device} under torchrun: give --device cuda (or "
                             f"auto), so that each process takes a GPU of its own")
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        if config.batch_size % self.world_size:
            raise ValueError(f"--batch_size {config.batch_size} must be divisible by the "
                             f"{self.world_size} processes")
        state = load_resume_state(config)
        if self.is_main:  # before loading, compiling or training
            runtime.writable_folder(config.checkpoint_dir, "--checkpoint_dir", make=False)
            runtime.writable_folder(config.sample_dir, "--sample_dir", make=False)
            claim_run_folder(self.directory, take=False)
        self.load_images()
        if state is not None:
            self.check_resumed(state)
        torch.manual_seed(config.seed)
        self.model = UNet(config.model_config()).to(self.device)
        if cuda:  # NHWC convolutions: 11 % faster training steps on an H200
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = exponential_moving_average(self.model, config.ema_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, fused=cuda,
                                           weight_decay=config.weight_decay)
        self.lr_schedule = learning_rate_schedule(  # over all epochs: --max_steps only stops
            self.optimizer, config, config.epochs * self.steps_per_epoch)
        self.noise_schedule = config.noise_schedule().to(self.device)
        self.precision = runtime.resolve_precision(config.precision, self.device)
        self.scaler = GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.step, self.images_seen, self.best_eval_loss = 0, 0, math.inf
        self.eval_loss = self.last_loss = math.nan
        self.earlier_wall_seconds = self.train_seconds = 0.0
        self.pending_losses: list[torch.Tensor] = []
        if state is not None:  # continue where it stopped: weights, EMA, optimizer, lr, step, clock
            for part, key in ((self.model, "model"), (self.ema.module, "ema_model"),
                              (self.optimizer, "optimizer"), (self.lr_schedule, "lr_scheduler"),
                              (self.scaler, "grad_scaler")):
                if state.get(key):  # a scaler saved unused (bf16, fp32) holds nothing
                    part.load_state_dict(state[key])
            self.ema.n_averaged.fill_(state["ema_num_averaged"])
            self.step, self.best_eval_loss = state["step"], state["best_eval_loss"]
            self.earlier_wall_seconds = state["wall_seconds"]
        self.trained = self.wrap_network()
        self.budget_mark: tuple[float, int] | None = None  # the stopwatch at half the warm-up
        if self.is_main:  # the logs, cut back to the resumed step
            self.directory.mkdir(parents=True, exist_ok=True)
            claim_run_folder(self.directory)
            kept = self.step if state is not None else None
            start_log(self.directory / "train_log.csv", ["step", "epoch", "loss"], kept)
            start_log(self.directory / "eval_log.csv",
                      ["step", "epoch", "eval_loss", "best", "wall_seconds"], kept)
            print(f"training on {self.device} ({self.world_size} process(es), {self.precision}): "
                  f"{len(self.images)} images, {self.model.num_parameters():,} parameters, "
                  f"{self.steps_per_epoch} steps/epoch, steps {self.step} → {self.total_steps}")

    def load_images(self) -> None:
        """All training images (uint8) and a fixed evaluation batch of them, on the device."""
        config = self.config
        folder = MnistRGBFolder(config.data_path, config.image_size)
        missing = sorted(set(range(10)).difference(folder.labels))
        if missing and max(folder.labels) >= 0:  # digit folders, one empty: never drawn
            raise ValueError(f"{config.data_path} holds no images of the digit(s) {missing} "
                             f"(its folder {missing[0]}/ is empty or missing): rebuild it with "
                             f"python -m ddpm_lib.data")
        labels = torch.tensor(folder.labels)[: config.max_images or None]
        if config.class_conditional and (labels < 0).any():
            raise ValueError(f"--class_conditional reads each image's digit from its folder, but "
                             f"{config.data_path} holds PNGs outside the folders 0/ … 9/: "
                             f"rebuild it with python -m ddpm_lib.data")
        images = folder.load_all(progress=self.is_main)
        images = images[: config.max_images or None]
        self.data_sha256 = hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]
        if len(images) < config.batch_size:
            raise ValueError(f"--batch_size {config.batch_size} is larger than the "
                             f"{len(images)} training images")
        if len(images) < config.num_eval_images and self.is_main:
            print(f"--num_eval_images {config.num_eval_images}: the evaluation batch is all "
                  f"{len(images)} training images")
        order = torch.randperm(len(images), generator=generator_for(config.seed,
                                                                    Stream.EVAL_IMAGES))
        self.images = images.to(self.device)
        evaluated = order[: config.num_eval_images].to(self.device)
        self.eval_images = self.images[evaluated]
        self.labels = labels.to(self.device) if config.class_conditional else None
        self.eval_labels = None if self.labels is None else self.labels[evaluated]
        self.steps_per_epoch = len(images) // config.batch_size
        self.budget_fit_step = min(self.steps_per_epoch, max(20, config.warmup_steps))
        self.total_steps = min(config.epochs * self.steps_per_epoch, config.max_steps or math.inf)

    def check_resumed(self, state: dict[str, Any]) -> None:
        """A resumed run's data must be its checkpoint's and its --epochs not behind it; the
        flags that may change (--epochs, --precision, --compile …) take effect, and are named."""
        config, saved, at = self.config, state["config"], state["step"] / self.steps_per_epoch
        if state.get("data_sha256", self.data_sha256) != self.data_sha256:
            raise ValueError(f"--data_path {config.data_path}: its images are not those the "
                             f"checkpoint was trained on; give that run's data, or start a new "
                             f"run in another --checkpoint_dir")
        if state["step"] > config.epochs * self.steps_per_epoch:
            raise ValueError(f"--epochs {config.epochs}: the checkpoint is already at epoch "
                             f"{at:.2f}; give --epochs {math.ceil(at)} or more to continue it")
        changed = [f"--{key} {value} (was {saved[key]})" for key, value in asdict(config).items()
                   if key not in ("resume", "data_path") and saved.get(key, value) != value]
        if changed and self.is_main:
            print(f"resuming at epoch {at:.2f} with {'; '.join(changed)}: from here on")

    def wrap_network(self) -> torch.nn.Module:
        """The network as steps call it: compiled per ``--compile``, with CUDA graphs on GPUs
        (each process graphs its own forward and backward; gradients meet after it)."""
        config, device = self.config, self.device
        if not runtime.should_compile(config.compile, device, self.precision):
            return self.model
        if config.compile == "auto" and 0 < config.time_budget < 3:  # measured in BENCHMARKS.md
            print(f"--time_budget {config.time_budget:g} min: training eagerly, since compiling "
                  f"takes 1.3-1.6 min of it on a fresh H100 (more on fewer CPU cores) and pays "
                  f"off only in longer runs; --compile yes compiles anyway")
            return self.model
        if self.is_main:  # a minute or more before the first step, on a CPU too
            print("compiling the training step (--compile no trains without)", flush=True)
        started = time.perf_counter()
        example = example_batch(config.batch_size // self.world_size, config.image_size, device)
        if self.labels is not None:  # the labels: the graph's third input
            example = (*example, torch.zeros_like(example[1]))
        trained = compile_with_fallback(self.model, example, backward=True,
                                        cuda_graphs=device.type == "cuda",
                                        precision=self.precision)
        runtime.synchronize(device)
        if self.world_size > 1:  # the loop's clock starts when every process has compiled
            dist.barrier()
        if self.is_main:
            print(f"compiled the training step in {time.perf_counter() - started:.0f} s")
        return trained

    def train_epoch(self) -> None:
        """The rest of this epoch, in the epoch's own shuffled order; then, when due (every
        eval_interval or save_interval epochs, and at the end), evaluation and checkpoints."""
        config, epoch = self.config, self.step // self.steps_per_epoch
        order = torch.randperm(len(self.images), generator=generator_for(
            config.seed, Stream.EPOCH_ORDER, epoch)).to(self.device)
        first = self.step % self.steps_per_epoch
        last = min(self.steps_per_epoch, first + self.total_steps - self.step)
        batches = tqdm(range(first, last), desc=f"epoch {epoch + 1}/{config.epochs}",
                       initial=first, total=last, disable=not self.is_main, leave=False)
        runtime.synchronize(self.device)
        started = time.perf_counter()
        for batch in batches:
            indices = order[batch * config.batch_size : (batch + 1) * config.batch_size]
            rows = indices[self.rank :: self.world_size]
            x0 = to_model_range(self.images[rows])
            labels = None if self.labels is None else self.labels[rows]
            # the whole batch's t and ε from (seed, step) alone: a resumed run draws what an
            # unbroken one would, on any number of processes (the 0: rank 0's stream of old)
            generator = generator_for(config.seed, Stream.TRAIN_NOISE, self.step, 0,
                                      device=self.device)
            runtime.next_step()
            loss = optimization_step(self.trained, self.ema, self.optimizer, self.noise_schedule,
                                     x0, generator, config.grad_clip, config.min_snr_gamma,
                                     (self.rank, self.world_size), self.precision, self.scaler,
                                     labels, config.label_dropout)
            self.lr_schedule.step()
            self.step += 1
            if config.time_budget and self.step in (self.budget_fit_step // 2,
                                                    self.budget_fit_step):
                self.time_the_budget(started, batch + 1 - first)
            self.pending_losses.append(loss.detach())
            if len(self.pending_losses) >= 50:
                batches.set_postfix(loss=f"{self.flush_losses():.4f}")
            if self.step % config.sample_interval == 0 and self.is_main:
                grid_started = time.perf_counter()
                self.save_samples()
                started += time.perf_counter() - grid_started  # not training time
        runtime.synchronize(self.device)
        seconds, images = time.perf_counter() - started, (last - first) * config.batch_size
        self.train_seconds += seconds
        self.images_seen += images
        self.flush_losses()
        whole_epochs, finished = self.step // self.steps_per_epoch, self.step >= self.total_steps
        if self.is_main and (finished or whole_epochs % config.eval_interval == 0
                             or whole_epochs % config.save_interval == 0):
            self.evaluate_and_save(final=finished)
            print(f"epoch {self.step / self.steps_per_epoch:.2f}/{config.epochs}: loss "
                  f"{self.last_loss:.4f}, EMA eval loss {self.eval_loss:.4f} (best "
                  f"{self.best_eval_loss:.4f}), {images / seconds:,.0f} images/s")

    def time_the_budget(self, epoch_started: float, epoch_steps: int) -> None:
        """--time_budget's stopwatch over this epoch's loop (started ``epoch_started``, sample
        grids left out; ``epoch_steps`` steps so far): marked at half the warm-up, read at its
        end, so that the speed leaves out the first steps' one-off costs. (Timed from the first
        step, on a fresh H100, budgets of 5 and 10 minutes fitted 39 and 80 epochs at an implied
        0.059 s a step, where the loop then ran 0.032 s a step.)"""
        runtime.synchronize(self.device)
        seconds = time.perf_counter() - epoch_started
        if self.step < self.budget_fit_step:
            self.budget_mark = (seconds, epoch_steps)
        else:  # no mark if resumed past it: the epoch's steps so far
            marked_seconds, marked_steps = self.budget_mark or (0.0, 0)
            self.fit_time_budget((seconds - marked_seconds) / (epoch_steps - marked_steps))

    def fit_time_budget(self, seconds_per_step: float) -> None:
        """--time_budget, once, at the end of the warm-up (≥ 20 steps, ≤ 1 epoch): cut --epochs
        to what fits in the minutes left at this speed (5 % kept for evaluation and saving),
        and fit the learning-rate decay to it. With a warm-up that long (or a constant rate) the
        rate never depended on --epochs before, so ``--epochs N`` alone repeats the run exactly."""
        config, per_epoch = self.config, self.steps_per_epoch
        elapsed = self.earlier_wall_seconds + time.perf_counter() - self.started
        steps_left = max(0.0, 0.95 * 60 * config.time_budget - elapsed) / seconds_per_step
        fit = int((self.step + steps_left) // per_epoch)
        epochs = torch.tensor(max(1, min(config.epochs, fit)))
        if self.world_size > 1:  # every process trains rank 0's number of epochs
            epochs = epochs.to(self.device)
            dist.broadcast(epochs, src=0)
        if int(epochs) < config.epochs:
            config.epochs = int(epochs)
            self.total_steps = min(config.epochs * per_epoch, config.max_steps or math.inf)
            self.lr_schedule = learning_rate_schedule(self.optimizer, config,
                                                      config.epochs * per_epoch, self.step)
        if self.is_main:
            if self.on_progress:
                self.on_progress({"kind": "budget", "total_steps": self.total_steps})
            speed = config.batch_size / seconds_per_step  # a line of its own under the bar:
            tqdm.write(f"--time_budget {config.time_budget:g} min: {config.epochs} epochs "
                       f"({config.epochs * per_epoch} steps) fit at {speed:,.0f} images/s; "
                       f"--epochs {config.epochs} without the budget repeats this run")

    def flush_losses(self, all_processes: bool = True) -> float:
        """Log the losses gathered since the last flush (one device sync): each the whole batch's,
        averaged over the processes unless only this one flushes; return the last."""
        if self.pending_losses:
            values = torch.stack(self.pending_losses).float()
            if self.world_size > 1 and all_processes:
                dist.all_reduce(values)
                values /= self.world_size
            values = values.cpu().tolist()
            self.pending_losses.clear()
            first, self.last_loss = self.step - len(values) + 1, values[-1]
            if not all(map(math.isfinite, values)):
                bad = next(i for i, value in enumerate(values) if not math.isfinite(value))
                self.diverged(f"the loss became {values[bad]} at step {first + bad}")
            rows = [{"step": step, "epoch": f"{step / self.steps_per_epoch:.4f}", "loss": value}
                    for step, value in enumerate(values, start=first)]
            if self.is_main:
                append_log(self.directory / "train_log.csv", rows)
                if self.on_progress:
                    self.on_progress({"kind": "loss", "rows": rows})
        return self.last_loss

    def diverged(self, what: str) -> None:
        """Stop: training diverged. Nothing more is written, so the checkpoints stay good."""
        kept = (f"the checkpoints in {self.directory} are from before it"
                if (self.directory / "last.pt").exists() else "no checkpoint was written")
        raise ValueError(f"{what}: training diverged (learning rate {self.config.lr:g}); "
                         f"{kept}. Lower --lr (the assignment's: 2e-4) and train again")

    def evaluate_and_save(self, final: bool) -> None:
        """The EMA's fixed-batch loss; last.pt, best_model.pt if best yet, the interval's
        checkpoint_epoch_XXXX.pt, and at the end a sample grid. Never non-finite weights."""
        weights = [*self.model.parameters(), *self.ema.module.parameters()]
        if not torch.stack([w.isfinite().all() for w in weights]).all():
            self.diverged(f"the weights became non-finite by step {self.step}")
        self.eval_loss = fixed_eval_loss(self.ema.module, self.noise_schedule, self.eval_images,
                                         self.config.seed, precision=self.precision,
                                         labels=self.eval_labels)
        is_best = (self.eval_loss < self.best_eval_loss  # or none kept (cut short, deleted)
                   or not (self.directory / "best_model.pt").exists())
        self.best_eval_loss = min(self.best_eval_loss, self.eval_loss)
        state, whole_epochs = self.checkpoint_state(), self.step // self.steps_per_epoch
        append_log(self.directory / "eval_log.csv", [{
            "step": self.step, "epoch": f"{state['epoch']:.4f}", "eval_loss": self.eval_loss,
            "best": int(is_best), "wall_seconds": f"{state['wall_seconds']:.1f}"}])
        save_checkpoint(state, self.directory / "last.pt")
        if is_best:  # for sampling: without the optimizer's state, half the size
            best = {k: v for k, v in state.items()
                    if k not in ("optimizer", "lr_scheduler", "grad_scaler")}
            save_checkpoint(best, self.directory / "best_model.pt")
        if self.step % self.steps_per_epoch == 0 and whole_epochs % self.config.save_interval == 0:
            save_checkpoint(state, self.directory / f"checkpoint_epoch_{whole_epochs:04d}.pt")
        if final:
            self.save_samples()
        if self.on_progress:
            self.on_progress({"kind": "eval", "step": self.step, "eval_loss": self.eval_loss})

    def evaluated_at_this_step(self) -> bool:
        """Whether eval_log.csv has this step's evaluation (a run stopped by Ctrl-C during its
        final evaluation has not: its best_model.pt and last sample grid may be missing)."""
        with (self.directory / "eval_log.csv").open(newline="") as file:
            return any(int(row["step"]) == self.step for row in csv.DictReader(file))

    def checkpoint_state(self) -> dict[str, Any]:
        """What last.pt holds: all that a resume needs, and the config generate.py builds from."""
        return {"model": self.model.state_dict(), "ema_model": self.ema.module.state_dict(),
                "ema_num_averaged": int(self.ema.n_averaged.item()),
                "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.lr_schedule.state_dict(), "step": self.step,
                "grad_scaler": self.scaler.state_dict(),
                "epoch": self.step / self.steps_per_epoch, "config": asdict(self.config),
                "data_sha256": self.data_sha256,
                "model_config": self.config.model_config().to_dict(),
                "eval_loss": self.eval_loss, "best_eval_loss": self.best_eval_loss,
                "wall_seconds": self.earlier_wall_seconds + time.perf_counter() - self.started}

    def save_samples(self) -> None:
        """An 8-wide grid of 64 EMA samples, from the same noise every time (class-conditional:
        ε_θ(x_t, t, ∅), the unconditional samples)."""
        config, size = self.config, self.config.image_size
        generator = generator_for(config.seed, Stream.SAMPLE_GRID, device=self.device)
        with autocast_for(self.device, self.precision):
            images, _ = sample(self.ema.module, self.noise_schedule, (64, 3, size, size),
                               config.sample_sampler, min(config.sample_steps, config.timesteps),
                               generator, self.device)
        path = Path(config.sample_dir) / f"samples_step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image((images.float() + 1) / 2, path, nrow=8)

    def check_replicas_identical(self) -> None:
        """Every process must end with the same weights: verify it (one all-gather)."""
        weights = torch.cat([p.detach().flatten() for p in self.model.parameters()])
        gathered = [torch.empty_like(weights) for _ in range(self.world_size)]
        dist.all_gather(gathered, weights)
        if not all(torch.equal(other, weights) for other in gathered):
            raise RuntimeError(f"rank {self.rank}: the processes' weights differ")
        if self.is_main:
            print(f"weights identical on all {self.world_size} processes")


def train(config: TrainConfig,
          on_progress: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ε_θ as ``config`` says (under ``torchrun``, as one process of several).
    ``on_progress`` (rank 0) gets ``{"kind": "loss", "rows": [{"step", "epoch", "loss"}, …]}``
    as losses are logged, ``{"kind": "eval", "step", "eval_loss"}`` at each evaluation and
    ``{"kind": "budget", "total_steps"}`` once a --time_budget has fixed the steps."""
    run = None
    try:
        run = Training(config, on_progress)
        try:
            while run.step < run.total_steps:
                run.train_epoch()
            if run.world_size > 1:
                run.check_replicas_identical()
            if run.is_main and not run.images_seen and not run.evaluated_at_this_step():
                run.evaluate_and_save(final=True)  # what an interruption at the end cut short
        except KeyboardInterrupt:
            if run.is_main:
                run.flush_losses(all_processes=False)
                run.eval_loss = math.nan
                path = save_checkpoint(run.checkpoint_state(), run.directory / "last.pt")
                print(f"\ninterrupted at step {run.step}: saved {path}; continue with --resume")
            raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        if run is not None and run.is_main:
            (run.directory / ".run.lock").unlink(missing_ok=True)
    images_per_second = run.images_seen / max(run.train_seconds, 1e-9)
    if run.is_main and not run.images_seen:  # --resume of a finished run
        end = (f"--max_steps {config.max_steps}" if run.total_steps == config.max_steps
               else f"the end of its {config.epochs} epochs")
        best = run.directory / "best_model.pt"
        ready = (f"{best} is ready for generate" if best.exists()
                 else f"{best} is missing: generate from last.pt")
        print(f"nothing to train: {run.directory / 'last.pt'} is at step {run.step}, {end}; "
              f"{ready}")
    elif run.is_main:
        print(f"done: {run.step} steps, {images_per_second:,.0f} images/s; in {run.directory}")
    return TrainResult(run.step, run.step / run.steps_per_epoch, run.eval_loss,
                       run.best_eval_loss, images_per_second)


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`TrainConfig` field, with its name, default and help."""
    parser = argparse.ArgumentParser(prog="python -m ddpm_lib.train",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for item in fields(TrainConfig):  # choices are checked by TrainConfig, in one line
        options = {key: item.metadata[key] for key in ("nargs", "const", "type")
                   if key in item.metadata}
        kind = ({"action": argparse.BooleanOptionalAction} if isinstance(item.default, bool)
                else {"type": str if item.default is None else type(item.default)})  # --no-flag
        choices = f" ({', '.join(item.metadata['choices'])})" if "choices" in item.metadata else ""
        parser.add_argument(f"--{item.name}", default=item.default, help=item.metadata["help"]
                            + choices, **{**kind, **options})
    return parser


def main(argv: list[str] | None = None) -> TrainResult:
    parser = build_parser()
    parser.set_defaults(**RECIPES.get(parser.parse_known_args(argv)[0].recipe, {}))  # flags win
    try:
        return train(TrainConfig(**vars(parser.parse_args(argv))))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
