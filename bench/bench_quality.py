"""Sample quality against training time and against sampler steps; prints tables, writes JSON.

Trains with ``ddpm_lib.train.train`` (the workbook's own loop: data on the device, bf16, EMA,
checkpoints) for ``--train_minutes`` of wall-clock time, and every ``--eval_every_minutes``
scores the EMA network: ``--num_images`` samples from ``--curve_sampler`` with
``--curve_steps`` steps, quantised to 8-bit pixels like the PNGs, judged by the offline digit
evaluator (digit-FID, KID, precision/recall, digit shares and memorisation against the
training images of ``--data_path``, next to the real-data floors; each digit's share). The clock
is the run's wall time since the start of training (data loading, compiling and checkpoints
included) minus the benchmark's own evaluations. At the end the final EMA is
scored with every ``--final_samplers`` entry, each timed over all ``--num_images`` images.

``--network diffusers`` trains HF diffusers' ``UNet2DModel`` (attention at the lowest
resolution, the width of the workbook's UNet, 6.5 M parameters) in the same loop instead; its
noise schedule is ``diffusers.DDPMScheduler``'s, checked equal to the workbook's.
``--side_by_side`` then trains that baseline (the assignment's recipe, eager) in the same run
for the same wall time, with the same metrics, and nests its results under ``"baseline"``.
``--checkpoint PATH`` skips training and scores that checkpoint's EMA with the final samplers.
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
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.utils import save_image

from ddpm_lib import __version__
from ddpm_lib.diffusion import DEFAULT_STEPS, SAMPLERS, VARIANCES, sample
from ddpm_lib.evaluator import evaluate_samples, load_digit_classifier, load_training_images
from ddpm_lib.generate import load_for_sampling, to_pixels
from ddpm_lib.runtime import (
    Stream,
    autocast_for,
    compile_with_fallback,
    example_batch,
    generator_for,
    pick_device,
    should_compile,
    synchronize,
)
from ddpm_lib.schedule import NoiseSchedule
from ddpm_lib.train import TrainConfig, train


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
        if not should_compile(self.args.compile, self.device):
            return network
        if id(network) not in self.compiled:
            batch = min(self.args.sample_batch, self.args.num_images)
            example = example_batch(batch, self.args.image_size, self.device)
            self.compiled[id(network)] = compile_with_fallback(network, example, backward=False)
        return self.compiled[id(network)]

    @torch.no_grad()
    def sample(self, network: nn.Module, spec: SamplerSpec) -> tuple[torch.Tensor, float]:
        """(uint8 images, seconds): the same starting noise at every call (seeded per batch)."""
        network, size, images = self.network_for(network), self.args.image_size, []
        synchronize(self.device)
        started = time.perf_counter()
        for batch, start in enumerate(range(0, self.args.num_images, self.args.sample_batch)):
            count = min(self.args.sample_batch, self.args.num_images - start)
            generator = generator_for(self.args.seed, Stream.GENERATE, batch, device=self.device)
            with autocast_for(self.device):
                x, _ = sample(network, self.schedule, (count, 3, size, size), spec.name,
                              spec.steps, generator, self.device, clip_denoised=spec.clip,
                              variance=spec.variance)
            images.append(to_pixels(x))
        synchronize(self.device)
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


class TimeIsUp(Exception):
    """Raised from the progress callback when the training budget is spent."""


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
    parser.add_argument("--work_dir", type=Path, default=Path("runs/bench_quality"),
                        help="checkpoints of the run (emptied first)")
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
            "work_dir": args.work_dir.with_name(args.work_dir.name + "_diffusers"),
            "json": args.json.with_name(args.json.stem + "_diffusers.json"),
        })
        result["baseline"] = run(baseline_args)
        args.json.write_text(json.dumps(result, indent=2))
    return result


def run(args: argparse.Namespace) -> dict:
    """Train (or load) one network, score its curve and final samplers; write ``args.json``."""
    device = pick_device(args.device)
    overrides = {key: getattr(args, key) for key in ("base_dim", "batch_size", "lr", "epochs")
                 if getattr(args, key) is not None}
    if args.work_dir.exists():
        shutil.rmtree(args.work_dir)
    config = TrainConfig.from_recipe(
        args.recipe, **overrides, data_path=args.data_path, device=str(device),
        compile=args.compile, timesteps=args.timesteps, image_size=args.image_size,
        seed=args.seed, sample_interval=10**9, save_interval=10**6,
        checkpoint_dir=str(args.work_dir / "checkpoints"), sample_dir=str(args.work_dir / "s"))
    schedule = config.noise_schedule().to(device)
    torch.manual_seed(config.seed)
    network = DiffusersUNet(config.image_size, config.base_dim) if args.network == "diffusers" \
        else None
    scorer = Scorer(args, schedule, device)

    curve: list[dict] = []
    state = {"started": time.perf_counter(), "eval_seconds": 0.0, "next_eval": 0.0,
             "model": None}

    def on_progress(event: dict) -> None:
        if event["kind"] != "eval":
            return
        elapsed = time.perf_counter() - state["started"] - state["eval_seconds"]
        state["model"] = event["ema_model"]
        budget_spent = elapsed >= 60 * args.train_minutes
        if elapsed >= state["next_eval"] or budget_spent or event["final"]:
            eval_started = time.perf_counter()
            scored = scorer.score(event["ema_model"], args.curve_sampler)
            scored.pop("images")
            point = {"wall_seconds": elapsed, "loop_seconds": event["train_seconds"],
                     "images_seen": event["images_seen"], "epoch": event["epoch"],
                     "step": event["step"], "eval_loss": event["eval_loss"], **scored}
            curve.append(point)
            print(f"[{elapsed:7.1f} s] epoch {event['epoch']:6.2f}: digit-FID "
                  f"{point['digit_fid']:.3f} ({point['ratio_to_floor']:.2f}× floor), largest "
                  f"share gap {point['largest_share_gap_points']:.1f} pts", flush=True)
            state["next_eval"] = elapsed + 60 * args.eval_every_minutes
            args.json.parent.mkdir(parents=True, exist_ok=True)  # the curve so far, if cut off
            args.json.write_text(json.dumps({"partial": True, "curve": curve}, indent=2))
            state["eval_seconds"] += time.perf_counter() - eval_started
        if budget_spent:
            raise TimeIsUp

    if args.checkpoint is not None:
        loaded = load_for_sampling(args.checkpoint, device)
        model, schedule, images_per_second = loaded.model, loaded.schedule, None
        scorer.schedule = schedule
    else:
        try:
            train(config, on_progress, network=network)
        except TimeIsUp:
            pass
        if state["model"] is None:
            raise SystemExit("training ended before its first evaluation: raise --train_minutes")
        model = state["model"]
        last = curve[-1]
        images_per_second = last["images_seen"] / max(last["loop_seconds"], 1e-9)

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

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    result = {
        "device": name or device.type, "torch": torch.__version__, "ddpm_lib": __version__,
        "network": args.network, "parameters": sum(p.numel() for p in model.parameters()),
        "train_config": {k: v for k, v in vars(config).items()},
        "arguments": {key: plain(value) for key, value in vars(args).items()},
        "training_images_per_second": images_per_second,
        "curve": curve, "final": final,
    }
    if args.network == "diffusers":
        result["diffusers_schedule_max_abs_gap"] = diffusers_schedule_gap(schedule)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    speed = f"training loop {images_per_second:,.0f} images/s; " if images_per_second else ""
    print(f"{args.network} network, {result['parameters']:,} parameters, {speed}wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
