"""Figures: each plotting function draws what it says, save_figure writes PNG and PDF, the pack
is listed with the notebook that makes each missing file."""

import csv

import torch
from PIL import Image

from ddpm_lib import plots
from ddpm_lib.diffusion import q_sample
from ddpm_lib.report import MADE_BY, missing_figures, write_results_table
from ddpm_lib.schedule import make_schedule


def test_save_figure_writes_a_300_dpi_png_and_a_pdf(tmp_path):
    fig = plots.plot_schedules({"linear": make_schedule("linear", 50)})
    png, pdf = plots.save_figure(fig, tmp_path / "figures" / "schedules")
    with Image.open(png) as image:
        assert round(image.info["dpi"][0]) == 300
    assert pdf.read_bytes().startswith(b"%PDF")


def test_schedule_figure_plots_each_schedule_against_the_step_index():
    fig = plots.plot_schedules({"linear": make_schedule("linear", 50),
                                "cosine": make_schedule("cosine", 50)})
    betas, alphas_cumprod, _ = fig.axes
    assert len(betas.lines) == 2
    assert list(alphas_cumprod.lines[0].get_xdata()) == list(range(50))
    expected = make_schedule("linear", 50).alphas_cumprod.numpy()
    assert (alphas_cumprod.lines[0].get_ydata() == expected).all()


def test_forward_figures_show_x_t_at_each_state():
    x0 = torch.rand(3, 3, 28, 28) * 2 - 1
    schedule = make_schedule("linear", 100)
    grid = plots.plot_forward_process(x0, schedule, [0, 10, 100])
    assert len(grid.axes) == 3 * 3
    assert [ax.get_title() for ax in grid.axes[:3]] == ["$x_{0}$", "$x_{10}$", "$x_{100}$"]
    shown_clean = grid.axes[0].images[0].get_array()
    assert abs(shown_clean.mean() - ((x0[0] + 1) / 2).mean().item()) < 1e-6
    views = plots.plot_forward_views(x0[0], schedule, [1, 50], seed=3)
    assert len(views.axes) == 2 * 3
    noise = torch.randn(x0[0].shape, generator=torch.Generator().manual_seed(3))
    x_50 = q_sample(schedule, x0[:1], torch.tensor([49]), noise[None])[0]  # after step 49
    shown = torch.as_tensor(views.axes[4].images[0].get_array())
    assert torch.allclose(shown, ((x_50.clamp(-1, 1) + 1) / 2).permute(1, 2, 0), atol=1e-6)
    assert views.axes[4].get_title() == "$x_{50}$"


def test_diffusion_process_has_a_column_per_timestep_and_a_row_per_sample():
    steps = {t: torch.zeros(8, 3, 28, 28) for t in (100, 50, 0)}
    fig = plots.plot_diffusion_process(steps, [100, 50, 0], num_samples=4)
    assert len(fig.axes) == 4 * 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["$x_{100}$", "$x_{50}$", "$x_{0}$"]


def test_examples_per_digit_draws_ten_rows():
    images = torch.randint(0, 256, (40, 3, 28, 28), dtype=torch.uint8)
    fig = plots.plot_examples_per_digit(images, [i % 10 for i in range(40)], per_digit=4)
    height, width, _ = fig.axes[0].images[0].get_array().shape
    assert (height, width) == (2 + 10 * 30, 2 + 4 * 30)  # make_grid: 2-pixel padding


def test_loss_curve_reads_the_log_and_smooths_it(tmp_path):
    log = tmp_path / "train_log.csv"
    log.write_text("step,epoch,loss\n" + "".join(f"{i},{i / 10},{1 / i}\n" for i in range(1, 101)))
    rows = plots.read_log(log)
    assert rows[0] == {"step": 1.0, "epoch": 0.1, "loss": 1.0}
    fig = plots.plot_loss_curve(rows, [{"step": 50.0, "eval_loss": 0.02}])
    raw, smooth, evaluation = fig.axes[0].lines
    assert len(raw.get_xdata()) == 100 and len(smooth.get_xdata()) == 100 - 2 + 1  # window 2
    assert list(evaluation.get_ydata()) == [0.02]
    assert len(plots.plot_loss_curve([]).axes[0].lines) == 1  # an empty log draws


def test_results_table_and_figure_pack(tmp_path):
    missing = missing_figures(tmp_path)
    assert len(missing) == 2 * len(MADE_BY)
    assert any("schedules.png" in m and "02_forward_diffusion" in m for m in missing)
    rows = [("parameters", "6,862,083"), ("FID", "not computed")]
    write_results_table(rows, tmp_path)
    assert {"results_table.csv", "results_table.md", "results_table.png",
            "results_table.pdf"} <= {p.name for p in tmp_path.iterdir()}
    with (tmp_path / "results_table.csv").open() as file:
        assert list(csv.reader(file)) == [["quantity", "value"], *map(list, rows)]
    assert "| FID | not computed |" in (tmp_path / "results_table.md").read_text()
    assert not any(name.startswith("results_table") for name in missing_figures(tmp_path))


def test_results_table_figure_holds_its_longest_label_and_value(tmp_path):
    rows = [("digit-FID (offline evaluator)", "12.345 (real-data floor 0.123)"),
            ("largest digit-share gap to MNIST", "4.2 points"), ("FID", "not computed: " * 4)]
    fig = write_results_table(rows, tmp_path)
    (text,) = fig.texts
    assert "largest digit-share gap to MNIST" in text.get_text()
    box = text.get_window_extent(fig.canvas.get_renderer())
    assert fig.bbox.contains(*box.min) and fig.bbox.contains(*box.max)
    assert fig.get_figwidth() > 5  # sized from the text, not fixed


class FakeHandle:
    def __init__(self):
        self.updates = 0

    def update(self, figure):
        self.updates += 1


def feed(plot, steps, flush_every, evaluate_at):
    for end in range(flush_every, steps + 1, flush_every):
        rows = [{"step": s, "epoch": s / steps, "loss": 1 / s}
                for s in range(end - flush_every + 1, end + 1)]
        plot({"kind": "loss", "rows": rows})
        if end in evaluate_at:
            plot({"kind": "eval", "step": end, "eval_loss": 0.1})


def test_live_loss_plot_redraws_a_short_run_often_and_at_its_end():
    plot = plots.LiveLossPlot(total_steps=64)
    plot.handle = FakeHandle()
    feed(plot, 64, flush_every=1, evaluate_at=())
    assert 20 <= plot.handle.updates <= 50
    assert plot.drawn == 64
    assert len(plot.figure.axes[0].lines[0].get_xdata()) == 64
    long_run = plots.LiveLossPlot(total_steps=10_000)
    long_run.handle = FakeHandle()
    feed(long_run, 10_000, flush_every=50, evaluate_at=(10_000,))
    assert 20 <= long_run.handle.updates <= 51 and long_run.drawn == 10_000


def test_live_loss_plot_follows_the_steps_a_time_budget_fixed():
    plot = plots.LiveLossPlot(total_steps=100_000)  # --epochs 400, cut by the budget
    plot.handle = FakeHandle()
    plot({"kind": "budget", "total_steps": 3_000})
    feed(plot, 3_000, flush_every=50, evaluate_at=())
    assert 20 <= plot.handle.updates <= 61  # not 0-1 redraws, as planned for 100,000 steps
    assert plot.drawn == 3_000
