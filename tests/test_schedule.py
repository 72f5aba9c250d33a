"""The schedules against their closed forms, computed independently in float64 NumPy."""

import math

import numpy as np
import pytest
import torch

from ddpm_lib.schedule import (
    NoiseSchedule,
    cosine_beta_schedule,
    linear_beta_schedule,
    make_schedule,
)


def test_linear_betas_run_from_start_to_end_evenly():
    betas = linear_beta_schedule(1000, 1e-4, 0.02).numpy()
    assert betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert np.allclose(np.diff(betas), (0.02 - 1e-4) / 999)


def test_derived_quantities_match_closed_forms():
    schedule = make_schedule("linear", 1000, 1e-4, 0.02)
    betas = np.linspace(1e-4, 0.02, 1000)
    alphas_cumprod = np.cumprod(1 - betas)
    previous = np.concatenate([[1.0], alphas_cumprod[:-1]])
    expected = {
        "alphas": 1 - betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": previous,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - alphas_cumprod),
        "posterior_variance": betas * (1 - previous) / (1 - alphas_cumprod),
        "posterior_mean_coef1": np.sqrt(previous) * betas / (1 - alphas_cumprod),
        "posterior_mean_coef2": np.sqrt(1 - betas) * (1 - previous) / (1 - alphas_cumprod),
        "snr": alphas_cumprod / (1 - alphas_cumprod),
    }
    for name, values in expected.items():
        assert np.allclose(getattr(schedule, name).numpy(), values, rtol=1e-5, atol=1e-8), name
    # ᾱ_T of the assignment's schedule is tiny: x_T is almost pure noise.
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(4.04e-5, rel=0.01)
    assert schedule.posterior_variance[0].item() == 0.0
    assert schedule.posterior_log_variance_clipped[0].item() == pytest.approx(
        math.log(expected["posterior_variance"][1]), rel=1e-5
    )


def test_cosine_alphas_cumprod_follow_the_squared_cosine():
    timesteps, offset = 1000, 0.008
    schedule = NoiseSchedule.from_betas(cosine_beta_schedule(timesteps, offset))
    t = np.arange(1, timesteps + 1)
    f = np.cos((t / timesteps + offset) / (1 + offset) * np.pi / 2) ** 2
    f0 = np.cos(offset / (1 + offset) * np.pi / 2) ** 2
    unclipped = slice(0, 990)  # β is clipped to 0.999 only in the last steps
    assert np.allclose(schedule.alphas_cumprod.numpy()[unclipped], (f / f0)[unclipped], rtol=1e-4)
    assert schedule.betas.max().item() <= 0.999 + 1e-6
    assert np.all(np.diff(schedule.snr.numpy()) < 0)


def test_schedule_moves_to_a_device_and_reports_its_length():
    schedule = make_schedule("cosine", 10).to("cpu")
    assert schedule.num_timesteps == 10
    assert schedule.betas.dtype == torch.float32


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: linear_beta_schedule(0), "timesteps"),
        (lambda: cosine_beta_schedule(0), "timesteps"),
        (lambda: linear_beta_schedule(10, 0.02, 1e-4), "beta_start"),
        (lambda: linear_beta_schedule(10, 0.0, 0.02), "beta_start"),
        (lambda: make_schedule("quadratic"), "quadratic"),
    ],
)
def test_bad_schedule_arguments_are_refused_naming_them(call, named):
    with pytest.raises(ValueError, match=named):
        call()
