"""The forward process, the loss and the samplers."""

from functools import partial

import pytest
import torch

from ddpm_lib.diffusion import (
    SAMPLERS,
    ancestral_sample,
    ddim_sample,
    ddim_timesteps,
    ddpm_sample,
    diffusion_loss,
    dpm_solver_sample,
    half_log_snr,
    iterate_forward_chain,
    log_snr_timesteps,
    p_sample,
    predict_x0_from_eps,
    q_posterior_mean_variance,
    q_sample,
    sample,
)
from ddpm_lib.model import UNet
from ddpm_lib.schedule import NoiseSchedule, make_schedule

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


@pytest.mark.parametrize("num_steps", [10, 50])
def test_strided_ancestral_variances_bracket_the_data_spread(num_steps):
    """Improved DDPM §4 with the exact ε of Gaussian data: over few strided steps σ² = β̃' leaves
    the samples too narrow and σ² = β' too wide (the two bound the true reverse variance); both
    keep the mean, and both converge to the data's spread as steps are added (250 here)."""
    mean, std = 0.2, 0.25
    oracle = gaussian_data_oracle(SCHEDULE, mean, std)

    def spread(steps, variance):
        samples, _ = ancestral_sample(oracle, SCHEDULE, (20000, 1, 1, 1), steps,
                                      torch.Generator().manual_seed(2), variance=variance)
        assert samples.mean().item() == pytest.approx(mean, abs=0.01)
        return samples.std().item()

    assert spread(num_steps, "small") < std - 0.02 < std + 0.02 < spread(num_steps, "large")
    assert spread(250, "small") == pytest.approx(std, abs=0.015)
    assert spread(250, "large") == pytest.approx(std, abs=0.015)


def test_strided_ancestral_is_ddim_eta_1_and_at_full_length_ddpm():
    """The "small" strided chain is DDIM's with η = 1; with all T steps either variance is
    DDPM's Algorithm 2 with the same σ_t² (same draws, same order)."""
    oracle = gaussian_data_oracle(SCHEDULE, 0.1, 0.3)
    shape = (4, 1, 2, 2)

    def draw(run, *args, **kwargs):
        return run(oracle, SCHEDULE, shape, *args, generator=torch.Generator().manual_seed(3),
                   **kwargs)[0]

    assert torch.allclose(draw(ancestral_sample, 50, variance="small"),
                          draw(ddim_sample, 50, 1.0), atol=1e-5)
    for variance in ("small", "large"):
        assert torch.allclose(draw(ancestral_sample, 1000, variance=variance),
                              draw(ddpm_sample, variance=variance), atol=1e-4), variance
    assert not torch.allclose(draw(ddpm_sample, variance="small"),
                              draw(ddpm_sample, variance="large"), atol=1e-3)
    with pytest.raises(ValueError, match="variance must be one of"):
        draw(ancestral_sample, 50, variance="learned")


def test_stochastic_dpm_solver_is_ancestral_at_first_order_and_keeps_the_spread():
    """SDE-DPM-Solver++(2M): with two steps both are first order, and with DDIM's spacing it is
    then the strided ancestral sampler (σ² = β̃') draw for draw. Its second-order steps fix
    that sampler's narrow spread: 10 λ-spaced steps already give the data's std (ancestral
    gives half of it, see above)."""
    oracle = gaussian_data_oracle(SCHEDULE, 0.1, 0.3)
    shape = (4, 1, 2, 2)
    for steps in (1, 2):
        ancestral, _ = ancestral_sample(oracle, SCHEDULE, shape, steps,
                                        torch.Generator().manual_seed(3), variance="small")
        sde, _ = dpm_solver_sample(oracle, SCHEDULE, shape, steps,
                                   torch.Generator().manual_seed(3), spacing="time",
                                   stochastic=True)
        assert torch.allclose(ancestral, sde, atol=1e-6), steps
    mean, std = 0.2, 0.25
    oracle = gaussian_data_oracle(SCHEDULE, mean, std)
    for steps in (10, 50):
        samples, _ = dpm_solver_sample(oracle, SCHEDULE, (20000, 1, 1, 1), steps,
                                       torch.Generator().manual_seed(2), stochastic=True)
        assert samples.mean().item() == pytest.approx(mean, abs=0.01)
        assert samples.std().item() == pytest.approx(std, abs=0.01), steps


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return UNet(base_dim=8, time_emb_dim=16).eval()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_are_deterministic_under_a_seed(tiny_model, sampler):
    schedule = make_schedule("linear", 20)
    run = {"ddpm": ddpm_sample, "ddim": ddim_sample, "dpm++": dpm_solver_sample,
           "dpm++sde": partial(dpm_solver_sample, stochastic=True),
           "ancestral": ancestral_sample}[sampler]
    options = {} if sampler == "ddpm" else {"num_steps": 5}

    def draw(seed):
        generator = torch.Generator().manual_seed(seed)
        return run(tiny_model, schedule, (3, 3, 28, 28), generator=generator,
                   return_steps=(20, 10, 0), **options)

    first, steps = draw(0)
    again, _ = draw(0)
    other, _ = draw(1)
    assert first.shape == (3, 3, 28, 28)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert set(steps) <= {20, 10, 0} and {20, 0} <= set(steps)
    assert torch.equal(steps[0], first)


def test_one_reverse_step_is_algorithm_2_in_its_mu_form(tiny_model):
    """Unclipped, p_sample's μ̃_t(x_t, x̂_0) + σ_t z is DDPM eq. 11 written out,
    x_{t-1} = 1/√α_t (x_t - β_t/√(1-ᾱ_t) ε_θ(x_t, t)) + σ_t z, for a given z and for z drawn
    from a generator; at t = 0 no noise is added."""
    schedule = make_schedule("linear", 20)
    x_t = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(9))
    z = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(10))
    for t in (0, 7, 19):
        eps = tiny_model(x_t, torch.full((2,), t))
        alpha, beta = schedule.alphas[t], schedule.betas[t]
        mean = (x_t - beta / (1 - schedule.alphas_cumprod[t]).sqrt() * eps) / alpha.sqrt()
        for variance, sigma_squared in (("small", schedule.posterior_variance[t]),
                                        ("large", beta)):
            expected = mean + sigma_squared.sqrt() * z if t > 0 else mean
            step = p_sample(tiny_model, schedule, x_t, t, clip_denoised=False, variance=variance,
                            noise=z)
            assert torch.allclose(step, expected, atol=1e-4), (t, variance)
    drawn = p_sample(tiny_model, schedule, x_t, 7, torch.Generator().manual_seed(10))
    assert torch.equal(drawn, p_sample(tiny_model, schedule, x_t, 7, noise=z))


def test_ddim_timesteps_are_descending_and_end_at_zero():
    taus = ddim_timesteps(1000, 50)
    assert len(taus) == 50 and taus[0] == 999 and taus[-1] == 0
    assert all(a > b for a, b in zip(taus[:-1], taus[1:], strict=True))
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(10, 11)


def test_log_snr_timesteps_are_evenly_spaced_in_lambda():
    taus = log_snr_timesteps(SCHEDULE, 10)
    assert taus[0] == SCHEDULE.num_timesteps - 1 and taus[-1] == 0 and len(taus) == 10
    assert taus == sorted(set(taus), reverse=True)
    lambdas = half_log_snr(SCHEDULE.alphas_cumprod)[taus]
    gaps = lambdas[1:] - lambdas[:-1]
    assert (gaps > 0).all()
    # Integer t cannot hit the grid exactly; near t = 0, one step of t moves λ by up to 0.4.
    assert (gaps - gaps.mean()).abs().max() < 0.3 * gaps.mean()
    assert len(log_snr_timesteps(SCHEDULE, 50)) < 50  # repeats near t = 0 are dropped
    with pytest.raises(ValueError, match="steps"):
        log_snr_timesteps(SCHEDULE, 0)


def test_dpm_solver_with_one_step_returns_the_clamped_x0_prediction(tiny_model):
    """One step goes straight to ᾱ = 1 (σ = 0): x = x̂_0 = (x_T - √(1-ᾱ_t) ε_θ) / √ᾱ_t, clamped."""
    T = SCHEDULE.num_timesteps
    images, steps = dpm_solver_sample(tiny_model, SCHEDULE, (2, 3, 28, 28), num_steps=1,
                                      generator=torch.Generator().manual_seed(4),
                                      return_steps=(T, 0), spacing="time")
    x_T = torch.randn((2, 3, 28, 28), generator=torch.Generator().manual_seed(4))
    (t,) = ddim_timesteps(T, 1)
    alpha_bar = SCHEDULE.alphas_cumprod[t]
    eps = tiny_model(x_T, torch.full((2,), t))
    expected = ((x_T - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()).clamp(-1.0, 1.0)
    assert expected.abs().max() == 1.0  # the clamp is at work
    assert torch.allclose(images, expected, atol=1e-6)
    assert torch.equal(steps[T], x_T) and torch.equal(steps[0], images)
    ddim_images, _ = ddim_sample(tiny_model, SCHEDULE, (2, 3, 28, 28), num_steps=1,
                                 generator=torch.Generator().manual_seed(4))
    assert torch.allclose(images, ddim_images, atol=1e-6)


@pytest.mark.parametrize("num_steps", [5, 20])
@pytest.mark.parametrize("sampler", ["ddim", "dpm++", "dpm++ logsnr"])
def test_samplers_follow_the_exact_path_when_all_data_is_one_image(sampler, num_steps):
    """With data x_0 = x* always, ε(x_t, t) = (x_t - √ᾱ_t x*) / √(1-ᾱ_t) is exact and the ODE's
    path is x_t = √ᾱ_t x* + √(1-ᾱ_t) ε_T, ε_T fixed by the start noise: both samplers must stay on
    it at every step they take (the state after the step from τ_i belongs to τ_{i+1}) and end at x*.
    """
    x_star = torch.linspace(-0.9, 0.9, 3 * 8 * 8).reshape(3, 8, 8)
    oracle = gaussian_data_oracle(SCHEDULE, x_star, 0.0)
    T = SCHEDULE.num_timesteps
    if sampler == "dpm++ logsnr":
        taus, run = log_snr_timesteps(SCHEDULE, num_steps), dpm_solver_sample
    else:
        taus = ddim_timesteps(T, num_steps)
        run = ddim_sample if sampler == "ddim" else partial(dpm_solver_sample, spacing="time")
    images, steps = run(oracle, SCHEDULE, (2, 3, 8, 8), num_steps=num_steps,
                        generator=torch.Generator().manual_seed(5), return_steps=[T, *taus])
    alphas_cumprod = SCHEDULE.alphas_cumprod.double()
    start = alphas_cumprod[taus[0]]
    eps_T = (steps[T].double() - start.sqrt() * x_star) / (1 - start).sqrt()
    for t, next_alpha_bar in zip(taus, [*alphas_cumprod[taus[1:]], torch.tensor(1.0)],
                                 strict=True):
        on_path = next_alpha_bar.sqrt() * x_star + (1 - next_alpha_bar).sqrt() * eps_T
        assert torch.allclose(steps[t].double(), on_path.clamp(-1, 1), atol=1e-5), t
    assert torch.allclose(images, x_star.expand(2, 3, 8, 8), atol=1e-5)


def test_dpm_solver_steps_match_the_update_written_out():
    """Three steps τ_0 → τ_1 → τ_2 = 0 → ᾱ = 1: first order, second order, then x̂_0 itself, with
    x_s = (σ_s/σ_t) x_t - α_s (e^{-h} - 1) D and D = (1 + 1/(2r)) x̂_0(t) - 1/(2r) x̂_0(t_prev).
    """
    mean, std = 0.1, 0.2
    oracle = gaussian_data_oracle(SCHEDULE, mean, std)
    T = SCHEDULE.num_timesteps
    taus = ddim_timesteps(T, 3)
    images, steps = dpm_solver_sample(oracle, SCHEDULE, (500, 1, 1, 1), num_steps=3,
                                      generator=torch.Generator().manual_seed(6),
                                      return_steps=[T, *taus], spacing="time")
    alpha_bar = [*SCHEDULE.alphas_cumprod.double()[taus], torch.tensor(1.0, dtype=torch.float64)]
    alpha = [a.sqrt() for a in alpha_bar]
    sigma = [(1 - a).sqrt() for a in alpha_bar]
    lam = [torch.log(a / s) for a, s in zip(alpha, sigma, strict=True)]

    def x0_prediction(x, i):
        eps = oracle(x.float(), torch.full((len(x),), taus[i])).double()
        return ((x - sigma[i] * eps) / alpha[i]).clamp(-1, 1)

    x = steps[T].double()
    x0_first = x0_prediction(x, 0)
    h_first = lam[1] - lam[0]
    x = sigma[1] / sigma[0] * x - alpha[1] * (torch.exp(-h_first) - 1) * x0_first
    # The sampler works in float32: x̂_0 at τ_0 = 999 is x/α - (σ/α) ε with 1/α ≈ 156, so its
    # last digits, and those of what follows, are good to a few 1e-5.
    assert torch.allclose(steps[taus[0]].double(), x.clamp(-1, 1), atol=1e-4)
    x0_second = x0_prediction(x, 1)
    h_second = lam[2] - lam[1]
    r = h_first / h_second
    d = (1 + 1 / (2 * r)) * x0_second - 1 / (2 * r) * x0_first
    x = sigma[2] / sigma[1] * x - alpha[2] * (torch.exp(-h_second) - 1) * d
    assert torch.allclose(steps[taus[1]].double(), x.clamp(-1, 1), atol=1e-4)
    assert torch.allclose(images.double(), x0_prediction(x, 2), atol=1e-4)


def log_snr_uniform_schedule(num_timesteps, log_snr_max, log_snr_min):
    """A schedule whose λ_t = log(√ᾱ_t / √(1-ᾱ_t)) falls linearly in t, so that DDIM's evenly
    spaced timesteps are evenly spaced in λ: ᾱ_t = sigmoid(2 λ_t)."""
    lambdas = torch.linspace(log_snr_max, log_snr_min, num_timesteps, dtype=torch.float64)
    alphas_cumprod = torch.sigmoid(2 * lambdas)
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return NoiseSchedule.from_betas(1 - alphas_cumprod / previous)


def test_dpm_solver_is_second_order_and_beats_ddim():
    """For Gaussian data N(μ, s²) the probability-flow ODE keeps z = (x_t - α_t μ)/√(α_t² s² + σ_t²)
    fixed, so from x_T at τ_0 its exact end point is x_0 = μ + s z. DDIM's error halves when the
    steps double (first order); DPM-Solver++(2M)'s falls about four-fold (second order), and is far
    smaller. Measured (RMS): DDIM 6.1e-2, 3.1e-2, 1.6e-2, 8.1e-3 at 10, 20, 40, 80 steps; DPM++
    6.2e-3, 4.8e-3, 1.3e-3, 3.3e-4. A λ-uniform grid keeps the order visible: on the linear
    schedule the last steps near t = 0 are long in λ.
    """
    schedule = log_snr_uniform_schedule(1000, 7.0, -6.0)
    mean, std = 0.1, 0.2  # samples stay inside (-1, 1): no clamping
    oracle = gaussian_data_oracle(schedule, mean, std)
    shape = (1000, 1, 1, 1)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(7)).double()
    alpha_bar = schedule.alphas_cumprod[ddim_timesteps(1000, 10)[0]].double()
    z = (x_T - alpha_bar.sqrt() * mean) / (alpha_bar * std**2 + 1 - alpha_bar).sqrt()
    exact = mean + std * z
    assert exact.abs().max() < 1

    def error(run, num_steps):
        images, _ = run(oracle, schedule, shape, num_steps=num_steps,
                        generator=torch.Generator().manual_seed(7))
        return (images.double() - exact).pow(2).mean().sqrt().item()

    assert error(ddim_sample, 1000) < 2e-3  # the end point is the ODE's: the fine DDIM finds it
    ddim = {n: error(ddim_sample, n) for n in (10, 20, 40, 80)}
    dpm = {n: error(dpm_solver_sample, n) for n in (10, 20, 40, 80)}
    for n in ddim:
        assert dpm[n] < 0.25 * ddim[n], (n, dpm, ddim)
    assert 0.4 < ddim[80] / ddim[40] < 0.6 and 0.4 < ddim[40] / ddim[20] < 0.6, ddim
    assert dpm[80] / dpm[40] < 0.35 and dpm[40] / dpm[20] < 0.35, dpm


def test_sample_dispatches_by_name():
    schedule = make_schedule("linear", 50)
    oracle = gaussian_data_oracle(schedule, 0.1, 0.2)
    direct = {
        "ddpm": lambda g: ddpm_sample(oracle, schedule, (4, 1, 2, 2), g),
        "ddim": lambda g: ddim_sample(oracle, schedule, (4, 1, 2, 2), 50, generator=g),
        "dpm++": lambda g: dpm_solver_sample(oracle, schedule, (4, 1, 2, 2), 20, g),
        "dpm++sde": lambda g: dpm_solver_sample(oracle, schedule, (4, 1, 2, 2), 50, g,
                                                stochastic=True),
        "ancestral": lambda g: ancestral_sample(oracle, schedule, (4, 1, 2, 2), 50, g,
                                                variance="small"),
    }
    assert set(direct) == set(SAMPLERS)
    for name, run in direct.items():
        dispatched, _ = sample(oracle, schedule, (4, 1, 2, 2), name,
                               generator=torch.Generator().manual_seed(8))
        expected, _ = run(torch.Generator().manual_seed(8))
        assert torch.equal(dispatched, expected), name
    dpm_5, _ = sample(oracle, schedule, (4, 1, 2, 2), "dpm++", 5,
                      generator=torch.Generator().manual_seed(8))
    assert not torch.equal(dpm_5, expected)
    unclipped, _ = sample(oracle, schedule, (4, 1, 2, 2), "ddim", 5, clip_denoised=False,
                          generator=torch.Generator().manual_seed(8))
    clipped, _ = sample(oracle, schedule, (4, 1, 2, 2), "ddim", 5,
                        generator=torch.Generator().manual_seed(8))
    assert not torch.equal(unclipped, clipped)  # x̂_0 of pure noise exceeds [-1, 1] early on
    large, _ = sample(oracle, schedule, (4, 1, 2, 2), "ancestral", variance="large",
                      generator=torch.Generator().manual_seed(8))
    assert not torch.equal(large, dispatched)  # the last one dispatched: ancestral, small
    with pytest.raises(ValueError, match="unknown sampler 'dpm'.*dpm\\+\\+"):
        sample(oracle, schedule, (4, 1, 2, 2), "dpm")
    with pytest.raises(ValueError, match="variance must be one of"):
        sample(oracle, schedule, (4, 1, 2, 2), "ddpm", variance="fixed")


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


def test_min_snr_weighting_scales_each_example_by_min_snr_gamma_over_snr():
    """With a network that predicts ε̂ = 0, each example's error is mean(ε²); Min-SNR-γ weights
    it by min(SNR_t, γ)/SNR_t for the t drawn, and γ above every SNR weights nothing."""
    x0 = torch.zeros(256, 1, 2, 2)

    def predicts_zero(x, t):
        return torch.zeros_like(x)

    def loss(**kwargs):
        return diffusion_loss(predicts_zero, SCHEDULE, x0, torch.Generator().manual_seed(0),
                              **kwargs).item()

    replay = torch.Generator().manual_seed(0)  # diffusion_loss's draws: t, then ε
    t = torch.randint(0, SCHEDULE.num_timesteps, (len(x0),), generator=replay)
    per_example = torch.randn(x0.shape, generator=replay).square().flatten(1).mean(dim=1)
    snr = SCHEDULE.snr[t]
    assert loss() == pytest.approx(per_example.mean().item(), rel=1e-5)
    assert loss(min_snr_gamma=5.0) == pytest.approx(
        (per_example * snr.clamp(max=5.0) / snr).mean().item(), rel=1e-5)
    assert loss(min_snr_gamma=5.0) < 0.95 * loss()  # the low-noise steps (t < 90) count less
    assert loss(min_snr_gamma=float(SCHEDULE.snr.max()) * 2) == pytest.approx(loss(), rel=1e-5)


def test_the_parts_of_a_batch_draw_what_the_whole_batch_draws():
    """Data parallelism: n processes, each with rows k, k + n, … of a batch, draw its t and ε."""
    def model(x, t):  # depends on x_t and t, so the loss checks both draws
        return x * t.float().view(-1, 1, 1, 1) / 1000

    x0 = torch.randn(8, 3, 4, 4)
    whole = diffusion_loss(model, SCHEDULE, x0, torch.Generator().manual_seed(3))
    parts = [diffusion_loss(model, SCHEDULE, x0[k::4], torch.Generator().manual_seed(3),
                            part=(k, 4)) for k in range(4)]
    assert torch.allclose(whole, torch.stack(parts).mean())
    assert not torch.allclose(whole, diffusion_loss(model, SCHEDULE, x0[0::4],
                                                    torch.Generator().manual_seed(3)))
