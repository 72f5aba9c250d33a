"""Sample quality against training time and against sampler steps; prints tables, writes JSON.

Trains for ``--train_minutes`` of wall-clock time in a short loop of its own built from
``ddpm_lib.train``'s pieces, as ``python -m ddpm_lib.train`` trains (``optimization_step``: bf16,
clipping, AdamW; the recipe's learning-rate schedule; EMA; compiled on CUDA), and at the end of
an epoch, every ``--eval_every_minutes``, scores the EMA network: ``--num_images`` samples from
``--curve_sampler``, quantised to 8-bit pixels like the PNGs (``ddpm_lib.generate.sample_batch``),
judged by the offline digit evaluator against the training images of ``--data_path``. The clock
runs from the start (data loading and compiling included) minus the benchmark's own scoring. At
the end the final EMA is scored with every ``--final_samplers`` entry, each timed in full.

``--network diffusers`` trains HF diffusers' ``UNet2DModel`` (attention at the lowest
resolution, the width of the workbook's UNet, 6.5 M parameters) in the same loop instead; its
noise schedule is ``diffusers.DDPMScheduler``'s, checked equal to the workbook's.
``--side_by_side`` then trains that baseline (the assignment's recipe, eager) in the same run
for the same wall time, with the same metrics, and nests its results under ``"baseline"``.
``--checkpoint PATH`` skips training and scores that checkpoint's EMA with the final samplers.
(``bench/quality_curve.py`` scores the checkpoints of a real ``ddpm_lib.train`` run instead.)
Examples::

    python bench/bench_quality.py --recipe fast --json bench/results/quality_fast.json
    python bench/bench_quality.py --network diffusers --compile no \\
        --json bench/results/quality_diffusers.json

At toy size on a CPU (the test suite does this)::

    python bench/bench_quality.py --data_path tiny/ --device cpu --base_dim 8 --batch_size 8 \\
        --train_minutes 0.05 --eval_every_minutes 0.01 --num_images 20 --timesteps 20 ...
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.utils import save_image

from ddpm_lib import __version__, runtime
from ddpm_lib.data import MnistRGBFolder
from ddpm_lib.diffusion import DEFAULT_STEPS, SAMPLERS, VARIANCES
from ddpm_lib.evaluator import evaluate_samples, load_digit_classifier, load_training_images
from ddpm_lib.generate import load_for_sampling, sample_batch, to_pixels
from ddpm_lib.model import UNet
from ddpm_lib.schedule import NoiseSchedule
from ddpm_lib.train import (
    TrainConfig,
    exponential_moving_average,
    fixed_eval_loss,
    learning_rate_schedule,
    optimization_step,
    to_model_range,
)


class DiffusersUNet(nn.Module):
    """HF diffusers' ``UNet2DModel`` behind the workbook's interface ``ε̂ = network(x_t, t)``.

    Widths (base, 2·base, 2·base) over 28 → 14 → 7, two ResNet blocks a level, attention at
    the lowest level, GroupNorm with 8 groups: the workbook UNet's layout in diffusers' blocks.
    """

    def __init__(self, image_size: int, base_dim: int):
        super().__init__()
        from diffusers import UNet2DModel

        self.unet = UNet2DModel(
            sample_size=image_size, in_channels=3, out_channels=3, layers_per_block=2,
            block_out_channels=(base_dim, 2 * base_dim, 2 * base_dim),
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def diffusers_schedule_gap(schedule: NoiseSchedule) -> float:
    """Largest |ᾱ_t(diffusers DDPMScheduler) − ᾱ_t(workbook)| for the same β range and T."""
    from diffusers import DDPMScheduler

    theirs = DDPMScheduler(num_train_timesteps=schedule.num_timesteps,
                           beta_start=float(schedule.betas[0]),
                           beta_end=float(schedule.betas[-1]), beta_schedule="linear")
    return float((theirs.alphas_cumprod - schedule.alphas_cumprod.cpu()).abs().max())


class Scorer:
    """Samples ``num_images`` images from a network and scores them with the digit evaluator."""

    def __init__(self, args: argparse.Namespace, schedule: NoiseSchedule, device: torch.device):
        self.args, self.schedule, self.device = args, schedule, device
        self.classifier, self.facts = load_digit_classifier(device=device)
        self.train_images = load_training_images(args.data_path)  # uint8, read once
        self.compiled: dict[int, nn.Module] = {}

    def network_for(self, network: nn.Module) -> nn.Module:
        """The network compiled for the sampling batch (once per network), if compiling."""
        if not runtime.should_compile(self.args.compile, self.device):
            return network
        if id(network) not in self.compiled:
            batch = min(self.args.sample_batch, self.args.num_images)
            example = runtime.example_batch(batch, self.args.image_size, self.device)
            self.compiled[id(network)] = runtime.compile_with_fallback(network, example,
                                                                       backward=False)
        return self.compiled[id(network)]

    def sample(self, network: nn.Module, spec: SamplerSpec) -> tuple[torch.Tensor, float]:
        """(uint8 images, seconds): ``ddpm_lib.generate``'s batches, so the images of
        ``python -m ddpm_lib.generate --seed S --batch_size B`` (B = ``--sample_batch``)."""
        network, size, images = self.network_for(network), self.args.image_size, []
        runtime.synchronize(self.device)
        started = time.perf_counter()
        for batch, start in enumerate(range(0, self.args.num_images, self.args.sample_batch)):
            count = min(self.args.sample_batch, self.args.num_images - start)
            images.append(to_pixels(sample_batch(
                network, self.schedule, (count, 3, size, size), self.args.seed, batch, spec.name,
                spec.steps, self.device, spec.variance, spec.clip)))
        runtime.synchronize(self.device)
        return torch.cat(images), time.perf_counter() - started

    def score(self, network: nn.Module, spec: SamplerSpec) -> dict:
        was_training = network.training
        network.eval()
        images, seconds = self.sample(network, spec)
        network.train(was_training)
        report = evaluate_samples(images, self.train_images, self.classifier, self.facts)
        return {"sampler": spec.name, "steps": spec.steps, "clip_denoised": spec.clip,
                "variance": spec.variance, "sampling_seconds": seconds,
                "digit_fid": report.digit_fid, "digit_fid_floor": report.digit_fid_floor,
                "ratio_to_floor": report.digit_fid / report.digit_fid_floor,
                "kid": report.kid, "kid_floor": report.floors["kid"],
                "precision": report.precision, "recall": report.recall,
                "class_tv": report.class_tv, "memorised_share": report.memorised_share,
                "largest_share_gap_points": 100 * report.largest_share_gap,
                "class_share": report.class_share.tolist(),
                "mean_confidence": report.mean_confidence, "images": images}


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler setting: ``name`` (one of SAMPLERS), ``steps`` (0: the sampler's default),
    whether x̂_0 is clipped, and σ_t² of ddpm / ancestral (None: the sampler's default)."""

    name: str
    steps: int = 0
    clip: bool = True
    variance: str | None = None

    def label(self, timesteps: int) -> str:
        options = [self.variance] if self.variance else []
        options += [] if self.clip else ["no clip"]
        steps = timesteps if self.name == "ddpm" else self.steps or DEFAULT_STEPS[self.name]
        return f"{self.name} {steps} steps" + (f" ({', '.join(options)})" if options else "")


def parse_sampler(text: str) -> SamplerSpec:
    """``ddpm``, ``ddim:50``, ``dpm++:20``, ``ddim:50:noclip``, ``ancestral:50:small``,
    ``ancestral:20:large,noclip`` → a :class:`SamplerSpec`."""
    parts = text.split(":")
    name, steps, options = [*parts, "", ""][:3]
    options = [option for option in options.split(",") if option]
    variances = [option for option in options if option in VARIANCES]
    if (len(parts) > 3 or name not in SAMPLERS or (steps and not steps.isdigit())
            or any(option not in (*VARIANCES, "noclip") for option in options)
            or len(variances) > 1 or (variances and name not in ("ddpm", "ancestral"))):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected SAMPLER[:STEPS[:OPTIONS]] with SAMPLER one of {SAMPLERS} and "
            f"OPTIONS noclip and (for ddpm, ancestral) one of {VARIANCES}, comma-separated")
    return SamplerSpec(name, int(steps) if steps else 0, "noclip" not in options,
                       variances[0] if variances else None)


def plain(value: object) -> object:
    """An argument's value as JSON can hold it (paths as text, sampler specs as dicts)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, SamplerSpec):
        return asdict(value)
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=("workbook", "diffusers"), default="workbook")
    parser.add_argument("--recipe", default="assignment", help="ddpm_lib.train.RECIPES name")
    parser.add_argument("--data_path", default="./data/mnist_rgb")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", choices=("auto", "yes", "no"), default="auto")
    parser.add_argument("--base_dim", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--batch_size", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: the recipe's; training stops at --train_minutes anyway")
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--train_minutes", type=float, default=4.0)
    parser.add_argument("--eval_every_minutes", type=float, default=0.5)
    parser.add_argument("--num_images", type=int, default=10000)
    parser.add_argument("--sample_batch", type=int, default=10000)
    parser.add_argument("--curve_sampler", type=parse_sampler, default="ancestral:50:small",
                        help="the best ≤ 50-step sampler measured (earlier runs: dpm++:20)")
    parser.add_argument("--final_samplers", type=parse_sampler, nargs="+",
                        default=["ddpm", "ancestral:10", "ancestral:20", "ancestral:50",
                                 "ddim:10", "ddim:20", "ddim:50", "dpm++:10", "dpm++:20",
                                 "dpm++:50"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side_by_side", action="store_true",
                        help="then train the diffusers baseline (assignment recipe, eager) in the "
                        "same process for the same wall time; its results under 'baseline'")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="no training: score this checkpoint's EMA with --final_samplers")
    parser.add_argument("--json", type=Path, default=Path("bench/results/quality.json"))
    parser.add_argument("--grid", type=Path, default=None,
                        help="save 64 final samples of the first final sampler here")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    args.final_samplers = [parse_sampler(s) if isinstance(s, str) else s
                           for s in args.final_samplers]  # argparse leaves list defaults as text
    result = run(args)
    if args.side_by_side and args.checkpoint is None:
        # The baseline students reach for, in the same process, for the same wall time.
        baseline_args = argparse.Namespace(**{
            **vars(args), "network": "diffusers", "recipe": "assignment", "compile": "no",
            "base_dim": None, "batch_size": None, "lr": None, "epochs": None, "grid": None,
            "train_minutes": result["curve"][-1]["wall_seconds"] / 60,
            "json": args.json.with_name(args.json.stem + "_diffusers.json"),
        })
        result["baseline"] = run(baseline_args)
        args.json.write_text(json.dumps(result, indent=2))
    return result


class CurveTraining:
    """``network`` trained as ``config`` says, with ``ddpm_lib.train``'s pieces: all images on
    the device, AdamW and the recipe's learning-rate schedule, ``optimization_step`` (bf16 on
    CUDA, clipping, EMA), channels-last and compiled with CUDA graphs on CUDA."""

    def __init__(self, config: TrainConfig, network: nn.Module, device: torch.device):
        self.config, self.device = config, device
        folder = MnistRGBFolder(config.data_path, config.image_size)
        self.images = folder.load_all(progress=False).to(device)
        self.eval_images = self.images[: config.num_eval_images]
        self.steps_per_epoch = len(self.images) // config.batch_size
        self.model = network.to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = exponential_moving_average(self.model, config.ema_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay,
                                           fused=device.type == "cuda")
        self.lr_schedule = learning_rate_schedule(self.optimizer, config,
                                                  config.epochs * self.steps_per_epoch)
        self.schedule = config.noise_schedule().to(device)
        self.trained = self.model
        if runtime.should_compile(config.compile, device):
            example = runtime.example_batch(config.batch_size, config.image_size, device)
            self.trained = runtime.compile_with_fallback(self.model, example, backward=True,
                                                         cuda_graphs=device.type == "cuda")
        self.noise = torch.Generator(device).manual_seed(config.seed)
        self.order = torch.Generator().manual_seed(config.seed)

    def epoch(self) -> float:
        """One epoch in a shuffled order; returns its seconds."""
        batch_size = self.config.batch_size
        order = torch.randperm(len(self.images), generator=self.order).to(self.device)
        runtime.synchronize(self.device)
        started = time.perf_counter()
        for batch in range(self.steps_per_epoch):
            x0 = to_model_range(self.images[order[batch * batch_size:(batch + 1) * batch_size]])
            runtime.next_step()
            optimization_step(self.trained, self.ema, self.optimizer, self.schedule, x0,
                              self.noise, self.config.grad_clip, self.config.min_snr_gamma)
            self.lr_schedule.step()
        runtime.synchronize(self.device)
        return time.perf_counter() - started


def train_with_curve(args: argparse.Namespace, config: TrainConfig, network: nn.Module,
                     scorer: Scorer, device: torch.device) -> tuple[list[dict], nn.Module, float]:
    """Train until ``--train_minutes`` of wall time (or the recipe's epochs) are spent, scoring
    the EMA at the end of an epoch every ``--eval_every_minutes`` and at the end. Returns the
    curve, the EMA network and the training loop's images/s."""
    started, scoring_seconds = time.perf_counter(), 0.0
    run = CurveTraining(config, network, device)
    curve, next_eval, loop_seconds = [], 0.0, 0.0
    for epoch in range(1, config.epochs + 1):
        loop_seconds += run.epoch()
        elapsed = time.perf_counter() - started - scoring_seconds
        done = elapsed >= 60 * args.train_minutes or epoch == config.epochs
        if elapsed < next_eval and not done:
            continue
        scoring_started = time.perf_counter()
        scored = scorer.score(run.ema.module, args.curve_sampler)
        scored.pop("images")
        curve.append({"wall_seconds": elapsed, "loop_seconds": loop_seconds,
                      "images_seen": epoch * run.steps_per_epoch * config.batch_size,
                      "epoch": epoch, "step": epoch * run.steps_per_epoch,
                      "eval_loss": fixed_eval_loss(run.ema.module, run.schedule, run.eval_images,
                                                   config.seed), **scored})
        print(f"[{elapsed:7.1f} s] epoch {epoch:4d}: digit-FID {scored['digit_fid']:.3f} "
              f"({scored['ratio_to_floor']:.2f}× floor), largest share gap "
              f"{scored['largest_share_gap_points']:.1f} pts", flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)  # the curve so far, if cut off
        args.json.write_text(json.dumps({"partial": True, "curve": curve}, indent=2))
        next_eval = elapsed + 60 * args.eval_every_minutes
        scoring_seconds += time.perf_counter() - scoring_started
        if done:
            break
    images_seen = curve[-1]["images_seen"]
    return curve, run.ema.module, images_seen / max(loop_seconds, 1e-9)


def run(args: argparse.Namespace) -> dict:
    """Train (or load) one network, score its curve and final samplers; write ``args.json``."""
    device = runtime.pick_device(args.device)
    overrides = {key: getattr(args, key) for key in ("base_dim", "batch_size", "lr", "epochs")
                 if getattr(args, key) is not None}
    config = TrainConfig.from_recipe(
        args.recipe, **overrides, data_path=args.data_path, device=str(device),
        compile=args.compile, timesteps=args.timesteps, image_size=args.image_size,
        seed=args.seed)
    schedule = config.noise_schedule().to(device)
    scorer = Scorer(args, schedule, device)
    curve, images_per_second = [], None
    if args.checkpoint is not None:
        loaded = load_for_sampling(args.checkpoint, device)
        model, scorer.schedule = loaded.model, loaded.schedule
    else:
        torch.manual_seed(config.seed)
        network = (DiffusersUNet(config.image_size, config.base_dim)
                   if args.network == "diffusers" else UNet(config.model_config()))
        curve, model, images_per_second = train_with_curve(args, config, network, scorer, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    result = {
        "device": name or device.type, "torch": torch.__version__, "ddpm_lib": __version__,
        "network": args.network, "parameters": sum(p.numel() for p in model.parameters()),
        "train_config": dict(vars(config)),
        "arguments": {key: plain(value) for key, value in vars(args).items()},
        "training_images_per_second": images_per_second,
        "curve": curve, "final": score_final_samplers(args, scorer, model),
    }
    if args.network == "diffusers":
        result["diffusers_schedule_max_abs_gap"] = diffusers_schedule_gap(schedule)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    speed = f"training loop {images_per_second:,.0f} images/s; " if images_per_second else ""
    print(f"{args.network} network, {result['parameters']:,} parameters, {speed}wrote {args.json}")
    return result


def score_final_samplers(args: argparse.Namespace, scorer: Scorer, model: nn.Module) -> list:
    """Each ``--final_samplers`` entry's scores; the first one's 64 images to ``--grid``."""
    final = []
    for index, spec in enumerate(args.final_samplers):
        scored = scorer.score(model, spec)
        images = scored.pop("images")
        if index == 0 and args.grid is not None:
            args.grid.parent.mkdir(parents=True, exist_ok=True)
            save_image(images[:64].float() / 255, args.grid, nrow=8)
        final.append(scored)
        print(f"final, {spec.label(args.timesteps):28s}: {scored['sampling_seconds']:7.2f} s "
              f"for {args.num_images} images, digit-FID {scored['digit_fid']:.3f} "
              f"({scored['ratio_to_floor']:.2f}× "
              f"floor {scored['digit_fid_floor']:.3f}), largest share gap "
              f"{scored['largest_share_gap_points']:.1f} pts", flush=True)
    return final


if __name__ == "__main__":
    main()
