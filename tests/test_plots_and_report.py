"""Figures: each plotting function draws, save_figure writes PNG and PDF, the pack is listed."""

import torch
from PIL import Image

from ddpm_lib import plots
from ddpm_lib.report import FIGURE_NAMES, missing_figures, write_results_table
from ddpm_lib.schedule import make_schedule


def test_save_figure_writes_a_300_dpi_png_and_a_pdf(tmp_path):
    fig = plots.plot_schedules({"linear": make_schedule("linear", 50)})
    png, pdf = plots.save_figure(fig, tmp_path / "figures" / "schedules")
    with Image.open(png) as image:
        assert round(image.info["dpi"][0]) == 300
    assert pdf.read_bytes().startswith(b"%PDF")


def test_forward_figures_have_a_panel_per_timestep():
    x0 = torch.rand(3, 3, 28, 28) * 2 - 1
    schedule = make_schedule("linear", 100)
    grid = plots.plot_forward_process(x0, schedule, [0, 10, 100])
    assert len(grid.axes) == 3 * 3
    views = plots.plot_forward_views(x0[0], schedule, [1, 50])
    assert len(views.axes) == 2 * 3
    single = plots.plot_forward_views(x0[0], schedule, [7])
    assert single.axes[1].get_title() == "x_t, t = 7"


def test_data_and_training_figures_draw(tmp_path):
    images = torch.randint(0, 256, (40, 3, 28, 28), dtype=torch.uint8)
    labels = [i % 10 for i in range(40)]
    assert len(plots.plot_examples_per_digit(images, labels, per_digit=4).axes) == 10
    assert plots.plot_class_counts({d: 4 for d in range(10)}).axes[0].patches
    assert plots.plot_pixel_histogram(images).axes[0].patches
    log = tmp_path / "train_log.csv"
    log.write_text("step,epoch,loss\n" + "".join(f"{i},{i / 10},{1 / i}\n" for i in range(1, 101)))
    rows = plots.read_log(log)
    assert rows[0] == {"step": 1.0, "epoch": 0.1, "loss": 1.0}
    fig = plots.plot_loss_curve(rows, [{"step": 50.0, "eval_loss": 0.02}])
    assert len(fig.axes[0].lines) == 3


def test_results_table_and_figure_pack(tmp_path):
    assert len(missing_figures(tmp_path)) == 2 * len(FIGURE_NAMES)
    written = write_results_table([("parameters", "6,862,083"), ("FID", "not computed")],
                                  tmp_path)
    assert {p.name for p in written} == {"results_table.csv", "results_table.md",
                                         "results_table.png", "results_table.pdf"}
    assert "| FID | not computed |" in (tmp_path / "results_table.md").read_text()
    assert not any(name.startswith("results_table") for name in missing_figures(tmp_path))


def test_quality_plots_draw_one_line_per_run(tmp_path):
    from ddpm_lib import plots

    curve = [{"wall_seconds": 30.0 * i, "digit_fid": 100.0 / i} for i in range(1, 5)]
    fig = plots.plot_quality_vs_time({"a": curve, "b": curve[:2]}, floor=1.08)
    assert [len(line.get_xdata()) for line in fig.axes[0].lines[:2]] == [4, 2]
    assert all(p.stat().st_size > 0 for p in plots.save_figure(fig, tmp_path / "q"))
