"""Training: files written, exact resume, clear refusals."""

import csv
import importlib
import math
import time
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch

from ddpm_lib import runtime
from ddpm_lib import train as train_module
from ddpm_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ddpm_lib.generate import load_for_sampling
from ddpm_lib.train import TrainConfig, train


def tiny_config(data_path: Path, out: Path, **overrides) -> TrainConfig:
    """A configuration that trains in seconds on the CPU: 40 images, 5 steps an epoch."""
    values = dict(
        data_path=str(data_path), epochs=2, batch_size=8, timesteps=50, base_dim=8,
        time_emb_dim=16, checkpoint_dir=str(out / "checkpoints"), sample_dir=str(out / "samples"),
        save_interval=1, sample_interval=4, sample_steps=3, num_eval_images=16, device="cpu",
    )
    values.update(overrides)
    return TrainConfig(**values)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_writes_checkpoints_logs_and_samples(tiny_mnist_rgb, tmp_path):
    events = []
    result = train(tiny_config(tiny_mnist_rgb, tmp_path), on_progress=events.append)
    logged = [row["step"] for event in events if event["kind"] == "loss" for row in event["rows"]]
    assert logged == list(range(1, 11))  # what the notebooks' LiveLossPlot draws
    evals = [(event["step"], event["eval_loss"]) for event in events if event["kind"] == "eval"]
    assert [step for step, _ in evals] == [5, 10] and evals[-1][1] == result.eval_loss
    checkpoints = tmp_path / "checkpoints"
    assert result.steps == 10 and result.epochs_completed == 2
    for name in ("last.pt", "best_model.pt", "checkpoint_epoch_0001.pt",
                 "checkpoint_epoch_0002.pt", "train_log.csv", "eval_log.csv"):
        assert (checkpoints / name).is_file(), name
    with open(checkpoints / "train_log.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert all(float(r["loss"]) > 0 for r in rows)
    samples = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert samples == ["samples_step_0000004.png", "samples_step_0000008.png",
                       "samples_step_0000010.png"]
    state = torch.load(checkpoints / "last.pt", weights_only=True)
    assert state["step"] == 10 and state["config"]["base_dim"] == 8
    assert state["version"] and state["model_config"]["base_dim"] == 8
    best = load_checkpoint(checkpoints / "best_model.pt")
    assert best["eval_loss"] == best["best_eval_loss"] == result.best_eval_loss
    assert "optimizer" not in best and "optimizer" in state


@pytest.mark.parametrize("stop_after", [5, 3], ids=["at an epoch end", "mid-epoch"])
def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_mnist_rgb, tmp_path, stop_after):
    schedule = dict(warmup_steps=2, lr_schedule="cosine")  # the learning rate's state resumes too
    whole = tiny_config(tiny_mnist_rgb, tmp_path / "whole", **schedule)
    train(whole)
    split = tiny_config(tiny_mnist_rgb, tmp_path / "split", max_steps=stop_after, **schedule)
    train(split)
    train(replace(split, max_steps=0, resume="last"))
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 10
    assert states_equal(a["model"], b["model"])
    assert states_equal(a["ema_model"], b["ema_model"])
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    assert a["lr_scheduler"] == b["lr_scheduler"]
    with open(tmp_path / "split" / "checkpoints" / "train_log.csv") as file:
        assert [int(r["step"]) for r in csv.DictReader(file)] == list(range(1, 11))


def test_an_interrupted_save_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_ctrl_c_saves_last_pt_to_resume_from(tiny_mnist_rgb, tmp_path, monkeypatch):
    real_step, calls = train_module.optimization_step, []

    def interrupted_at_the_fourth(*args, **kwargs):
        calls.append(len(calls))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "optimization_step", interrupted_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_mnist_rgb, tmp_path))
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 3 and "optimizer" in state and "lr_scheduler" in state
    with open(tmp_path / "checkpoints" / "train_log.csv") as file:
        assert [int(r["step"]) for r in csv.DictReader(file)] == [1, 2, 3]


def test_resume_refuses_a_checkpoint_of_another_configuration(tiny_mnist_rgb, tmp_path):
    config = tiny_config(tiny_mnist_rgb, tmp_path, epochs=1)
    train(config)
    with pytest.raises(CheckpointError, match="base_dim=16 \\(checkpoint: 8\\)"):
        train(replace(config, base_dim=16, resume="last"))


def test_best_model_cannot_resume_and_says_what_can(tiny_mnist_rgb, tmp_path):
    config = tiny_config(tiny_mnist_rgb, tmp_path, epochs=1)
    train(config)
    best = str(tmp_path / "checkpoints" / "best_model.pt")
    with pytest.raises(CheckpointError, match="resume from last.pt"):
        train(replace(config, epochs=2, resume=best))


def test_a_new_run_refuses_to_overwrite_an_earlier_one(tiny_mnist_rgb, tmp_path):
    config = tiny_config(tiny_mnist_rgb, tmp_path, epochs=1)
    train(config)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"last\.pt exists.*--resume"):
        train(config)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("kept", ["checkpoints/best_model.pt", "checkpoints/train_log.csv",
                                  "checkpoints/checkpoint_epoch_0001.pt",
                                  "samples/samples_step_0000004.png"])
def test_any_file_of_an_earlier_run_makes_a_new_run_refuse(tiny_mnist_rgb, tmp_path, kept):
    config = tiny_config(tiny_mnist_rgb, tmp_path, epochs=1)
    train(config)
    for path in [*tmp_path.glob("checkpoints/*"), *tmp_path.glob("samples/*")]:
        if path.relative_to(tmp_path).as_posix() != kept:
            path.unlink()
    before = (tmp_path / kept).read_bytes()
    resume = "--resume" if kept.endswith(".pt") else "choose another --checkpoint_dir"
    with pytest.raises(ValueError, match=rf"{Path(kept).name} exists.*{resume}"):
        train(config)
    assert (tmp_path / kept).read_bytes() == before


def test_an_empty_checkpoint_file_gets_a_clear_error(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: truncated"):
        load_checkpoint(tmp_path / "empty.pt")


@pytest.mark.parametrize("module", ["train", "generate", "evaluator", "fid"])
@pytest.mark.parametrize("device", ["nonsense", "cuda:0"])
def test_an_unusable_device_is_refused_in_one_line(module, device, tmp_path):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args = {"train": ["--data_path", str(tmp_path)], "evaluator": [str(tmp_path)],
            "generate": ["--checkpoint", str(tmp_path / "x.pt")], "fid": ["--check", str(tmp_path)]}
    main = importlib.import_module(f"ddpm_lib.{module}").main
    with pytest.raises(SystemExit, match=rf"error: --device '?{device}'?"):
        main([*args[module], "--device", device])


def test_a_gpu_this_machine_lacks_is_refused_before_cuda_sees_it(monkeypatch):
    """On a pretend one-GPU machine: cuda:7, and a second process's cuda, are named (on the
    H200 of call 13, cuda:7 died with a driver traceback); cuda alone is the process's GPU."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    with pytest.raises(ValueError, match=r"--device cuda:7: .*cuda:7, but PyTorch sees 1 GPU"):
        runtime.pick_device("cuda:7")
    with pytest.raises(ValueError, match=r"--device auto: .*cuda:1, but PyTorch sees 1 GPU"):
        runtime.pick_device("auto", local_rank=1)
    assert runtime.pick_device("cuda") == torch.device("cuda", 0) and chosen == [0]


def test_one_gpu_named_for_every_torchrun_process_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(runtime, "pick_device", lambda *args: torch.device("cuda", 0))
    config = TrainConfig(data_path=str(tmp_path), device="cuda:0")
    with pytest.raises(ValueError, match=r"--device cuda:0 under torchrun: give --device cuda"):
        train_module.Training(config)


def test_a_corrupt_checkpoint_gets_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "model": {}}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a ddpm_lib checkpoint"):
        save_checkpoint({"step": 1}, path)
        load_checkpoint(path)


def test_command_line_reports_bad_input_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit, match="error: .*missing"):
        train_module.main(["--data_path", str(tmp_path / "missing"), "--device", "cpu",
                           "--checkpoint_dir", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match="--batch_size 64 .* 40"):
        pass_through = tmp_path / "data"
        from conftest import write_digit_folder

        write_digit_folder(pass_through)
        train_module.main(["--data_path", str(pass_through), "--batch_size", "64",
                           "--device", "cpu", "--checkpoint_dir", str(tmp_path / "c")])


def test_command_line_keeps_the_assignment_defaults():
    args = train_module.build_parser().parse_args([])
    assert (args.data_path, args.image_size, args.timesteps, args.beta_start, args.beta_end,
            args.time_emb_dim, args.base_dim, args.epochs, args.batch_size, args.lr,
            args.checkpoint_dir, args.sample_dir, args.save_interval, args.sample_interval) == (
        "./data/mnist_rgb", 28, 1000, 0.0001, 0.02, 128, 64, 100, 128, 2e-4,
        "./checkpoints", "./samples", 10, 500)
    assert args.resume is None
    assert train_module.build_parser().parse_args(["--resume"]).resume == "last"


def test_ema_warms_up_then_keeps_its_decay():
    from ddpm_lib.train import ema_update_with_warmup

    update = ema_update_with_warmup(0.999)
    average, value = [torch.zeros(1)], [torch.ones(1)]
    update(average, value, torch.tensor(0))  # β = 1/10: the average moves 90 % of the way
    assert average[0].item() == pytest.approx(0.9)
    average = [torch.zeros(1)]
    update(average, value, torch.tensor(100_000))  # β = min(0.999, …) = 0.999
    assert average[0].item() == pytest.approx(0.001, rel=1e-4)  # β in float32


def test_recipe_sets_defaults_and_explicit_flags_win(monkeypatch):
    seen = {}
    monkeypatch.setattr(train_module, "train", lambda config: seen.setdefault("config", config))
    name, recipe = next((n, r) for n, r in train_module.RECIPES.items() if "epochs" in r)
    explicit_epochs = recipe["epochs"] + 1
    train_module.main(["--recipe", name, "--epochs", str(explicit_epochs)])
    config = seen["config"]
    assert (config.recipe, config.epochs) == (name, explicit_epochs)  # given explicitly: kept
    assert all(getattr(config, key) == value for key, value in recipe.items() if key != "epochs")
    untouched = [f.name for f in fields(TrainConfig) if f.name not in recipe and f.name != "recipe"]
    assert all(getattr(config, key) == getattr(TrainConfig(), key) for key in untouched)
    assert train_module.TrainConfig.from_recipe(name, lr=3e-4).lr == 3e-4
    assert train_module.TrainConfig.from_recipe("assignment") == train_module.TrainConfig()
    with pytest.raises(ValueError, match="--recipe"):
        train_module.TrainConfig.from_recipe("slow")


def test_every_config_field_is_a_flag_with_help_and_its_default():
    parser = train_module.build_parser()
    actions = {action.dest: action for action in parser._actions if action.dest != "help"}
    assert set(actions) == {f.name for f in fields(TrainConfig)}
    assert all(actions[f.name].help and actions[f.name].default == f.default
               for f in fields(TrainConfig))
    assert parser.parse_args(["--lr", "1e-3", "--timesteps", "20"]).lr == 1e-3
    assert parser.parse_args(["--class_conditional"]).class_conditional is True  # a switch
    assert parser.parse_args([]).class_conditional is False


@pytest.mark.parametrize("flag, value", [("lr", "0"), ("schedule", "quadratic"),
                                         ("ema_decay", "1.0"), ("recipe", "slow")])
def test_a_bad_flag_is_refused_in_one_line_naming_it(flag, value):
    with pytest.raises(SystemExit) as refusal:
        train_module.main([f"--{flag}", value])
    message = str(refusal.value.code)
    assert message.startswith("error: ") and f"--{flag}" in message and "\n" not in message


def learning_rates(config: TrainConfig, total_steps: int) -> list[float]:
    """The learning rate each of ``total_steps`` optimizer steps uses under ``config``."""
    from ddpm_lib.train import learning_rate_schedule

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    schedule = learning_rate_schedule(optimizer, config, total_steps)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_learning_rate_warms_up_then_follows_its_schedule():
    constant = learning_rates(TrainConfig(lr=1e-3, warmup_steps=10), 100)
    assert constant[0] == pytest.approx(1e-4) and constant[9] == pytest.approx(1e-3)
    assert constant[10:] == [pytest.approx(1e-3)] * 90
    cosine = learning_rates(TrainConfig(lr=1e-3, warmup_steps=10, lr_schedule="cosine"), 110)
    assert cosine[:10] == pytest.approx([1e-4 * (s + 1) for s in range(10)])
    assert cosine[10] == pytest.approx(1e-3)
    assert cosine[60] == pytest.approx(5e-4)  # half way: cos(π/2) = 0
    assert 0 < cosine[109] < 1e-6  # one step short of zero
    assert cosine[10:] == sorted(cosine[10:], reverse=True)
    assert learning_rates(TrainConfig(lr=2e-4), 10) == [2e-4] * 10  # the assignment's: constant


def test_cuda_graphs_compile_with_reduce_overhead_and_probe_until_replayed(monkeypatch, capsys):
    """cuda_graphs=True asks for mode="reduce-overhead" and runs the probe three times (the
    graphs are recorded on a later call than the first), each after next_step(); a failure on
    the third call, where a replay would first happen, still falls back to the eager network."""
    from ddpm_lib import runtime

    network = torch.nn.Conv2d(3, 3, 1)
    calls, marks = [], []
    monkeypatch.setattr(runtime.torch.compiler, "cudagraph_mark_step_begin",
                        lambda: marks.append(len(calls)))

    def fake_compile(module, fail_on=None, **kwargs):
        calls.append(("compile", kwargs))

        def forward(*args):
            calls.append("forward")
            if calls.count("forward") == fail_on:
                raise RuntimeError("replay failed")
            return module(*args)
        return forward

    example = (torch.zeros(2, 3, 4, 4),)
    monkeypatch.setattr(runtime.torch, "compile", fake_compile)
    compiled = runtime.compile_with_fallback(network, example, backward=True, cuda_graphs=True)
    assert compiled is not network
    assert calls[0] == ("compile", {"dynamic": False, "mode": "reduce-overhead"})
    assert calls[1:] == ["forward"] * 3 and marks == [1, 2, 3]
    assert all(p.grad is None for p in network.parameters())  # the probes' gradients dropped

    calls.clear()
    runtime.compile_with_fallback(network, example, backward=False)
    assert calls == [("compile", {"dynamic": False, "mode": None}), "forward"]

    calls.clear()
    monkeypatch.setattr(runtime.torch, "compile",
                        lambda module, **kwargs: fake_compile(module, fail_on=3, **kwargs))
    assert runtime.compile_with_fallback(network, example, backward=True,
                                         cuda_graphs=True) is network
    assert calls.count("forward") == 3 and "running eagerly" in capsys.readouterr().out


def test_compile_failure_falls_back_to_the_eager_network(monkeypatch, capsys):
    from ddpm_lib import runtime

    class Broken(torch.nn.Module):
        def forward(self, *args):
            raise RuntimeError("no Triton here")

    monkeypatch.setattr(runtime.torch, "compile", lambda module, **kwargs: Broken())
    network = torch.nn.Conv2d(3, 3, 1)
    example = (torch.zeros(2, 3, 4, 4),)
    assert runtime.compile_with_fallback(network, example, backward=True) is network
    assert all(p.grad is None for p in network.parameters())
    assert "running eagerly" in capsys.readouterr().out
    assert runtime.compile_with_fallback(network, example, backward=False, enabled=False) \
        is network
    assert runtime.should_compile("auto", torch.device("cpu")) is False
    assert runtime.should_compile("yes", torch.device("cpu")) is True


def test_eval_interval_evaluates_every_n_epochs_and_at_save_epochs_and_the_end(
        tiny_mnist_rgb, tmp_path):
    """eval_interval 2, save_interval 3, 5 epochs: evaluations after epochs 2, 3, 4 and 5 (the
    last), each row with the wall time since the run began, which a resumed run carries on."""
    config = tiny_config(tiny_mnist_rgb, tmp_path, epochs=5, eval_interval=2, save_interval=3,
                         max_steps=20)
    train(config)
    train(replace(config, max_steps=0, resume="last"))
    with open(tmp_path / "checkpoints" / "eval_log.csv") as file:
        rows = list(csv.DictReader(file))
    assert [float(r["epoch"]) for r in rows] == [2, 3, 4, 5]
    seconds = [float(r["wall_seconds"]) for r in rows]
    assert seconds == sorted(seconds) and seconds[0] > 0
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint_epoch_*.pt"))
    assert kept == ["checkpoint_epoch_0003.pt"]


@pytest.mark.parametrize("flag, value", [("eval_interval", 0), ("min_snr_gamma", -1.0)])
def test_impossible_interval_or_weighting_is_refused_naming_the_flag(
        tiny_mnist_rgb, tmp_path, flag, value):
    with pytest.raises(ValueError, match=f"--{flag}"):
        train(tiny_config(tiny_mnist_rgb, tmp_path, **{flag: value}))


def test_a_non_finite_loss_stops_training_and_keeps_the_good_checkpoints(
        tiny_mnist_rgb, tmp_path, monkeypatch):
    config = tiny_config(tiny_mnist_rgb, tmp_path)  # 5 steps an epoch, evaluated at step 5
    real_step, calls = train_module.optimization_step, []

    def step_that_diverges_at_step_7(*args, **kwargs):
        calls.append(1)
        loss = real_step(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 7 else loss

    monkeypatch.setattr(train_module, "optimization_step", step_that_diverges_at_step_7)
    with pytest.raises(ValueError, match=r"nan at step 7: training diverged.*--lr"):
        train(config)
    checkpoints = tmp_path / "checkpoints"
    assert load_checkpoint(checkpoints / "last.pt")["step"] == 5
    assert load_checkpoint(checkpoints / "best_model.pt")["step"] == 5
    assert not (checkpoints / "checkpoint_epoch_0002.pt").exists()


def test_a_learning_rate_that_diverges_exits_non_zero_naming_lr(tiny_mnist_rgb, tmp_path):
    args = ["--data_path", str(tiny_mnist_rgb), "--device", "cpu", "--lr", "1e6",
            "--epochs", "2", "--batch_size", "8", "--base_dim", "8", "--time_emb_dim", "16",
            "--timesteps", "50", "--num_eval_images", "16", "--sample_steps", "3",
            "--checkpoint_dir", str(tmp_path / "ck"), "--sample_dir", str(tmp_path / "s")]
    with pytest.raises(SystemExit, match=r"error: .*training diverged.*--lr") as stopped:
        train_module.main(args)
    assert stopped.value.code != 0
    for path in (tmp_path / "ck").glob("*.pt"):  # whatever was saved before is finite
        state = load_checkpoint(path)
        assert all(t.isfinite().all() for t in state["ema_model"].values())


def test_sampling_refuses_a_checkpoint_with_non_finite_weights(tiny_mnist_rgb, tmp_path):
    train(tiny_config(tiny_mnist_rgb, tmp_path, epochs=1))
    state = load_checkpoint(tmp_path / "checkpoints" / "best_model.pt")
    next(iter(state["ema_model"].values()))[0] = float("nan")
    save_checkpoint(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"nan\.pt holds non-finite"):
        load_for_sampling(tmp_path / "nan.pt")


def test_a_digit_folder_without_images_is_refused_before_training(tiny_mnist_rgb, tmp_path):
    for path in (tiny_mnist_rgb / "7").glob("*.png"):
        path.unlink()
    with pytest.raises(ValueError, match=r"digit\(s\) \[7\]"):
        train(tiny_config(tiny_mnist_rgb, tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_a_truncated_png_is_named_before_training(tiny_mnist_rgb, tmp_path):
    broken = sorted((tiny_mnist_rgb / "3").glob("*.png"))[0]
    broken.write_bytes(broken.read_bytes()[:60])
    with pytest.raises(ValueError, match=rf"cannot read .*{broken.name}"):
        train(tiny_config(tiny_mnist_rgb, tmp_path))


@pytest.mark.parametrize("change", [{"lr": 1e-2}, {"batch_size": 4}, {"ema_decay": 0.9},
                                    {"epochs": 3}])  # epochs: the cosine decay is planned on them
def test_resume_refuses_changed_optimisation_flags_naming_them(tiny_mnist_rgb, tmp_path, change):
    config = tiny_config(tiny_mnist_rgb, tmp_path, epochs=1, lr_schedule="cosine")
    train(config)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=rf"--{next(iter(change))} .*\(checkpoint: "):
        train(replace(config, resume="last", **change))
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_may_extend_a_constant_rate_run(tiny_mnist_rgb, tmp_path):
    config = tiny_config(tiny_mnist_rgb, tmp_path, epochs=1)
    train(config)
    assert train(replace(config, epochs=2, resume="last")).steps == 10


def test_a_time_budget_cuts_the_epochs_and_ends_the_learning_rate_at_zero(tiny_mnist_rgb,
                                                                             tmp_path, capsys):
    config = tiny_config(tiny_mnist_rgb, tmp_path, epochs=50, lr_schedule="cosine",
                         time_budget=1e-4)  # 6 ms: only the first epoch fits
    events = []
    result = train(config, on_progress=events.append)
    assert result.steps == 5
    assert "--time_budget 0.0001 min: 1 epochs (5 steps) fit" in capsys.readouterr().out
    assert {"kind": "budget", "total_steps": 5} in events  # the notebook's live plot follows it
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["config"]["epochs"] == 1  # the step count that ran, to repeat it exactly
    assert state["lr_scheduler"]["_last_lr"] == [0.0]  # the cosine decay fitted to 5 steps
    assert (tmp_path / "checkpoints" / "best_model.pt").is_file()
    resumed = train(replace(config, resume="last"))  # the budget's epochs, not --epochs 50
    assert resumed.steps == 5
    with pytest.raises(ValueError, match="--time_budget 10: .* with --time_budget 0.0001"):
        train(replace(config, resume="last", time_budget=10.0))  # a budget is fitted once


def test_a_budget_new_to_a_resumed_run_is_refused_not_ignored(tiny_mnist_rgb, tmp_path):
    config = tiny_config(tiny_mnist_rgb, tmp_path, epochs=1)
    train(config)
    with pytest.raises(ValueError, match="--time_budget 10: .* without --time_budget"):
        train(replace(config, epochs=3, resume="last", time_budget=10.0))
    assert train(replace(config, epochs=2, resume="last")).steps == 10  # --epochs still rules


@pytest.mark.parametrize("flag, value", [
    ("lr", math.nan), ("time_budget", math.inf), ("ema_decay", math.nan), ("beta_start", math.nan),
    ("label_dropout", math.nan), ("grad_clip", -1.0), ("grad_clip", math.nan),
    ("weight_decay", -1.0), ("max_steps", -5), ("max_images", -3), ("beta_end", 2.0)])
def test_impossible_numbers_are_refused_before_any_work(tmp_path, flag, value):
    with pytest.raises(ValueError, match=f"--{flag}|{flag}={value}") as refusal:
        tiny_config(tmp_path / "absent", tmp_path, **{flag: value})
    assert str(value) in str(refusal.value)


@pytest.mark.parametrize(("budget", "compiled"), [(2.0, False), (5.0, True), (0.0, True)])
def test_a_short_budget_trains_eagerly_where_it_would_compile(tiny_mnist_rgb, tmp_path,
                                                                monkeypatch, budget, compiled):
    """Compiling takes 1.3-1.6 min on a fresh H100: under 3 minutes, --compile auto skips it."""
    monkeypatch.setattr(runtime, "should_compile", lambda *args: True)  # as on a GPU
    monkeypatch.setattr(train_module, "compile_with_fallback", lambda model, *a, **k: "compiled")
    config = tiny_config(tiny_mnist_rgb, tmp_path, time_budget=budget)
    training = train_module.Training(config)
    assert (training.trained == "compiled") == compiled


def test_resuming_a_finished_run_says_there_is_nothing_to_train(tiny_mnist_rgb, tmp_path,
                                                                  capsys):
    config = tiny_config(tiny_mnist_rgb, tmp_path, epochs=1)
    train(config)
    assert train(replace(config, resume="last")).steps == 5
    out = capsys.readouterr().out
    assert "nothing to train" in out and "last.pt is at step 5" in out


def test_a_generous_time_budget_changes_nothing(tiny_mnist_rgb, tmp_path):
    budget = train(tiny_config(tiny_mnist_rgb, tmp_path / "a", time_budget=60.0))
    plain = train(tiny_config(tiny_mnist_rgb, tmp_path / "b"))
    assert budget.steps == plain.steps == 10
    assert states_equal(load_checkpoint(tmp_path / "a/checkpoints/last.pt")["model"],
                        load_checkpoint(tmp_path / "b/checkpoints/last.pt")["model"])


def test_the_budget_times_its_steps_after_the_first_ones(tiny_mnist_rgb, tmp_path, monkeypatch):
    """A slow first step (compiling, first replays) must not count as the loop's speed."""
    step, timed = train_module.optimization_step, []
    def slow_first_step(*args, **kwargs):
        if not timed:
            time.sleep(5.0)
            timed.append("slept")
        return step(*args, **kwargs)
    fit = train_module.Training.fit_time_budget
    def spy(self, seconds_per_step):
        timed.append(seconds_per_step)
        return fit(self, seconds_per_step)
    monkeypatch.setattr(train_module, "optimization_step", slow_first_step)
    monkeypatch.setattr(train_module.Training, "fit_time_budget", spy)
    train(tiny_config(tiny_mnist_rgb, tmp_path, time_budget=60.0))  # fitted at step 5 of 5
    assert timed[0] == "slept" and len(timed) == 2
    assert timed[1] < 1.0  # steps 2 → 5: the 5 s of step 1 would make it ≥ 1.25 s a step


@pytest.mark.parametrize("flag", ["checkpoint_dir", "sample_dir"])
def test_an_unwritable_output_folder_is_refused_before_any_image_is_loaded(
        tiny_mnist_rgb, tmp_path, monkeypatch, flag):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(train_module.MnistRGBFolder, "load_all",
                        lambda *args, **kwargs: pytest.fail("loaded the images first"))
    with pytest.raises(ValueError, match=f"--{flag} {blocker}/run"):
        train(tiny_config(tiny_mnist_rgb, tmp_path, **{flag: str(blocker / "run")}))


@pytest.mark.parametrize(("capability", "expected"), [((9, 0), "bf16"), ((8, 0), "bf16"),
                                                      ((7, 5), "fp16"), ((6, 1), "fp16")])
def test_auto_precision_is_bf16_from_compute_capability_8_and_fp16_below(
        monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert runtime.resolve_precision("auto", torch.device("cuda")) == expected
    assert runtime.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert runtime.resolve_precision("fp32", torch.device("cuda")) == "fp32"


@pytest.mark.parametrize(("capability", "precision", "compiles"), [
    ((9, 0), "auto", True), ((7, 5), "auto", True), ((7, 5), "bf16", False),
    ((6, 1), "fp16", False)])
def test_compiling_only_where_inductor_supports_the_gpu_and_dtype(
        monkeypatch, capsys, capability, precision, compiles):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert runtime.should_compile("auto", torch.device("cuda"), precision) is compiles
    said = capsys.readouterr().out
    assert ("running eagerly" in said) is not compiles and said.count("\n") <= 1


def test_fp16_training_scales_its_loss_and_resumes_the_scaler_exactly(tiny_mnist_rgb, tmp_path):
    unbroken = train(tiny_config(tiny_mnist_rgb, tmp_path / "a", precision="fp16"))
    config = tiny_config(tiny_mnist_rgb, tmp_path / "b", precision="fp16")
    train(replace(config, max_steps=3))
    stopped = load_checkpoint(tmp_path / "b/checkpoints/last.pt")
    assert stopped["grad_scaler"]["scale"] > 1  # the loss was scaled: fp16 gradients
    resumed = train(replace(config, resume="last"))
    a, b = (load_checkpoint(tmp_path / name / "checkpoints/last.pt") for name in "ab")
    assert unbroken.steps == resumed.steps == 10 and a["grad_scaler"] == b["grad_scaler"]
    assert states_equal(a["model"], b["model"])


def test_resume_refuses_another_network_before_loading_its_weights(tiny_mnist_rgb, tmp_path):
    config = tiny_config(tiny_mnist_rgb, tmp_path, epochs=1)
    train(config)
    with pytest.raises(ValueError, match=r"another network: channel_mults \[1, 2\]"):
        train(replace(config, resume="last", channel_mults=(1, 2)))


def test_resuming_another_folders_checkpoint_never_overwrites_a_run(tiny_mnist_rgb, tmp_path):
    first = tiny_config(tiny_mnist_rgb, tmp_path / "first", epochs=1)
    second = tiny_config(tiny_mnist_rgb, tmp_path / "second", epochs=1)
    train(first)
    train(second)
    before = (tmp_path / "second" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ValueError, match="resumed from .*first.* would overwrite"):
        train(replace(second, resume=str(tmp_path / "first" / "checkpoints" / "last.pt")))
    assert (tmp_path / "second" / "checkpoints" / "last.pt").read_bytes() == before
    forked = tiny_config(tiny_mnist_rgb, tmp_path / "fork", epochs=2)  # an empty folder: fine
    assert train(replace(forked, resume=str(tmp_path / "first" / "checkpoints" / "last.pt"))
                 ).steps == 10


@pytest.mark.parametrize("overrides, words", [
    ({"base_dim": 0}, "--base_dim must be at least 1"),
    ({"time_emb_dim": 0}, "--time_emb_dim must be at least 2"),
    ({"channel_mults": (-1, 2)}, "channel_mults must be at least 1"),
    ({"device": "meta"}, "--device 'meta'")])
def test_impossible_networks_and_devices_are_refused_before_any_file(tiny_mnist_rgb, tmp_path,
                                                                     overrides, words):
    with pytest.raises(ValueError, match=words):
        train(tiny_config(tiny_mnist_rgb, tmp_path, **overrides))
    assert not (tmp_path / "checkpoints").exists()


def test_more_evaluation_images_than_training_images_says_so(tiny_mnist_rgb, tmp_path, capsys):
    train(tiny_config(tiny_mnist_rgb, tmp_path, num_eval_images=5000, max_steps=1))
    assert "--num_eval_images 5000: the evaluation batch is all 40" in capsys.readouterr().out


def test_a_run_stopped_by_max_steps_says_so_on_resume(tiny_mnist_rgb, tmp_path, capsys):
    config = tiny_config(tiny_mnist_rgb, tmp_path, max_steps=3)
    train(config)
    out = capsys.readouterr().out
    assert "process(es), fp32)" in out  # the precision that runs is announced
    train(replace(config, resume="last"))
    assert "nothing to train" in (out := capsys.readouterr().out) and "--max_steps 3" in out


def test_a_run_that_saved_no_checkpoint_is_not_sent_to_resume(tiny_mnist_rgb, tmp_path):
    config = tiny_config(tiny_mnist_rgb, tmp_path, sample_interval=99)
    with pytest.raises(ValueError, match=r"at step \d+: .*no checkpoint was written"):
        train(replace(config, lr=1e30, grad_clip=0.0))
    assert not list((tmp_path / "checkpoints").glob("*.pt"))  # only its logs are left
    with pytest.raises(ValueError, match=r"exists: .* files; choose another --checkpoint_dir") \
            as refused:
        train(config)
    assert "--resume" not in str(refused.value)


def test_resume_cleans_up_refuses_other_data_and_names_what_changed(tiny_mnist_rgb, tmp_path,
                                                                    capsys):
    config = tiny_config(tiny_mnist_rgb, tmp_path)
    train(replace(config, max_steps=7))
    leftover = tmp_path / "checkpoints" / ".checkpoint_epoch_0002.pt.tmp"
    leftover.write_bytes(b"cut short by a kill")
    from conftest import write_digit_folder
    other = write_digit_folder(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match=r"--data_path .*other: its images are not those"):
        train(replace(config, resume="last", data_path=str(other)))
    with pytest.raises(ValueError, match=r"--epochs 1: the checkpoint is already at epoch 1.40"):
        train(replace(config, resume="last", epochs=1))
    capsys.readouterr()
    assert train(replace(config, resume="last", epochs=3)).steps == 15
    assert "--epochs 3 (was 2)" in capsys.readouterr().out and not leftover.exists()


def test_a_final_evaluation_cut_short_is_made_on_resume(tiny_mnist_rgb, tmp_path, capsys):
    config = tiny_config(tiny_mnist_rgb, tmp_path)
    train(config)
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "best_model.pt").unlink()  # as if Ctrl-C hit during the last evaluation
    log = (checkpoints / "eval_log.csv").read_text().splitlines()
    (checkpoints / "eval_log.csv").write_text("\n".join(log[:-1]) + "\n")
    capsys.readouterr()
    assert train(replace(config, resume="last")).steps == 10
    assert (checkpoints / "best_model.pt").is_file()
    assert (checkpoints / "eval_log.csv").read_text().splitlines()[-1].startswith("10,")
    train(replace(config, resume="last"))  # now nothing is missing
    assert "best_model.pt is ready" in capsys.readouterr().out


def test_a_folder_another_live_run_trains_into_is_refused(tiny_mnist_rgb, tmp_path):
    import socket
    import subprocess
    import sys
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / ".run.lock").write_text(f"{other.pid} {socket.gethostname()}")
        with pytest.raises(ValueError, match=rf"in use by another run \(process {other.pid}\)"):
            train(tiny_config(tiny_mnist_rgb, tmp_path))
    finally:
        other.kill()
        other.wait()
    assert train(tiny_config(tiny_mnist_rgb, tmp_path)).steps == 10  # its run is gone
    assert not (tmp_path / "checkpoints" / ".run.lock").exists()


@pytest.mark.parametrize(("overrides", "named"), [
    ({"sample_sampler": "foo"}, "--sample_sampler must be one of"),
    ({"sample_dir": "DATA/samples"}, "--sample_dir .* is inside --data_path"),
    ({"checkpoint_dir": "DATA"}, "--checkpoint_dir .* is inside --data_path"),
    ({"checkpoint_dir": ""}, "--checkpoint_dir is empty")])
def test_grid_settings_and_folders_are_checked_before_training(tiny_mnist_rgb, tmp_path,
                                                               overrides, named):
    overrides = {key: value.replace("DATA", str(tiny_mnist_rgb))
                 for key, value in overrides.items() if isinstance(value, str)} or overrides
    with pytest.raises(ValueError, match=named):
        tiny_config(tiny_mnist_rgb, tmp_path, **overrides)


def test_grid_steps_above_the_timesteps_are_capped_not_fatal(tiny_mnist_rgb, tmp_path):
    """--timesteps 20 with the default --sample_steps 50 once failed after all the training."""
    train(tiny_config(tiny_mnist_rgb, tmp_path, timesteps=20, sample_steps=50, max_steps=4))
    assert (tmp_path / "samples" / "samples_step_0000004.png").is_file()
