"""The forward process, the loss and the samplers: DDPM (Ho et al. 2020), DDIM (Song et al. 2021),
strided ancestral (Nichol & Dhariwal 2021), DPM-Solver++ (Lu et al. 2022), each with
classifier-free guidance (Ho & Salimans 2022) for a class-conditional ε_θ. Images are in [-1, 1];
t is 0-based (``betas[t]`` is the paper's β_{t+1}); a sampler starts from noise at "t = T", and
``return_steps`` calls t the state after the step from t. Random draws take a torch.Generator."""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .schedule import NoiseSchedule

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (B,C,H,W), (B,) → ε̂
Samples = tuple[torch.Tensor, dict[int, torch.Tensor]]  # final images, {t: x} of return_steps

SAMPLERS = ("ddpm", "ddim", "dpm++", "dpm++sde", "ancestral")
VARIANCES = ("small", "large")  # σ_t² = β̃_t or β_t: bounds of the true one (DDPM §3.2)
DEFAULT_STEPS = {"ddim": 50, "dpm++": 20, "dpm++sde": 50, "ancestral": 50}


def extract(values: torch.Tensor, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``values[t]`` for a batch of timesteps, shaped (B, 1, 1, …) to broadcast to ``shape``."""
    return values.to(t.device)[t].reshape(len(t), *([1] * (len(shape) - 1)))


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) in closed form (DDPM eq. 4): x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε."""
    return (extract(schedule.sqrt_alphas_cumprod, t, x0.shape) * x0
            + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise)


def iterate_forward_chain(schedule: NoiseSchedule, x0: torch.Tensor, steps: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the chain one step at a time (DDPM eq. 2), what :func:`q_sample` jumps over:
    x_s = √(1-β_s) x_{s-1} + √β_s ε_s for s = 1 … ``steps``."""
    x = x0
    for s in range(steps):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = (1 - schedule.betas[s]).sqrt() * x + schedule.betas[s].sqrt() * noise
    return x


def predict_x0_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor,
                        eps: torch.Tensor) -> torch.Tensor:
    """Invert eq. 4 for x_0 given a noise estimate: x̂_0 = x_t / √ᾱ_t - √(1/ᾱ_t - 1) ε."""
    return (extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
            - extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)


def q_posterior_mean_variance(schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor,
                              t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """μ̃_t and log β̃_t of q(x_{t-1} | x_t, x_0) (DDPM eqs. 6–7): β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t) β_t,
    μ̃_t = √ᾱ_{t-1} β_t/(1-ᾱ_t) · x_0 + √α_t (1-ᾱ_{t-1})/(1-ᾱ_t) · x_t."""
    mean = (extract(schedule.posterior_mean_coef1, t, x_t.shape) * x0
            + extract(schedule.posterior_mean_coef2, t, x_t.shape) * x_t)
    return mean, extract(schedule.posterior_log_variance_clipped, t, x_t.shape)


def diffusion_loss(model: NoisePredictor, schedule: NoiseSchedule, x0: torch.Tensor,
                   generator: torch.Generator | None = None, min_snr_gamma: float = 0.0,
                   part: tuple[int, int] = (0, 1), labels: torch.Tensor | None = None,
                   label_dropout: float = 0.0) -> torch.Tensor:
    """The simplified objective (DDPM eq. 14, Algorithm 1), t then ε drawn from ``generator``:
    L_simple = E_{t, x_0, ε} ‖ε - ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t)‖²,  t ~ U{0 … T-1}.
    With ``min_snr_gamma`` = γ > 0 each example's error is weighted by min(SNR_t, γ) / SNR_t
    (Min-SNR-γ, Hang et al. 2023): the nearly noise-free steps count less. ``part`` = (k, n):
    ``x0`` is rows k, k + n, … of a batch n times larger, and t and ε are drawn for that batch,
    then cut the same way, so n processes draw together what one process would. With
    ``labels`` c (B,) the model is ε_θ(x_t, t, c), each label dropped to ∅ (-1) with
    probability ``label_dropout`` = p_uncond (a third draw, u < p_uncond, u ~ U[0, 1)), so one
    network learns ε_θ(x_t, t, ∅) too (Ho & Salimans 2022, Algorithm 1)."""
    k, n = part
    draws = n * len(x0)
    t = torch.randint(0, schedule.num_timesteps, (draws,), device=x0.device, generator=generator)
    noise = torch.randn((draws, *x0.shape[1:]), device=x0.device, dtype=x0.dtype,
                        generator=generator)
    t, noise = t[k::n], noise[k::n]
    x_t = q_sample(schedule, x0, t, noise)
    if labels is None:
        predicted_noise = model(x_t, t)
    else:
        dropped = torch.rand(draws, device=x0.device, generator=generator)[k::n] < label_dropout
        predicted_noise = model(x_t, t, labels.masked_fill(dropped, -1))
    if min_snr_gamma <= 0:
        return F.mse_loss(predicted_noise.float(), noise.float())
    per_example = (predicted_noise.float() - noise.float()).square().flatten(1).mean(dim=1)
    snr = schedule.snr[t].float()
    return (per_example * snr.clamp(max=min_snr_gamma) / snr).mean()


def denoise(model: NoisePredictor, schedule: NoiseSchedule, x_t: torch.Tensor, t: int,
            clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_0, ε_θ(x_t, t)) for a batch at one timestep t; x̂_0 clipped to [-1, 1] if ``clip``."""
    t_batch = torch.full((len(x_t),), t, device=x_t.device, dtype=torch.long)
    eps = model(x_t, t_batch).float()
    x0 = predict_x0_from_eps(schedule, x_t, t_batch, eps)
    return (x0.clamp(-1.0, 1.0) if clip else x0), eps


@torch.no_grad()
def p_sample(model: NoisePredictor, schedule: NoiseSchedule, x_t: torch.Tensor, t: int,
             generator: torch.Generator | None = None, clip_denoised: bool = True,
             variance: str = "small", noise: torch.Tensor | None = None) -> torch.Tensor:
    """One reverse step x_t → x_{t-1} = μ̃_t(x_t, x̂_0) + σ_t z (DDPM Algorithm 2, line 4), x̂_0
    from ε_θ(x_t, t) and clipped to [-1, 1] if ``clip_denoised`` (unclipped, μ̃_t is eq. 11's
    1/√α_t (x_t - β_t / √(1-ᾱ_t) · ε_θ)). σ_t² = β̃_t ("small") or β_t ("large"); z is
    ``noise`` if given, else drawn from ``generator``; none is added at t = 0."""
    x0, _ = denoise(model, schedule, x_t, t, clip_denoised)
    t_batch = torch.full((len(x_t),), t, device=x_t.device, dtype=torch.long)
    mean, log_variance = q_posterior_mean_variance(schedule, x0, x_t, t_batch)
    if t == 0:
        return mean
    if variance == "large":
        log_variance = extract(schedule.betas.log(), t_batch, x_t.shape)
    if noise is None:
        noise = torch.randn(x_t.shape, device=x_t.device, dtype=x_t.dtype, generator=generator)
    return mean + (0.5 * log_variance).exp() * noise


Step = Callable[[int, int, torch.Tensor], tuple[torch.Tensor, torch.Tensor | float | None]]


def run_chain(step: Step, timesteps: Sequence[int], schedule: NoiseSchedule, shape: Sequence[int],
              generator: torch.Generator | None, device: torch.device | str,
              return_steps: Sequence[int], progress: bool) -> Samples:
    """From x ~ N(0, I) ("t = T"), x ← mean + σ z, (mean, σ) = step(i, t, x), for the i-th of
    ``timesteps`` (no z if σ is None or after the last step); returns the final x and
    {t: x after the step from t (T: the start)} for t in ``return_steps``."""
    x = torch.randn(tuple(shape), device=device, generator=generator)
    keep = set(return_steps)
    kept = {schedule.num_timesteps: x.clone()} if schedule.num_timesteps in keep else {}
    for i, t in enumerate(tqdm(timesteps, desc="sampling", disable=not progress, leave=False)):
        x, sigma = step(i, t, x)
        if sigma is not None and i + 1 < len(timesteps):
            x = x + sigma * torch.randn(x.shape, device=x.device, generator=generator)
        if t in keep:
            kept[t] = x.clamp(-1.0, 1.0)
    return x.clamp(-1.0, 1.0), kept


@torch.no_grad()
def ddpm_sample(model: NoisePredictor, schedule: NoiseSchedule, shape: Sequence[int],
                generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                return_steps: Sequence[int] = (), progress: bool = False,
                variance: str = "small", clip_denoised: bool = True) -> Samples:
    """DDPM Algorithm 2: x_T ~ N(0, I), then :func:`p_sample` for t = T-1 … 0."""
    return run_chain(
        lambda i, t, x: (p_sample(model, schedule, x, t, generator, clip_denoised, variance), None),
        range(schedule.num_timesteps - 1, -1, -1), schedule, shape, generator, device,
        return_steps, progress)


def ddim_timesteps(num_timesteps: int, num_steps: int) -> list[int]:
    """The evenly spaced subsequence τ of {0 … T-1} that DDIM visits, in descending order."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"DDIM needs 1 <= steps <= T = {num_timesteps}, got {num_steps}")
    spaced = torch.linspace(0, num_timesteps - 1, num_steps).round().long().tolist()
    return sorted(set(spaced), reverse=True)


@torch.no_grad()
def ddim_sample(model: NoisePredictor, schedule: NoiseSchedule, shape: Sequence[int],
                num_steps: int = 50, eta: float = 0.0, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", return_steps: Sequence[int] = (),
                progress: bool = False, clip_denoised: bool = True) -> Samples:
    """DDIM over ``num_steps`` timesteps τ (Song et al. 2021, eq. 12), from t = τ_i to s = τ_{i+1}:
    x_s = √ᾱ_s x̂_0 + √(1-ᾱ_s - σ²) ε_θ + σ z,  σ = η √((1-ᾱ_s)/(1-ᾱ_t)) √(1 - ᾱ_t/ᾱ_s).
    η = 0 is deterministic given x_T; η = 1 has DDPM's variance. With ``clip_denoised`` x̂_0 is
    clipped to [-1, 1] and ε recomputed from it."""
    taus = ddim_timesteps(schedule.num_timesteps, num_steps)
    alpha_bars = F.pad(schedule.alphas_cumprod.to(device)[taus], (0, 1), value=1.0)  # then ᾱ = 1

    def step(i: int, t: int, x: torch.Tensor) -> tuple:
        alpha_bar_t, alpha_bar_s = alpha_bars[i], alpha_bars[i + 1]
        x0, eps = denoise(model, schedule, x, t, clip_denoised)
        if clip_denoised:  # ε consistent with the clipped x̂_0
            eps = (x - alpha_bar_t.sqrt() * x0) / (1 - alpha_bar_t).sqrt()
        sigma = eta * ((1 - alpha_bar_s) / (1 - alpha_bar_t)
                       * (1 - alpha_bar_t / alpha_bar_s)).sqrt()
        x = alpha_bar_s.sqrt() * x0 + (1 - alpha_bar_s - sigma**2).clamp(min=0).sqrt() * eps
        return x, sigma if eta > 0 else None

    return run_chain(step, taus, schedule, shape, generator, device, return_steps, progress)


@torch.no_grad()
def ancestral_sample(model: NoisePredictor, schedule: NoiseSchedule, shape: Sequence[int],
                     num_steps: int = 50, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", return_steps: Sequence[int] = (),
                     progress: bool = False, clip_denoised: bool = True,
                     variance: str = "small") -> Samples:
    """Algorithm 2 over ``num_steps`` strided timesteps τ (Improved DDPM §4): the chain that
    visits only τ keeps ᾱ_τ, so its step from t = τ_i to s = τ_{i+1} has β' = 1 - ᾱ_t/ᾱ_s and
    x_s = √ᾱ_s β' / (1-ᾱ_t) · x̂_0 + √(1-β') (1-ᾱ_s) / (1-ᾱ_t) · x_t + σ z,
    σ² = β̃' = (1-ᾱ_s)/(1-ᾱ_t) · β' ("small", DDIM with η = 1)  or  σ² = β' ("large").
    The last step ends at ᾱ = 1 with x̂_0 and no noise; with ``num_steps`` = T it is DDPM's.
    "large" was about 4× worse at 50 steps on this workbook's UNet (docs/BENCHMARKS.md)."""
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    taus = ddim_timesteps(schedule.num_timesteps, num_steps)
    alpha_bars = F.pad(schedule.alphas_cumprod.to(device)[taus], (0, 1), value=1.0)  # then ᾱ = 1

    def step(i: int, t: int, x: torch.Tensor) -> tuple:
        alpha_bar_t, alpha_bar_s = alpha_bars[i], alpha_bars[i + 1]
        x0, _ = denoise(model, schedule, x, t, clip_denoised)
        beta = 1 - alpha_bar_t / alpha_bar_s
        x = (alpha_bar_s.sqrt() * beta / (1 - alpha_bar_t) * x0
             + (1 - beta).sqrt() * (1 - alpha_bar_s) / (1 - alpha_bar_t) * x)
        small = beta * (1 - alpha_bar_s) / (1 - alpha_bar_t)
        return x, (beta if variance == "large" else small).sqrt()

    return run_chain(step, taus, schedule, shape, generator, device, return_steps, progress)


def half_log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """λ = log(α/σ) = ½ (log ᾱ - log(1-ᾱ)), +∞ where ᾱ = 1; float64 keeps h = λ_s - λ_t exact."""
    alphas_cumprod = alphas_cumprod.to(torch.float64)
    return 0.5 * (alphas_cumprod.log() - torch.log1p(-alphas_cumprod))


def log_snr_timesteps(schedule: NoiseSchedule, num_steps: int) -> list[int]:
    """At most ``num_steps`` timesteps evenly spaced in λ_t from T-1 to 0, descending: each grid
    λ's nearest integer t, repeats dropped. With the linear schedule they crowd near t = 0."""
    if not 1 <= num_steps <= schedule.num_timesteps:
        raise ValueError(f"need 1 <= steps <= T = {schedule.num_timesteps}, got {num_steps}")
    lambdas = half_log_snr(schedule.alphas_cumprod.cpu())
    targets = torch.linspace(float(lambdas[-1]), float(lambdas[0]), num_steps, dtype=torch.float64)
    nearest = (lambdas[None, :] - targets[:, None]).abs().argmin(dim=1).tolist()
    return sorted(set(nearest), reverse=True)


def steps_of(sampler: str, num_steps: int | None) -> int:
    """``num_steps``, or for None the sampler's default (:data:`DEFAULT_STEPS`); 0 is refused
    by the samplers (1 <= steps <= T), never read as "default"."""
    return DEFAULT_STEPS[sampler] if num_steps is None else num_steps


def sampler_timesteps(schedule: NoiseSchedule, sampler: str, num_steps: int | None = None
                      ) -> list[int]:
    """The timesteps ``sampler`` visits, descending: with T, what its ``return_steps`` can get."""
    if sampler == "ddpm":
        return list(range(schedule.num_timesteps - 1, -1, -1))
    if sampler in ("ddim", "ancestral"):
        return ddim_timesteps(schedule.num_timesteps, steps_of(sampler, num_steps))
    if sampler in ("dpm++", "dpm++sde"):
        return log_snr_timesteps(schedule, steps_of(sampler, num_steps))
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")


@torch.no_grad()
def dpm_solver_sample(model: NoisePredictor, schedule: NoiseSchedule, shape: Sequence[int],
                      num_steps: int = 20, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu", return_steps: Sequence[int] = (),
                      progress: bool = False, spacing: str = "logsnr", clip_denoised: bool = True,
                      stochastic: bool = False) -> Samples:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) over τ evenly spaced in λ (``"logsnr"``;
    even in t, ``"time"``, makes the last step long in λ). With α = √ᾱ, σ = √(1-ᾱ), λ = log(α/σ),
    x̂_0 as in DDIM, h_i = λ_s - λ_t and r_i = h_{i-1}/h_i, the step from t = τ_i to s = τ_{i+1} is
    x_s = (σ_s/σ_t) x_t - α_s (e^{-h_i} - 1) D_i,
    D_i = (1 + 1/(2 r_i)) x̂_0(τ_i) - 1/(2 r_i) x̂_0(τ_{i-1}), or first order, D_i = x̂_0(τ_i), at
    the first step (DDIM, η = 0) and at the last, which ends at ᾱ = 1 (λ = ∞) and returns x̂_0(0).
    ``stochastic=True``: SDE-DPM-Solver++(2M) (first order: :func:`ancestral_sample`'s, "small"),
    x_s = (σ_s/σ_t) e^{-h_i} x_t + α_s (1 - e^{-2h_i}) D_i + σ_s √(1 - e^{-2h_i}) z."""
    if spacing not in ("logsnr", "time"):
        raise ValueError(f"spacing must be 'logsnr' or 'time', got {spacing!r}")
    taus = (log_snr_timesteps(schedule, num_steps) if spacing == "logsnr"
            else ddim_timesteps(schedule.num_timesteps, num_steps))
    alpha_bars = F.pad(schedule.alphas_cumprod.to("cpu", torch.float64)[taus], (0, 1), value=1.0)
    alphas, sigmas, lambdas = alpha_bars.sqrt(), (1.0 - alpha_bars).sqrt(), half_log_snr(alpha_bars)
    previous_x0: list[torch.Tensor] = []

    def step(i: int, t: int, x: torch.Tensor) -> tuple:
        x0, _ = denoise(model, schedule, x, t, clip_denoised)
        h = lambdas[i + 1] - lambdas[i]
        data = x0
        if previous_x0 and i + 1 < len(taus):  # 1/(2 r_i) = h_i / (2 h_{i-1})
            data = x0 + (h / (2 * (lambdas[i] - lambdas[i - 1]))).item() * (x0 - previous_x0[0])
        previous_x0[:] = [x0]
        noise_ratio = (sigmas[i + 1] / sigmas[i]).item()
        if not stochastic:
            return noise_ratio * x + (-(alphas[i + 1] * torch.expm1(-h)).item()) * data, None
        # e^{-h} and 1 - e^{-2h}: 0 and 1 at the last step, where h = ∞
        decay, injected = torch.exp(-h).item(), -torch.expm1(-2 * h).item()
        x = noise_ratio * decay * x + alphas[i + 1].item() * injected * data
        return x, (sigmas[i + 1] * injected**0.5).item()

    return run_chain(step, taus, schedule, shape, generator, device, return_steps, progress)


def classifier_free_guidance(model: Callable[..., torch.Tensor], labels: torch.Tensor,
                             guidance: float) -> NoisePredictor:
    """The guided noise prediction for labels c (B,) at strength w = ``guidance`` ≥ 0
    (Ho & Salimans 2022, eq. 6), one network call on the doubled batch [c, ∅]:
    ε̃(x_t, t) = (1 + w) ε_θ(x_t, t, c) − w ε_θ(x_t, t, ∅).
    w = 0 is the conditional model alone (one call on the batch); larger w, truer digits, less
    variety. A drop-in NoisePredictor: every sampler samples p(x | c) with it."""
    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if guidance == 0:
            return model(x, t, labels)
        both = model(torch.cat([x, x]), torch.cat([t, t]),
                     torch.cat([labels, torch.full_like(labels, -1)])).float()
        conditional, unconditional = both.chunk(2)
        return (1 + guidance) * conditional - guidance * unconditional
    return guided


def sample(model: NoisePredictor, schedule: NoiseSchedule, shape: Sequence[int],
           sampler: str = "ddpm", num_steps: int | None = None,
           generator: torch.Generator | None = None, device: torch.device | str = "cpu",
           return_steps: Sequence[int] = (), progress: bool = False, clip_denoised: bool = True,
           variance: str | None = None, labels: torch.Tensor | None = None,
           guidance: float = 0.0) -> Samples:
    """Run ``sampler``: "ddpm" (all T steps), "ddim" (η = 0), "ancestral", "dpm++" or "dpm++sde"
    (:func:`dpm_solver_sample`, stochastic) over ``num_steps`` (default :data:`DEFAULT_STEPS`).
    ``variance`` (default "small") is σ_t² of ddpm and ancestral; the others ignore it.
    ``labels`` (B,): a class-conditional ``model`` guided by :func:`classifier_free_guidance`."""
    if labels is not None:
        model = classifier_free_guidance(model, labels.to(device), guidance)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    variance = variance or "small"
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    common = {"generator": generator, "device": device, "return_steps": return_steps,
              "progress": progress, "clip_denoised": clip_denoised}
    if sampler == "ddpm":
        return ddpm_sample(model, schedule, shape, variance=variance, **common)
    num_steps = steps_of(sampler, num_steps)
    if sampler == "ddim":
        return ddim_sample(model, schedule, shape, num_steps, **common)
    if sampler == "ancestral":
        return ancestral_sample(model, schedule, shape, num_steps, variance=variance, **common)
    return dpm_solver_sample(model, schedule, shape, num_steps, stochastic=sampler == "dpm++sde",
                             **common)
