"""``scripts/train_toy.py``'s widening of a trained VAE to more latent channels (toy v3).

The widened VAE must decode exactly what the narrow one did (so training starts from the
trained model, not from noise), and the old channels must stay the first ones.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture(scope="module")
def train_toy():
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield importlib.import_module("train_toy")
    finally:
        sys.path.remove(str(SCRIPTS))


def small_vae(channels: int, seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=channels,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )


def test_widened_vae_decodes_what_the_narrow_one_did(train_toy, tmp_path):
    narrow = small_vae(4, seed=0).eval()
    narrow.save_pretrained(tmp_path / "narrow", safe_serialization=True)
    wide = small_vae(16, seed=1)
    train_toy.widen_vae(wide, tmp_path / "narrow")
    wide.eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        z_narrow = narrow.encode(x).latent_dist
        z_wide = wide.encode(x).latent_dist
        torch.testing.assert_close(z_wide.mean[:, :4], z_narrow.mean)
        torch.testing.assert_close(z_wide.logvar[:, :4], z_narrow.logvar)
        torch.testing.assert_close(
            wide.decode(z_wide.mean).sample, narrow.decode(z_narrow.mean).sample, atol=1e-5, rtol=0
        )
        # The new channels carry something (their means are the fresh initialisation's) but
        # are read through zero weights until training changes them.
        assert z_wide.mean[:, 4:].abs().sum() > 0
        assert torch.count_nonzero(wide.decoder.conv_in.weight[:, 4:]) == 0


def test_widening_to_fewer_channels_is_refused(train_toy, tmp_path):
    small_vae(16, seed=0).save_pretrained(tmp_path / "wide", safe_serialization=True)
    with pytest.raises(SystemExit, match="16 latent channels, more than the 4"):
        train_toy.widen_vae(small_vae(4, seed=1), tmp_path / "wide")


def test_inpainting_unet_reads_latent_mask_and_masked_latent(train_toy):
    args = train_toy.parse_args(["--latent-channels", "16"])
    assert train_toy.unet_config(args)["in_channels"] == 16 == train_toy.unet_config(args)["out_channels"]
    assert train_toy.unet_config(args, inpaint=True)["in_channels"] == 33
    assert train_toy.vae_config(args)["latent_channels"] == 16
