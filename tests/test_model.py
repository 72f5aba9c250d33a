"""The UNet: output shapes, configuration checks, the time embedding."""

import pytest
import torch

from ddpm_lib.model import UNet, UNetConfig, sinusoidal_time_embedding


@pytest.mark.parametrize(("batch", "size"), [(1, 28), (3, 28), (2, 32), (5, 32)])
def test_unet_keeps_the_image_shape(batch, size):
    model = UNet(image_size=size, base_dim=16, time_emb_dim=32)
    x = torch.randn(batch, 3, size, size)
    t = torch.randint(0, 1000, (batch,))
    assert model(x, t).shape == (batch, 3, size, size)


def test_default_unet_keeps_the_layout_of_trained_checkpoints():
    """Trained checkpoints exist: the assignment's UNet must keep its parameter count and the
    state-dict names they were saved under (sampled ones here, one of each kind of layer)."""
    model = UNet()
    assert model.config == UNetConfig()
    assert model.num_parameters() == 6_862_083
    keys = model.state_dict().keys()
    assert len(keys) == 214
    assert {"time_mlp.0.weight", "input_conv.weight", "encoder.0.time_proj.weight",
            "encoder.2.conv.weight", "encoder.3.skip.weight", "middle_attention.norm.weight",
            "middle_attention.attention.in_proj_weight", "decoder.3.conv.weight",
            "output.2.weight"} <= set(keys)


def test_output_depends_on_the_timestep():
    torch.manual_seed(0)
    model = UNet(base_dim=16, time_emb_dim=32)
    x = torch.randn(2, 3, 28, 28)
    early = model(x, torch.tensor([0, 0]))
    late = model(x, torch.tensor([900, 900]))
    assert not torch.allclose(early, late)


def test_time_embedding_layout():
    emb = sinusoidal_time_embedding(torch.tensor([0, 7]), 8)
    assert emb.shape == (2, 8)
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert emb[1, 0].item() == pytest.approx(torch.sin(torch.tensor(7.0)).item(), abs=1e-6)


@pytest.mark.parametrize(
    "overrides",
    [{"image_size": 30}, {"time_emb_dim": 33}, {"base_dim": 12, "norm_groups": 8}],
)
def test_impossible_configurations_are_refused_naming_the_setting(overrides):
    with pytest.raises(ValueError, match=next(iter(overrides))):
        UNetConfig(**overrides)


def test_a_patch_folded_unet_keeps_the_image_shape_and_folds_patches_into_channels():
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_dim=16, channel_mults=(1, 2), patch_size=2)).eval()
    x = torch.randn(2, 3, 28, 28)
    assert model(x, torch.tensor([0, 999])).shape == x.shape
    assert model.input_conv.in_channels == 12 and model.output[-1].out_channels == 12
    with pytest.raises(ValueError, match="patch 2"):
        UNetConfig(image_size=28, patch_size=2, channel_mults=(1, 2, 2))  # 7×7 cannot halve
