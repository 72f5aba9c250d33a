"""Checkpoints (dicts, see ``train.checkpoint_state``): atomic writes, safe loads, checks."""

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .model import UNet, UNetConfig

#: Arguments that fix the network or the diffusion: a checkpoint fits only runs that agree.
MODEL_DEFINING_KEYS = ("image_size", "timesteps", "beta_start", "beta_end", "schedule",
                       "time_emb_dim", "base_dim")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, not ours, or from another configuration."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` beside ``path``, then rename: the old file or the new, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("wb") as file:
            torch.save({**state, "version": __version__}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (weights only, onto the CPU); :class:`CheckpointError` if unusable."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is a folder: give a .pt file in it")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: train one (ddpm_lib.train)")
    fix = "give one that python -m ddpm_lib.train wrote"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"checkpoint {path} holds Python objects besides tensors, which "
                              f"loading with weights_only=True refuses to run: {fix}") from None
    except Exception as error:
        raise CheckpointError(f"could not read checkpoint {path}: truncated, corrupt or not a "
                              f"PyTorch file ({type(error).__name__}); {fix}") from None
    missing = [key for key in ("model", "ema_model", "step", "config", "model_config", "version")
               if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path} is not a ddpm_lib checkpoint: it lacks {', '.join(missing)}")
    return state


def check_compatible(saved: dict[str, Any], requested: dict[str, Any], source: str | Path) -> None:
    """Refuse each model-defining value ``requested`` (None: any) that differs from ``saved``."""
    conflicts = [f"{key}={requested[key]!r} (checkpoint: {saved.get(key)!r})"
                 for key in MODEL_DEFINING_KEYS if requested.get(key) not in (None, saved.get(key))]
    if conflicts:
        raise CheckpointError(f"{source} was trained with another configuration: "
                              f"{'; '.join(conflicts)}; drop these flags or pick its checkpoint")


def build_model(state: dict[str, Any], weights: str = "ema", source: str | Path = "") -> UNet:
    """The UNet described by a checkpoint, with its EMA (``weights="ema"``) or raw weights."""
    model = UNet(UNetConfig(**state["model_config"]))
    try:
        model.load_state_dict(state[{"ema": "ema_model", "model": "model"}[weights]])
    except RuntimeError as error:
        raise CheckpointError(f"the weights in {source or 'the checkpoint'} do not fit its "
                              f"model_config: {str(error).splitlines()[0]}") from error
    if not all(weight.isfinite().all() for weight in model.parameters()):
        raise CheckpointError(f"{source or 'the checkpoint'} holds non-finite (NaN or inf) "
                              f"weights: its run diverged; sample from an earlier checkpoint")
    return model.eval()
