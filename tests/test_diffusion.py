"""The forward process, the loss and the samplers."""

import pytest
import torch

from ddpm_lib.diffusion import (
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    diffusion_loss,
    iterate_forward_chain,
    predict_x0_from_eps,
    q_posterior_mean_variance,
    q_sample,
)
from ddpm_lib.model import UNet
from ddpm_lib.schedule import make_schedule

SCHEDULE = make_schedule("linear", 1000, 1e-4, 0.02)


def test_q_sample_has_the_closed_form_mean_and_variance():
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1, 1, 1), 0.7)
    for step in (0, 100, 500, 999):
        t = torch.full((len(x0),), step)
        noise = torch.randn(x0.shape, generator=generator)
        x_t = q_sample(SCHEDULE, x0, t, noise)
        alpha_bar = SCHEDULE.alphas_cumprod[step].item()
        assert x_t.mean().item() == pytest.approx(alpha_bar**0.5 * 0.7, abs=0.02)
        assert x_t.var().item() == pytest.approx(1 - alpha_bar, abs=0.02 + 0.02 * (1 - alpha_bar))


def test_closed_form_agrees_with_iterating_the_chain():
    """x_t from t single steps x_s = √(1-β_s) x_{s-1} + √β_s ε has the closed form's statistics."""
    generator = torch.Generator().manual_seed(1)
    x = iterate_forward_chain(SCHEDULE, torch.full((50000,), -0.4), 300, generator)
    alpha_bar = SCHEDULE.alphas_cumprod[299].item()
    assert x.mean().item() == pytest.approx(alpha_bar**0.5 * -0.4, abs=0.01)
    assert x.var().item() == pytest.approx(1 - alpha_bar, abs=0.01)


def test_predict_x0_inverts_q_sample():
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 500, 999])
    recovered = predict_x0_from_eps(SCHEDULE, q_sample(SCHEDULE, x0, t, noise), t, noise)
    assert torch.allclose(recovered, x0, atol=1e-3)


def test_posterior_mean_is_x0_when_x_t_carries_no_noise_at_t_0():
    x0 = torch.rand(2, 3, 4, 4)
    t = torch.zeros(2, dtype=torch.long)
    x_t = q_sample(SCHEDULE, x0, t, torch.zeros_like(x0))
    mean, _ = q_posterior_mean_variance(SCHEDULE, x0, x_t, t)
    assert torch.allclose(mean, x0, atol=1e-6)


def gaussian_data_oracle(schedule, mean, std):
    """The exact ε-predictor for data x_0 ~ N(mean, std²): E[ε | x_t] in closed form."""

    def predict(x_t, t):
        alpha_bar = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        variance = alpha_bar * std**2 + 1 - alpha_bar
        return (1 - alpha_bar).sqrt() * (x_t - alpha_bar.sqrt() * mean) / variance

    return predict


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_recover_the_data_distribution_with_an_exact_denoiser(sampler):
    """With the true ε(x_t, t) of Gaussian data, the samplers must draw from that Gaussian.

    DDIM is a discretised ODE: with 50 steps its spread comes out about 10 % narrow here, and
    the error shrinks as steps are added, so it is checked at 250.
    """
    mean, std = 0.2, 0.25
    oracle = gaussian_data_oracle(SCHEDULE, mean, std)
    generator = torch.Generator().manual_seed(2)
    shape = (20000, 1, 1, 1)
    if sampler == "ddpm":
        samples, _ = ddpm_sample(oracle, SCHEDULE, shape, generator)
    else:
        samples, _ = ddim_sample(oracle, SCHEDULE, shape, num_steps=250, generator=generator)
    assert samples.mean().item() == pytest.approx(mean, abs=0.01)
    assert samples.std().item() == pytest.approx(std, abs=0.015)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return UNet(base_dim=8, time_emb_dim=16).eval()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_are_deterministic_under_a_seed(tiny_model, sampler):
    schedule = make_schedule("linear", 20)
    run = ddpm_sample if sampler == "ddpm" else ddim_sample
    options = {} if sampler == "ddpm" else {"num_steps": 5}

    def draw(seed):
        generator = torch.Generator().manual_seed(seed)
        return run(tiny_model, schedule, (3, 3, 28, 28), generator=generator,
                   return_steps=(20, 10, 0), **options)

    first, steps = draw(0)
    again, _ = draw(0)
    other, _ = draw(1)
    assert first.shape == (3, 3, 28, 28)
    assert first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert set(steps) <= {20, 10, 0} and {20, 0} <= set(steps)
    assert torch.equal(steps[0], first)


def test_ddim_timesteps_are_descending_and_end_at_zero():
    taus = ddim_timesteps(1000, 50)
    assert len(taus) == 50 and taus[0] == 999 and taus[-1] == 0
    assert all(a > b for a, b in zip(taus[:-1], taus[1:], strict=True))
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(10, 11)


def test_loss_falls_when_training_on_a_tiny_dataset():
    torch.manual_seed(0)
    schedule = make_schedule("linear", 100)
    model = UNet(image_size=16, base_dim=8, time_emb_dim=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = torch.zeros(8, 3, 16, 16) - 1
    data[:, :, 4:12, 6:10] = 1  # the same bar in every image
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        loss = diffusion_loss(model, schedule, data, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
