"""Codecs: the weight-free space-to-depth codec, LTX (both release layouts) and Wan 2.1 (original keys)."""

from __future__ import annotations

import pytest
import torch

from stream_fixtures import write_ltx_diffusers, write_ltx_original, write_wan_original
from vividhead.models.vae import SpaceToDepthCodec, load_codec, load_ltx, load_wan

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models on a shared 2-core CPU


def test_space_to_depth_is_invertible_at_its_resolution():
    codec = SpaceToDepthCodec(frame_size=32, spatial=4, temporal=4)
    video = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    latent = codec.encode(video)
    assert latent.shape == (2, 192, 3, 8, 8)
    torch.testing.assert_close(codec.decode(latent, size=32), video)
    assert codec.decode(codec.encode(torch.zeros(1, 3, 5, 512, 512))).shape == (1, 3, 5, 512, 512)


@pytest.fixture(scope="module")
def ltx_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ltx")
    return write_ltx_diffusers(root / "diffusers" / "VAE_LTX"), write_ltx_original(root / "original" / "VAE_LTX")


def test_ltx_layouts_load_the_same_weights_and_statistics(ltx_folders):
    a, b = (load_ltx(folder) for folder in ltx_folders)
    assert a.latent_channels == b.latent_channels == 128 and a.temporal_stride == b.temporal_stride == 8
    sa, sb = a.vae.state_dict(), b.vae.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.testing.assert_close(a.mean, b.mean)
    assert float(a.std.max()) == pytest.approx(2.0)                  # the checkpoint's statistics, not neutral


def test_ltx_encode_samples_the_posterior_from_a_seeded_generator(ltx_folders):
    """Release fact: LTX reference and motion latents are a posterior SAMPLE (Wan takes the mean); ours come
    from the caller's seeded generator, normalised per channel."""
    codec = load_ltx(ltx_folders[0])
    video = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    with torch.no_grad():
        mode = (codec.vae.encode(video).latent_dist.mode() - codec.mean) / codec.std
    assert not torch.allclose(codec.encode(video), mode)                                  # a sample, not the mean
    latent = codec.encode(video, generator=torch.Generator().manual_seed(7))
    assert latent.shape == (1, 128, 2, 2, 2)
    with torch.no_grad():
        posterior = codec.vae.encode(video).latent_dist
        sample = posterior.sample(generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(latent, (sample - codec.mean) / codec.std)
    assert torch.equal(latent, codec.encode(video, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(latent, codec.encode(video, generator=torch.Generator().manual_seed(8)))
    assert codec.decode(latent).shape == (1, 3, 9, 64, 64)


def test_wan_single_file_loads_through_diffusers_conversion(tmp_path):
    path = write_wan_original(tmp_path / "VAE_Wan" / "Wan2.1_VAE.pth")
    codec = load_codec("pro", tmp_path)
    assert codec.latent_channels == 16 and codec.temporal_stride == 4
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    latent = codec.encode(video, generator=torch.Generator().manual_seed(0))
    assert latent.shape == (1, 16, 2, 4, 4)
    assert torch.equal(latent, codec.encode(video, generator=torch.Generator().manual_seed(1)))   # Wan: the mean
    assert codec.decode(latent).shape == (1, 3, 5, 32, 32)
    state = torch.load(path, weights_only=True)
    del state["decoder.head.2.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"decoder\.conv_out\.weight"):
        load_wan(path)


