"""The noise-prediction network ε_θ(x_t, t): the assignment's UNet for 28×28 (or 32×32) RGB
images, with a sinusoidal time embedding, residual blocks with GroupNorm and SiLU, skips from
every encoder block to the decoder, and self-attention at the lowest resolution (7×7 = 49).
With ``patch_size`` p > 1 the network works on p×p patches folded into channels (28×28×3 →
14×14×12 for p = 2, as U-ViT and DiT do), and unfolds its output at the end. With
``num_classes`` > 0 it is ε_θ(x_t, t, c): a learned class embedding is added to the time
embedding (as in Dhariwal & Nichol 2021), the label -1 standing for "no class" (∅)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """Everything that fixes the network's shape; stored in every checkpoint."""

    image_size: int = 28
    image_channels: int = 3
    base_dim: int = 64
    time_emb_dim: int = 128
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_at_bottom: bool = True
    norm_groups: int = 8
    patch_size: int = 1
    num_classes: int = 0  # 0: unconditional (the assignment's network)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(self.channel_mults))
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise ValueError(f"channel_mults must be at least 1 each, got {self.channel_mults}")
        factor = self.patch_size * 2 ** (len(self.channel_mults) - 1)
        if self.image_size % factor:
            raise ValueError(f"image_size {self.image_size} must be divisible by {factor} (patch "
                             f"{self.patch_size}, channel_mults {self.channel_mults})")
        if self.time_emb_dim % 2:
            raise ValueError(f"time_emb_dim must be even, got {self.time_emb_dim}")
        for mult in self.channel_mults:
            if (self.base_dim * mult) % self.norm_groups:
                raise ValueError(f"base_dim × {mult} = {self.base_dim * mult} channels is not "
                                 f"divisible by norm_groups={self.norm_groups} (GroupNorm groups)")

    def to_dict(self) -> dict:
        """Plain types only, so a checkpoint loads with ``weights_only=True``."""
        return {**asdict(self), "channel_mults": list(self.channel_mults)}


def sinusoidal_time_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style encoding of the timestep (Vaswani et al. 2017, §3.5), (B,) → (B, dim):
    [sin(t / 10000^{2i/d}) for i < d/2, then cos(t / 10000^{2i/d}) for i < d/2]."""
    half = dim // 2
    exponents = torch.arange(half, device=timesteps.device, dtype=torch.float32) / half
    angles = timesteps.float()[:, None] * torch.exp(-math.log(10000.0) * exponents)[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResidualBlock(nn.Module):
    """h = conv(SiLU(GN(x))) + W·t_emb;  out = conv(SiLU(GN(h))) + skip(x)."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        same = in_channels == out_channels
        self.skip = nn.Identity() if same else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(time_emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions, with a residual connection."""

    def __init__(self, channels: int, groups: int, num_heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attention = nn.MultiheadAttention(channels, num_heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H·W, C)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return x + attended.transpose(1, 2).reshape(x.shape)


class Resample(nn.Module):
    """Halve the resolution (a strided 3×3 convolution) or double it (nearest, then 3×3)."""

    def __init__(self, channels: int, down: bool):
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(channels, channels, 3, stride=2 if down else 1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x if self.down else F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """ε_θ(x_t, t): predicts the noise in ``x_t`` (B, C, H, W) at integer timesteps ``t`` (B,);
    with ``num_classes`` > 0, ε_θ(x_t, t, c) for labels ``c`` (B,) in {0 … K-1} or -1 (∅).

    Encoder: at each resolution ``num_res_blocks`` residual blocks of width base_dim × mult,
    then a halving (except at the lowest). Middle: block, attention, block. Decoder: the mirror
    image, each block fed the concatenation of the previous output and one encoder output."""

    def __init__(self, config: UNetConfig | None = None, **overrides):
        super().__init__()
        self.config = config = config or UNetConfig(**overrides)
        groups = config.norm_groups
        time_dim = 4 * config.time_emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(config.time_emb_dim, time_dim), nn.SiLU(),
                                      nn.Linear(time_dim, time_dim))
        # K classes and ∅ (its last row): only a conditional net has it, so old checkpoints load
        self.class_embedding = (nn.Embedding(config.num_classes + 1, time_dim)
                                if config.num_classes else None)
        patch_channels = config.image_channels * config.patch_size**2
        self.input_conv = nn.Conv2d(patch_channels, config.base_dim, 3, padding=1)

        widths = [config.base_dim * mult for mult in config.channel_mults]
        self.encoder = nn.ModuleList()
        channels, skip_channels = config.base_dim, [config.base_dim]
        for level, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                self.encoder.append(ResidualBlock(channels, width, time_dim, groups))
                channels = width
                skip_channels.append(channels)
            if level < len(widths) - 1:
                self.encoder.append(Resample(channels, down=True))
                skip_channels.append(channels)

        self.middle_block1 = ResidualBlock(channels, channels, time_dim, groups)
        self.middle_attention = (SelfAttention(channels, groups) if config.attention_at_bottom
                                 else nn.Identity())
        self.middle_block2 = ResidualBlock(channels, channels, time_dim, groups)

        self.decoder = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(config.num_res_blocks + 1):
                inputs = channels + skip_channels.pop()
                self.decoder.append(ResidualBlock(inputs, width, time_dim, groups))
                channels = width
            if level > 0:
                self.decoder.append(Resample(channels, down=False))

        self.output = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                    nn.Conv2d(channels, patch_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        time_emb = self.time_mlp(sinusoidal_time_embedding(timesteps, self.config.time_emb_dim))
        if self.class_embedding is not None:  # emb(t) + emb(c); None or -1: ∅, row K
            labels = timesteps.new_full(timesteps.shape, -1) if labels is None else labels
            time_emb = time_emb + self.class_embedding(labels.where(labels >= 0,
                                                                    self.config.num_classes))
        elif labels is not None:
            raise ValueError("this UNet is unconditional (num_classes 0): it takes no labels")
        h = self.input_conv(F.pixel_unshuffle(x, self.config.patch_size))
        skips = [h]
        for layer in self.encoder:
            h = layer(h, time_emb) if isinstance(layer, ResidualBlock) else layer(h)
            skips.append(h)
        h = self.middle_block1(h, time_emb)
        h = self.middle_attention(h)
        h = self.middle_block2(h, time_emb)
        for layer in self.decoder:
            if isinstance(layer, ResidualBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), time_emb)
            else:
                h = layer(h)
        return F.pixel_shuffle(self.output(h), self.config.patch_size)

    def num_parameters(self, trainable_only: bool = True) -> int:
        """The number of (trainable) parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
