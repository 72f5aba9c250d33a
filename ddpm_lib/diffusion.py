"""The diffusion itself: the forward process, the training loss and five samplers.

Following Ho et al. (2020), "Denoising Diffusion Probabilistic Models" (DDPM), Song et al.
(2021), "Denoising Diffusion Implicit Models" (DDIM), Nichol & Dhariwal (2021), "Improved
Denoising Diffusion Probabilistic Models" (strided ancestral sampling), and Lu et al. (2022),
"DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models". Images live
in [-1, 1]; timesteps are 0-based (t = 0 … T-1), so ``schedule.betas[t]`` is the paper's β_{t+1}.

Every random draw takes a ``torch.Generator``: the same generator state gives the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .schedule import NoiseSchedule

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""ε_θ(x_t, t): any callable from (B, C, H, W) images and (B,) timesteps to (B, C, H, W)."""

SAMPLERS = ("ddpm", "ddim", "dpm++", "dpm++sde", "ancestral")
"""The names :func:`sample` accepts (for a command line's ``choices``)."""

VARIANCES = ("small", "large")
"""σ_t² of the ddpm and ancestral samplers: β̃_t, the posterior's ("small"), or β_t ("large").
DDPM §3.2: the two bound the true reverse variance from below and above."""


def extract(values: torch.Tensor, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``values[t]`` for a batch of timesteps, shaped (B, 1, 1, …) to broadcast to ``shape``."""
    return values.to(t.device)[t].reshape(len(t), *([1] * (len(shape) - 1)))


def q_sample(
    schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) in closed form (DDPM eq. 4):

    x_t = √ᾱ_t · x_0 + √(1-ᾱ_t) · ε,   ε ~ N(0, I).
    """
    return (
        extract(schedule.sqrt_alphas_cumprod, t, x0.shape) * x0
        + extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise
    )


def iterate_forward_chain(
    schedule: NoiseSchedule, x0: torch.Tensor, steps: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Run the chain one step at a time (DDPM eq. 2): for s = 1 … ``steps``,

    x_s = √(1-β_s) · x_{s-1} + √β_s · ε_s,   ε_s ~ N(0, I).

    Slow on purpose: it is what :func:`q_sample` jumps over in closed form.
    """
    x = x0
    for s in range(steps):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = (1 - schedule.betas[s]).sqrt() * x + schedule.betas[s].sqrt() * noise
    return x


def predict_x0_from_eps(
    schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """Invert eq. 4 for x_0 given a noise estimate: x̂_0 = x_t / √ᾱ_t - √(1/ᾱ_t - 1) · ε."""
    return (
        extract(schedule.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
        - extract(schedule.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps
    )


def q_posterior_mean_variance(
    schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance of q(x_{t-1} | x_t, x_0) (DDPM eqs. 6–7):

    μ̃_t = √ᾱ_{t-1} β_t / (1-ᾱ_t) · x_0 + √α_t (1-ᾱ_{t-1}) / (1-ᾱ_t) · x_t,
    β̃_t = (1-ᾱ_{t-1}) / (1-ᾱ_t) · β_t.
    """
    mean = (
        extract(schedule.posterior_mean_coef1, t, x_t.shape) * x0
        + extract(schedule.posterior_mean_coef2, t, x_t.shape) * x_t
    )
    log_variance = extract(schedule.posterior_log_variance_clipped, t, x_t.shape)
    return mean, log_variance


def diffusion_loss(
    model: NoisePredictor,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    min_snr_gamma: float = 0.0,
) -> torch.Tensor:
    """The simplified training objective (DDPM eq. 14, Algorithm 1):

    L_simple = E_{t, x_0, ε} ‖ε - ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t)‖²,  t ~ U{0 … T-1}.

    With ``min_snr_gamma`` = γ > 0, each example's error is weighted by min(SNR_t, γ) / SNR_t
    (Min-SNR-γ, Hang et al. 2023, for ε-prediction): the nearly noise-free steps, whose
    gradients conflict with the rest and teach little, count less.
    """
    t = torch.randint(
        0, schedule.num_timesteps, (len(x0),), device=x0.device, generator=generator
    )
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    predicted_noise = model(q_sample(schedule, x0, t, noise), t)
    if min_snr_gamma <= 0:
        return F.mse_loss(predicted_noise.float(), noise.float())
    per_example = (predicted_noise.float() - noise.float()).square().flatten(1).mean(dim=1)
    snr = schedule.snr[t].float()
    return (per_example * snr.clamp(max=min_snr_gamma) / snr).mean()


@torch.no_grad()
def p_sample(
    model: NoisePredictor,
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    t: int,
    generator: torch.Generator | None = None,
    clip_denoised: bool = True,
    variance: str = "small",
) -> torch.Tensor:
    """One ancestral step x_t → x_{t-1} ~ p_θ(x_{t-1} | x_t) (DDPM Algorithm 2).

    x̂_0 is predicted from ε_θ, clipped to [-1, 1] if ``clip_denoised``, and plugged into the
    posterior mean μ̃_t(x_t, x̂_0); the variance σ_t² is β̃_t (``variance="small"``) or β_t
    ("large"); no noise is added at the last step.
    """
    t_batch = torch.full((len(x_t),), t, device=x_t.device, dtype=torch.long)
    x0 = predict_x0_from_eps(schedule, x_t, t_batch, model(x_t, t_batch).float())
    if clip_denoised:
        x0 = x0.clamp(-1.0, 1.0)
    mean, log_variance = q_posterior_mean_variance(schedule, x0, x_t, t_batch)
    if variance == "large":
        log_variance = extract(schedule.betas.log(), t_batch, x_t.shape)
    if t == 0:
        return mean
    noise = torch.randn(x_t.shape, device=x_t.device, dtype=x_t.dtype, generator=generator)
    return mean + (0.5 * log_variance).exp() * noise


@torch.no_grad()
def ddpm_sample(
    model: NoisePredictor,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    return_steps: Sequence[int] = (),
    progress: bool = False,
    variance: str = "small",
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Ancestral sampling over all T steps, from x_T ~ N(0, I) to x_0 (DDPM Algorithm 2), with
    σ_t² = β̃_t (``variance="small"``) or β_t ("large").

    Returns the final images (shape ``shape``, clamped to [-1, 1]) and ``{t: x_t}`` for each t
    in ``return_steps`` (t = T means the starting noise, t = 0 the final images).
    """
    x = torch.randn(tuple(shape), device=device, generator=generator)
    keep = set(return_steps)
    steps = {schedule.num_timesteps: x.clone()} if schedule.num_timesteps in keep else {}
    timesteps = range(schedule.num_timesteps - 1, -1, -1)
    for t in tqdm(timesteps, desc="DDPM sampling", disable=not progress, leave=False):
        x = p_sample(model, schedule, x, t, generator, variance=variance)
        if t in keep:
            steps[t] = x.clamp(-1.0, 1.0)
    return x.clamp(-1.0, 1.0), steps


def ddim_timesteps(num_timesteps: int, num_steps: int) -> list[int]:
    """The evenly spaced subsequence τ of {0 … T-1} that DDIM visits, in descending order."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"DDIM needs 1 <= steps <= T = {num_timesteps}, got {num_steps}")
    spaced = torch.linspace(0, num_timesteps - 1, num_steps).round().long().tolist()
    return sorted(set(spaced), reverse=True)


@torch.no_grad()
def ddim_sample(
    model: NoisePredictor,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    num_steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    return_steps: Sequence[int] = (),
    progress: bool = False,
    clip_denoised: bool = True,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """DDIM sampling over ``num_steps`` timesteps τ_i (Song et al. 2021, eq. 12):

    x_{τ_{i-1}} = √ᾱ_{τ_{i-1}} x̂_0 + √(1-ᾱ_{τ_{i-1}} - σ²) · ε_θ + σ z,
    σ = η √((1-ᾱ_{τ_{i-1}})/(1-ᾱ_{τ_i})) √(1-ᾱ_{τ_i}/ᾱ_{τ_{i-1}}).

    η = 0 is deterministic given x_T; η = 1 has DDPM's variance. x̂_0 is clipped to [-1, 1] (and ε
    recomputed from it) unless ``clip_denoised=False``. Returns the final images and
    ``{t: x_t}`` for each t in ``return_steps`` that the schedule visits (T = the start noise).
    """
    x = torch.randn(tuple(shape), device=device, generator=generator)
    keep = set(return_steps)
    steps = {schedule.num_timesteps: x.clone()} if schedule.num_timesteps in keep else {}
    taus = ddim_timesteps(schedule.num_timesteps, num_steps)
    alphas_cumprod = schedule.alphas_cumprod.to(x.device)
    for i, t in enumerate(tqdm(taus, desc="DDIM sampling", disable=not progress, leave=False)):
        t_batch = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        eps = model(x, t_batch).float()
        x0 = predict_x0_from_eps(schedule, x, t_batch, eps)
        alpha_bar = alphas_cumprod[t]
        alpha_bar_prev = alphas_cumprod[taus[i + 1]] if i + 1 < len(taus) else x.new_tensor(1.0)
        if clip_denoised:
            # Recompute ε from the clipped x̂_0, so the update stays consistent with it.
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        sigma = eta * (
            (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
        ).sqrt()
        x = alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0 and i + 1 < len(taus):
            x = x + sigma * torch.randn(x.shape, device=x.device, generator=generator)
        if t in keep:
            steps[t] = x.clamp(-1.0, 1.0)
    return x.clamp(-1.0, 1.0), steps


@torch.no_grad()
def ancestral_sample(
    model: NoisePredictor,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    num_steps: int = 50,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    return_steps: Sequence[int] = (),
    progress: bool = False,
    clip_denoised: bool = True,
    variance: str = "small",
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """DDPM's ancestral sampling over ``num_steps`` strided timesteps τ (Nichol & Dhariwal 2021,
    "Improved DDPM", §4): the chain that visits only τ_n > … > τ_1 keeps ᾱ_τ, so its step from
    t = τ_i to s = τ_{i-1} has β' = 1 - ᾱ_t/ᾱ_s, and Algorithm 2 applies with

    μ̃ = √ᾱ_s β' / (1-ᾱ_t) · x̂_0 + √(1-β') (1-ᾱ_s) / (1-ᾱ_t) · x_t,
    x_s = μ̃ + σ z,   σ² = β̃' = (1-ᾱ_s)/(1-ᾱ_t) · β'  ("small")  or  σ² = β'  ("large").

    After τ_1 comes ᾱ_s = 1, where μ̃ = x̂_0 and no noise is added. "small" is the chain of DDIM
    with η = 1. Improved DDPM found "large" better with few steps for networks trained on
    L_simple; on this workbook's MNIST UNet it was about 4× worse at 50 steps (digit-FID 8.2
    against 2.1, docs/BENCHMARKS.md), so "small" is the default. With ``num_steps = T`` it is
    :func:`ddpm_sample`. x̂_0 is clipped to [-1, 1] unless ``clip_denoised=False``. Returns the
    final images and ``{t: x_t}`` for each t in ``return_steps`` that it visits (T = the start
    noise).
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    x = torch.randn(tuple(shape), device=device, generator=generator)
    keep = set(return_steps)
    steps = {schedule.num_timesteps: x.clone()} if schedule.num_timesteps in keep else {}
    taus = ddim_timesteps(schedule.num_timesteps, num_steps)
    alphas_cumprod = schedule.alphas_cumprod.to(x.device)
    for i, t in enumerate(tqdm(taus, desc="ancestral sampling", disable=not progress,
                               leave=False)):
        t_batch = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        x0 = predict_x0_from_eps(schedule, x, t_batch, model(x, t_batch).float())
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        alpha_bar = alphas_cumprod[t]
        alpha_bar_prev = alphas_cumprod[taus[i + 1]] if i + 1 < len(taus) else x.new_tensor(1.0)
        beta = 1 - alpha_bar / alpha_bar_prev
        x = (alpha_bar_prev.sqrt() * beta / (1 - alpha_bar) * x0
             + (1 - beta).sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar) * x)
        if i + 1 < len(taus):
            sigma_squared = beta if variance == "large" else beta * (1 - alpha_bar_prev) / (
                1 - alpha_bar)
            x = x + sigma_squared.sqrt() * torch.randn(x.shape, device=x.device,
                                                       generator=generator)
        if t in keep:
            steps[t] = x.clamp(-1.0, 1.0)
    return x.clamp(-1.0, 1.0), steps


def half_log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """λ = log(α/σ) = ½ (log ᾱ - log(1-ᾱ)), with α = √ᾱ and σ = √(1-ᾱ); +∞ where ᾱ = 1.

    Computed in float64, whatever the input's dtype, so the step sizes h = λ_s - λ_t of
    :func:`dpm_solver_sample` do not lose their digits to cancellation.
    """
    alphas_cumprod = alphas_cumprod.to(torch.float64)
    return 0.5 * (alphas_cumprod.log() - torch.log1p(-alphas_cumprod))


def log_snr_timesteps(schedule: NoiseSchedule, num_steps: int) -> list[int]:
    """Timesteps evenly spaced in λ_t = log(α_t/σ_t) from t = T-1 to 0, in descending order.

    Each λ on the grid is matched to the nearest integer t; repeats are dropped, so at most
    ``num_steps`` timesteps. With the linear schedule λ changes fastest near t = 0, so these
    steps crowd there, where DDIM's even spacing in t takes one long step.
    """
    if not 1 <= num_steps <= schedule.num_timesteps:
        raise ValueError(f"need 1 <= steps <= T = {schedule.num_timesteps}, got {num_steps}")
    lambdas = half_log_snr(schedule.alphas_cumprod.cpu())
    targets = torch.linspace(float(lambdas[-1]), float(lambdas[0]), num_steps, dtype=torch.float64)
    nearest = (lambdas[None, :] - targets[:, None]).abs().argmin(dim=1).tolist()
    return sorted(set(nearest), reverse=True)


DEFAULT_STEPS = {"ddim": 50, "dpm++": 20, "dpm++sde": 50, "ancestral": 50}
"""The steps each strided sampler takes when ``num_steps`` is not given."""


def sampler_timesteps(schedule: NoiseSchedule, sampler: str, num_steps: int | None = None
                      ) -> list[int]:
    """The timesteps the sampler ``sampler`` evaluates ε_θ at, in descending order: all T for
    "ddpm", DDIM's even spacing for "ddim" and "ancestral", λ-spacing for "dpm++" and
    "dpm++sde". These (and T, the start) are the ones whose x_t a sampler's ``return_steps``
    can return."""
    if sampler == "ddpm":
        return list(range(schedule.num_timesteps - 1, -1, -1))
    if sampler in ("ddim", "ancestral"):
        return ddim_timesteps(schedule.num_timesteps, num_steps or DEFAULT_STEPS[sampler])
    if sampler in ("dpm++", "dpm++sde"):
        return log_snr_timesteps(schedule, num_steps or DEFAULT_STEPS[sampler])
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")


@torch.no_grad()
def dpm_solver_sample(
    model: NoisePredictor,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    num_steps: int = 20,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    return_steps: Sequence[int] = (),
    progress: bool = False,
    spacing: str = "logsnr",
    clip_denoised: bool = True,
    stochastic: bool = False,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): a multistep second-order solver of the
    probability-flow ODE in its data-prediction form, over timesteps τ_i evenly spaced in λ
    (``spacing="logsnr"``, :func:`log_snr_timesteps`, the paper's advice for small images) or
    in t as DDIM's (``spacing="time"``).

    With α_t = √ᾱ_t, σ_t = √(1-ᾱ_t), λ_t = log(α_t/σ_t) and the data prediction
    x̂_0(x_t, t) = (x_t - σ_t ε_θ(x_t, t)) / α_t, clamped to [-1, 1] as in DDIM, one step from
    t = τ_i to s = τ_{i+1} with h_i = λ_s - λ_t is

    x_s = (σ_s/σ_t) · x_t - α_s (e^{-h_i} - 1) · D_i,

    D_i = x̂_0(τ_i)                                                (first order: the first step),
    D_i = (1 + 1/(2 r_i)) x̂_0(τ_i) - 1/(2 r_i) x̂_0(τ_{i-1}),  r_i = h_{i-1}/h_i   (later steps).

    The first-order step is exactly DDIM with η = 0. The last step goes from τ = 0 to "t = -1",
    where ᾱ = 1 (σ = 0, λ = ∞): it is first order and returns the x̂_0 predicted at τ = 0 itself.
    Only x_t and x̂_0 enter the update, so clamping x̂_0 needs no recomputed ε. The coefficients
    σ_s/σ_t and α_s (e^{-h} - 1) are computed in float64 (with ``expm1``) from the schedule.

    Why λ-spacing: with τ_i evenly spaced in t and the linear schedule, the last step before
    τ = 0 is long in λ (τ = 111 → 0 spans λ ≈ 0.9 → 4.6 at 10 steps) and r_i there is small,
    which is where the second-order extrapolation is least accurate.

    ``stochastic=True`` solves the reverse diffusion SDE instead with the same exponential
    integrator (SDE-DPM-Solver++(2M), by the same authors; diffusers' ``sde-dpmsolver++``): with
    z ~ N(0, I),

    x_s = (σ_s/σ_t) e^{-h_i} · x_t + α_s (1 - e^{-2h_i}) · D_i + σ_s √(1 - e^{-2h_i}) · z,

    with the same D_i. Its first-order step is exactly DDPM's strided ancestral step with
    σ² = β̃' (:func:`ancestral_sample`, "small"): (σ_s/σ_t) e^{-h} = √(ᾱ_t/ᾱ_s)(1-ᾱ_s)/(1-ᾱ_t)
    and σ_s² (1 - e^{-2h}) = β̃'.

    Deterministic given x_T (and, if stochastic, the generator). Returns the final images
    (clamped to [-1, 1]) and ``{t: x}`` for each t in ``return_steps`` that it visits, x being
    the state right after the step from t (as in :func:`ddim_sample`; T = the start noise, 0 =
    the final images).
    """
    x = torch.randn(tuple(shape), device=device, generator=generator)
    keep = set(return_steps)
    steps = {schedule.num_timesteps: x.clone()} if schedule.num_timesteps in keep else {}
    if spacing not in ("logsnr", "time"):
        raise ValueError(f"spacing must be 'logsnr' or 'time', got {spacing!r}")
    taus = (log_snr_timesteps(schedule, num_steps) if spacing == "logsnr"
            else ddim_timesteps(schedule.num_timesteps, num_steps))
    # ᾱ along the path τ_0 > … > τ_{n-1} = 0, then ᾱ = 1 at the end ("t = -1").
    path_alphas_cumprod = torch.cat([
        schedule.alphas_cumprod.to("cpu", torch.float64)[taus], torch.ones(1, dtype=torch.float64)
    ])
    path_alphas = path_alphas_cumprod.sqrt()
    path_sigmas = (1.0 - path_alphas_cumprod).sqrt()
    path_lambdas = half_log_snr(path_alphas_cumprod)
    previous_x0, previous_h = None, None
    for i, t in enumerate(tqdm(taus, desc="DPM-Solver++ sampling", disable=not progress,
                               leave=False)):
        t_batch = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        x0 = predict_x0_from_eps(schedule, x, t_batch, model(x, t_batch).float())
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        h = path_lambdas[i + 1] - path_lambdas[i]
        is_last = i + 1 == len(taus)
        if previous_x0 is None or is_last:
            data_estimate = x0
        else:
            # (1 + 1/(2r)) x̂_0(τ_i) - 1/(2r) x̂_0(τ_{i-1}), with 1/(2r) = h_i / (2 h_{i-1}).
            data_estimate = x0 + (h / (2 * previous_h)).item() * (x0 - previous_x0)
        noise_ratio = (path_sigmas[i + 1] / path_sigmas[i]).item()
        if stochastic:
            # e^{-h}, 1 - e^{-2h} = -expm1(-2h); at the last step h = ∞: 0 and 1.
            decay, injected = torch.exp(-h).item(), -torch.expm1(-2 * h).item()
            x = (noise_ratio * decay * x + path_alphas[i + 1].item() * injected * data_estimate)
            if not is_last:
                noise = torch.randn(x.shape, device=x.device, generator=generator)
                x = x + (path_sigmas[i + 1] * injected**0.5).item() * noise
        else:
            data_weight = -(path_alphas[i + 1] * torch.expm1(-h)).item()
            x = noise_ratio * x + data_weight * data_estimate
        previous_x0, previous_h = x0, h
        if t in keep:
            steps[t] = x.clamp(-1.0, 1.0)
    return x.clamp(-1.0, 1.0), steps


def sample(
    model: NoisePredictor,
    schedule: NoiseSchedule,
    shape: Sequence[int],
    sampler: str = "ddpm",
    num_steps: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    return_steps: Sequence[int] = (),
    progress: bool = False,
    clip_denoised: bool = True,
    variance: str | None = None,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Dispatch on ``sampler``, one of :data:`SAMPLERS`: "ddpm" → :func:`ddpm_sample` (all T
    steps; ``num_steps`` is ignored), "ddim" → :func:`ddim_sample` with η = 0 (``num_steps``
    default 50), "dpm++" → :func:`dpm_solver_sample` (``num_steps`` default 20), "dpm++sde" →
    its stochastic form (default 50), "ancestral" →
    :func:`ancestral_sample`: DDPM's ancestral sampling over ``num_steps`` (default 50) strided
    steps. ``clip_denoised=False`` leaves x̂_0 unclipped (DDIM, DPM-Solver++, ancestral).
    ``variance`` (one of :data:`VARIANCES`, default "small") is σ_t² of ddpm and ancestral;
    dpm++sde's noise is set by its solver, and ddim and dpm++ are deterministic.
    """
    if variance is not None and variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    if sampler == "ddpm":
        return ddpm_sample(model, schedule, shape, generator, device, return_steps, progress,
                           variance or "small")
    if sampler in DEFAULT_STEPS:
        num_steps = num_steps or DEFAULT_STEPS[sampler]
    if sampler == "ddim":
        return ddim_sample(model, schedule, shape, num_steps, 0.0, generator, device,
                           return_steps, progress, clip_denoised)
    if sampler == "ancestral":
        return ancestral_sample(model, schedule, shape, num_steps, generator, device,
                                return_steps, progress, clip_denoised, variance or "small")
    if sampler in ("dpm++", "dpm++sde"):
        return dpm_solver_sample(model, schedule, shape, num_steps, generator, device,
                                 return_steps, progress, clip_denoised=clip_denoised,
                                 stochastic=sampler == "dpm++sde")
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
