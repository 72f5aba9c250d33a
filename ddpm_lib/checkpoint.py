"""Checkpoints: written atomically, read with ``weights_only=True``, checked against a config.

A checkpoint is a plain dict (so ``torch.load(..., weights_only=True)`` reads it):

- ``model``, ``ema_model``: state dicts of the UNet and of its exponential moving average
- ``ema_num_averaged``: how many updates the EMA has seen
- ``optimizer``: the AdamW state
- ``step``, ``epoch``: optimizer steps taken, and the epoch they fall in
- ``config``: the training configuration (every command-line argument)
- ``model_config``: the :class:`~ddpm_lib.model.UNetConfig`
- ``eval_loss``, ``best_eval_loss``: the EMA's loss on the fixed evaluation batch
- ``version``: the ``ddpm_lib`` version that wrote it
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .model import UNet, UNetConfig

REQUIRED_KEYS = ("model", "ema_model", "step", "config", "model_config", "version")

MODEL_DEFINING_KEYS = (
    "image_size",
    "timesteps",
    "beta_start",
    "beta_end",
    "schedule",
    "time_emb_dim",
    "base_dim",
)
"""Arguments that fix the network or the diffusion: a checkpoint fits only runs that agree."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, not ours, or from another configuration."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    An interruption leaves either the old file or the new one, never a truncated checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**state, "version": __version__}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; :class:`CheckpointError` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; train one with python -m ddpm_lib.train "
            f"(it writes best_model.pt and last.pt into --checkpoint_dir)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"could not read checkpoint {path}: it is truncated, corrupt or not a PyTorch "
            f"checkpoint ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
        ) from error
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a ddpm_lib checkpoint: it lacks {', '.join(missing)}"
        )
    return state


def check_compatible(
    checkpoint_config: dict[str, Any], requested: dict[str, Any], source: str | Path
) -> None:
    """Raise :class:`CheckpointError` listing every model-defining value that disagrees.

    ``requested`` holds the values a user asked for; ``None`` means "take the checkpoint's".
    """
    conflicts = [
        f"{key}={requested[key]!r} (checkpoint: {checkpoint_config.get(key)!r})"
        for key in MODEL_DEFINING_KEYS
        if requested.get(key) is not None and requested[key] != checkpoint_config.get(key)
    ]
    if conflicts:
        raise CheckpointError(
            f"{source} was trained with another configuration: {'; '.join(conflicts)}. "
            f"Drop these flags to use the checkpoint's values, or pick a matching checkpoint."
        )


def build_model(state: dict[str, Any], weights: str = "ema", source: str | Path = "") -> UNet:
    """The UNet described by a checkpoint, with its EMA (``weights="ema"``) or raw weights."""
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    model = UNet(UNetConfig(**state["model_config"]))
    key = "ema_model" if weights == "ema" else "model"
    try:
        model.load_state_dict(state[key])
    except RuntimeError as error:
        raise CheckpointError(
            f"the weights in {source or 'the checkpoint'} do not fit the network its "
            f"model_config describes (written by ddpm_lib {state.get('version')}): "
            f"{str(error).splitlines()[0]}"
        ) from error
    return model.eval()
