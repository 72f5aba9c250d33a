"""Noise schedules: the variances β_1 … β_T and every quantity derived from them.

Ho et al. (2020) fix q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I), β_t linear from 1e-4 to 0.02
over T = 1000 steps; Nichol & Dhariwal (2021)'s cosine schedule of ᾱ_t destroys information more
slowly at the start. Indices are 0-based: ``betas[t]`` is β_{t+1}."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch


def linear_beta_schedule(timesteps: int = 1000, beta_start: float = 1e-4,
                         beta_end: float = 0.02) -> torch.Tensor:
    """β_t evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020, §4). Shape (T,)."""
    if timesteps < 1 or not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(f"need timesteps >= 1 and 0 < beta_start <= beta_end < 1, got timesteps="
                         f"{timesteps}, beta_start={beta_start}, beta_end={beta_end}")
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_beta_schedule(timesteps: int = 1000, offset: float = 0.008,
                         max_beta: float = 0.999) -> torch.Tensor:
    """β_t of the cosine schedule (Nichol & Dhariwal 2021, eq. 17), shape (T,): ᾱ(t) = f(t) / f(0)
    with f(t) = cos²(((t/T + s) / (1 + s)) · π/2), and β_t = 1 - ᾱ(t) / ᾱ(t-1), clipped to
    ``max_beta`` so the last steps stay finite."""
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=max_beta)


@dataclass(frozen=True)
class NoiseSchedule:
    """Every per-timestep constant the forward process, the loss and the samplers need: tensors
    of shape (T,), computed once in float64 by :meth:`from_betas` and stored as float32."""

    betas: torch.Tensor  # β_t
    alphas: torch.Tensor  # α_t = 1 - β_t
    alphas_cumprod: torch.Tensor  # ᾱ_t = ∏_{s≤t} α_s
    alphas_cumprod_prev: torch.Tensor  # ᾱ_{t-1}, with ᾱ := 1 before the first step
    sqrt_alphas_cumprod: torch.Tensor  # √ᾱ_t: the signal scale of q(x_t | x_0)
    sqrt_one_minus_alphas_cumprod: torch.Tensor  # √(1-ᾱ_t): its noise scale
    sqrt_recip_alphas_cumprod: torch.Tensor  # 1/√ᾱ_t, for x_0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t
    sqrt_recipm1_alphas_cumprod: torch.Tensor  # √(1/ᾱ_t - 1)
    posterior_variance: torch.Tensor  # β̃_t = β_t (1-ᾱ_{t-1}) / (1-ᾱ_t) of q(x_{t-1}|x_t,x_0)
    posterior_log_variance_clipped: torch.Tensor  # log β̃_t, with β̃ at t = 0 (0) set to β̃_1
    posterior_mean_coef1: torch.Tensor  # √ᾱ_{t-1} β_t / (1-ᾱ_t): x_0's weight in μ̃_t (eq. 7)
    posterior_mean_coef2: torch.Tensor  # √α_t (1-ᾱ_{t-1}) / (1-ᾱ_t): x_t's weight in μ̃_t
    snr: torch.Tensor  # signal-to-noise ratio ᾱ_t / (1-ᾱ_t)

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> NoiseSchedule:
        """Precompute all quantities from β_t (any float tensor of shape (T,))."""
        betas = betas.to(torch.float64)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        one_minus = 1.0 - alphas_cumprod
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / one_minus
        clip_from = posterior_variance[1:2] if len(betas) > 1 else betas[:1]
        values = dict(
            betas=betas, alphas=alphas, alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=alphas_cumprod_prev, sqrt_alphas_cumprod=alphas_cumprod.sqrt(),
            sqrt_one_minus_alphas_cumprod=one_minus.sqrt(),
            sqrt_recip_alphas_cumprod=alphas_cumprod.rsqrt(),
            sqrt_recipm1_alphas_cumprod=(1.0 / alphas_cumprod - 1.0).sqrt(),
            posterior_variance=posterior_variance,
            posterior_log_variance_clipped=torch.cat([clip_from, posterior_variance[1:]]).log(),
            posterior_mean_coef1=alphas_cumprod_prev.sqrt() * betas / one_minus,
            posterior_mean_coef2=alphas.sqrt() * (1.0 - alphas_cumprod_prev) / one_minus,
            snr=alphas_cumprod / one_minus,
        )
        return cls(**{name: value.to(torch.float32) for name, value in values.items()})

    @property
    def num_timesteps(self) -> int:
        """T, the number of diffusion steps."""
        return len(self.betas)

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """The same schedule with every tensor on ``device``."""
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


SCHEDULES = ("linear", "cosine")


def make_schedule(name: str = "linear", timesteps: int = 1000, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> NoiseSchedule:
    """The :class:`NoiseSchedule` called ``name`` ("linear" or "cosine") of ``timesteps`` steps."""
    if name == "linear":
        return NoiseSchedule.from_betas(linear_beta_schedule(timesteps, beta_start, beta_end))
    if name == "cosine":
        return NoiseSchedule.from_betas(cosine_beta_schedule(timesteps))
    raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
