"""Backbones: interface shapes, channel (in)dependence, HA efficient == dense, HCS."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Attention

from channel_ssl.models import ARCHS, FAMILIES, build_backbone
from channel_ssl.models.channel_sampling import (
    draw_channel_subset,
    gather_channels,
    hierarchical_channel_sampling,
)
from channel_ssl.models.hierarchical_attention import hierarchical_attention_mask
from channel_ssl.models.vit import MemoryEfficientAttention

IMG = 32  # micro: patch 8 -> 4 x 4 = 16 patches
N_PATCHES = 16
DIM = ARCHS["micro"].embed_dim
ATOL = 1e-5


def make(family: str, **kwargs) -> torch.nn.Module:
    """Micro backbone in eval mode; LayerScale 1 so that every block visibly changes tokens."""
    torch.manual_seed(0)
    kwargs.setdefault("layerscale_init", 1.0)
    return build_backbone(family, "micro", img_size=IMG, **kwargs).eval()


def images(batch: int = 2, channels: int = 3, size: int = IMG, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    ("family", "k", "forward_shapes", "embed_shapes"),
    [
        ("boc", 1, {"cls": (2, DIM), "patch": (2, 16, DIM)}, None),
        (
            "boc",
            3,
            {"cls": (6, DIM), "patch": (6, 16, DIM)},
            {"cls_layers": (2, 2, 3, DIM), "patch": (2, 3, 16, DIM)},
        ),
        (
            "cvit",
            3,
            {"cls": (2, DIM), "patch": (2, 48, DIM)},
            {"cls_layers": (2, 2, 1, DIM), "patch": (2, 3, 16, DIM)},
        ),
        (
            "ha",
            3,
            {"cls": (2, DIM), "channel_cls": (2, 3, DIM), "patch": (2, 48, DIM)},
            {"cls_layers": (2, 2, 4, DIM), "patch": (2, 3, 16, DIM)},
        ),
        (
            "fixed",
            3,
            {"cls": (2, DIM), "patch": (2, 16, DIM)},
            {"cls_layers": (2, 2, 1, DIM), "patch": (2, 1, 16, DIM)},
        ),
    ],
)
def test_output_shapes_follow_the_interface(family, k, forward_shapes, embed_shapes):
    model = make(family, in_chans=k)
    assert (model.family, model.embed_dim, model.patch_size, model.n_blocks) == (family, DIM, 8, 4)
    x = images(channels=k)
    with torch.no_grad():
        out = model(x)
        assert {key: tuple(v.shape) for key, v in out.items()} == forward_shapes
        if embed_shapes:
            emb = model.embed(x, n_last_blocks=2)
            assert {key: tuple(v.shape) for key, v in emb.items()} == embed_shapes
            # the last entry of cls_layers is the last-layer CLS that forward returns
            last_cls = emb["cls_layers"][:, -1]
            if family == "ha":
                torch.testing.assert_close(last_cls[:, 0], out["cls"], atol=ATOL, rtol=0)
                torch.testing.assert_close(last_cls[:, 1:], out["channel_cls"], atol=ATOL, rtol=0)
            elif family in ("cvit", "fixed"):
                torch.testing.assert_close(last_cls[:, 0], out["cls"], atol=ATOL, rtol=0)


def test_trunk_recipe_layerscale_uniform_drop_path_biases():
    model = build_backbone("boc", "micro", img_size=IMG, drop_path_rate=0.1, layerscale_init=1e-5)
    for block in model.blocks:
        assert torch.all(block.ls1.gamma == 1e-5) and torch.all(block.ls2.gamma == 1e-5)
        assert block.drop_path1.drop_prob == block.drop_path2.drop_prob == 0.1
        assert block.attn.qkv.bias is not None and block.attn.proj.bias is not None
        assert block.mlp.fc1.bias is not None and block.mlp.fc2.bias is not None
    no_ls = build_backbone("boc", "micro", img_size=IMG, layerscale_init=None)
    assert isinstance(no_ls.blocks[0].ls1, torch.nn.Identity)


def test_build_backbone_rejects_unknown_names():
    with pytest.raises(ValueError, match="boc, cvit, ha, fixed"):
        build_backbone("resnet", "micro", img_size=IMG)
    with pytest.raises(ValueError, match="micro.*vit_large.*vit_small"):
        build_backbone("boc", "vit_huge", img_size=IMG)
    assert set(FAMILIES) == {"boc", "cvit", "ha", "fixed"}


def test_attention_falls_back_to_timm_sdpa_on_cpu():
    torch.manual_seed(0)
    reference = Attention(DIM, num_heads=4, qkv_bias=True)
    ours = MemoryEfficientAttention(DIM, num_heads=4, qkv_bias=True)
    ours.load_state_dict(reference.state_dict())
    tokens = torch.randn(2, 5, DIM)
    torch.testing.assert_close(ours(tokens), reference(tokens))


# ----------------------------------------------------------------------------- bag of channels
def test_boc_channel_features_do_not_depend_on_other_channels():
    model = make("boc")
    x = images(channels=3)
    changed = x.clone()
    changed[:, 0] = torch.randn_like(changed[:, 0])
    with torch.no_grad():
        full, other = model.embed(x), model.embed(changed)
        alone = model.embed(x[:, 2:3])
    torch.testing.assert_close(full["cls_layers"][:, :, 1:], other["cls_layers"][:, :, 1:])
    torch.testing.assert_close(full["patch"][:, 1:], other["patch"][:, 1:])
    assert not torch.allclose(full["cls_layers"][:, :, 0], other["cls_layers"][:, :, 0])
    torch.testing.assert_close(
        full["cls_layers"][:, :, 2:3], alone["cls_layers"], atol=ATOL, rtol=0
    )


def test_boc_permuting_channels_permutes_per_channel_blocks():
    model = make("boc")
    x = images(channels=4)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        plain, permuted = model.embed(x), model.embed(x[:, perm])
    torch.testing.assert_close(permuted["cls_layers"], plain["cls_layers"][:, :, perm])
    torch.testing.assert_close(permuted["patch"], plain["patch"][:, perm])


def test_boc_forward_with_several_channels_folds_them_into_the_batch():
    model = make("boc")
    x = images(channels=3)
    with torch.no_grad():
        folded = model(x)
        channel_1_of_sample_1 = model(x[1:2, 1:2])
    torch.testing.assert_close(folded["cls"][1 * 3 + 1], channel_1_of_sample_1["cls"][0])


# --------------------------------------------------------------------------------- Channel-ViT
def test_channel_vit_rejects_more_channels_than_k_max():
    model = make("cvit", k_max=3)
    with pytest.raises(ValueError, match=r"K=4 channels but was built with k_max=3"):
        model(images(channels=4))


def test_channel_vit_channel_ids_pick_the_right_embeddings():
    model = make("cvit", k_max=5)
    x = images(batch=2, channels=2)
    ids = torch.tensor([[1, 4], [0, 3]])
    with torch.no_grad():
        tokens = model.prepare_tokens(x, None, ids)
        # independent reference: conv of each channel + shared positions + embedding row ids[b, k]
        weight, bias = model.patch_embed.weight, model.patch_embed.bias
        for b in range(2):
            for k in range(2):
                patches = F.conv2d(x[b : b + 1, k : k + 1], weight, bias, stride=8)
                patches = patches.flatten(2).transpose(1, 2)[0]
                expected = patches + model.pos_embed[0] + model.channel_embed.weight[ids[b, k]]
                got = tokens[b, 1 + k * N_PATCHES : 1 + (k + 1) * N_PATCHES]
                torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
        default = model.prepare_tokens(x, None, None)  # ids = positions 0, 1
        torch.testing.assert_close(
            default[:, 1 + N_PATCHES :] - default[:, 1 : 1 + N_PATCHES],
            (
                model.patch_embed(x[:, 1:2]).flatten(2).transpose(1, 2)
                - model.patch_embed(x[:, 0:1]).flatten(2).transpose(1, 2)
                + model.channel_embed.weight[1]
                - model.channel_embed.weight[0]
            ),
            atol=ATOL,
            rtol=0,
        )
    with pytest.raises(ValueError, match="k_max=5"):
        model(x, channel_ids=torch.tensor([[0, 5], [0, 1]]))


# ------------------------------------------------------------------------ hierarchical attention
def test_hierarchical_attention_mask_structure():
    mask = hierarchical_attention_mask(n_channels=2, n_patches=2)
    # order: CLS, CH1, p, p, CH2, p, p
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0],
            [0, 0, 0, 0, 1, 1, 1],
            [0, 0, 0, 0, 1, 1, 1],
            [0, 0, 0, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_ha_channels_are_independent_but_global_cls_is_not():
    model = make("ha")
    x = images(channels=3)
    changed = x.clone()
    changed[:, 1] = torch.randn_like(changed[:, 1])
    with torch.no_grad():
        a, b = model(x), model(changed)
        alone = model(x[:, 2:3])
    keep = [0, 2]
    torch.testing.assert_close(a["channel_cls"][:, keep], b["channel_cls"][:, keep])
    patches_a = a["patch"].reshape(2, 3, N_PATCHES, DIM)
    patches_b = b["patch"].reshape(2, 3, N_PATCHES, DIM)
    torch.testing.assert_close(patches_a[:, keep], patches_b[:, keep])
    assert not torch.allclose(a["channel_cls"][:, 1], b["channel_cls"][:, 1], atol=1e-3)
    assert not torch.allclose(a["cls"], b["cls"], atol=1e-3)
    # a channel's tokens equal those of the channel on its own
    torch.testing.assert_close(
        a["channel_cls"][:, 2], alone["channel_cls"][:, 0], atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("with_masks", [False, True])
def test_ha_efficient_equals_dense_masked_attention_in_eval(with_masks):
    model = make("ha", drop_path_rate=0.0)
    x = images(channels=3)
    masks = None
    if with_masks:
        masks = torch.rand(2, 3 * N_PATCHES, generator=torch.Generator().manual_seed(3)) < 0.3
    with torch.no_grad():
        efficient, dense = model(x, masks=masks), model.forward_dense_masked(x, masks=masks)
    for key in ("cls", "channel_cls", "patch"):
        torch.testing.assert_close(efficient[key], dense[key], atol=ATOL, rtol=0)


def test_ha_efficient_equals_dense_with_drop_path_in_training():
    # one stochastic-depth draw per sample shared by CLS and every channel, as in the dense model
    model = make("ha", drop_path_rate=0.4).train()
    x = images(batch=4, channels=2)
    with torch.no_grad():
        torch.manual_seed(11)
        efficient = model(x)
        torch.manual_seed(11)
        dense = model.forward_dense_masked(x)
        no_drop = model.eval()(x)
    for key in ("cls", "channel_cls", "patch"):
        torch.testing.assert_close(efficient[key], dense[key], atol=ATOL, rtol=0)
    assert not torch.allclose(efficient["cls"], no_drop["cls"], atol=1e-3)  # drop path did act


# ------------------------------------------------------------------------ fixed-channel model
def test_fixed_channel_model_rejects_other_channel_counts():
    model = make("fixed", in_chans=4)
    with pytest.raises(ValueError, match=r"in_chans=4 channels but got K=3"):
        model(images(channels=3))


# ---------------------------------------------------------------- position embeddings, mask token
@pytest.mark.parametrize("family", FAMILIES)
def test_smaller_crops_interpolate_position_embeddings(family):
    model = make(family, in_chans=2)
    with torch.no_grad():
        out = model.embed(images(channels=2, size=16), n_last_blocks=1)  # 2 x 2 patches
    assert out["patch"].shape[-2] == 4
    assert torch.isfinite(out["cls_layers"]).all()


def test_position_embedding_interpolation_is_bicubic_and_identity_at_built_size():
    model = make("boc")
    assert model.patch_pos_embed(4, 4) is model.pos_embed
    with torch.no_grad():
        model.pos_embed.fill_(0.25)
        torch.testing.assert_close(model.patch_pos_embed(2, 3), torch.full((1, 6, DIM), 0.25))
        ramp = torch.arange(4.0).repeat(4)  # value = column index
        model.pos_embed.copy_(ramp[None, :, None].expand(1, 16, DIM))
        upsampled = model.patch_pos_embed(4, 7).reshape(4, 7, DIM)[..., 0]
    # a ramp stays monotone; the interior point (source column 1.5) is exact for a cubic kernel
    # but not for nearest; the whole grid matches torch's bicubic resampling
    assert torch.all(upsampled[:, 1:] >= upsampled[:, :-1])
    torch.testing.assert_close(upsampled[:, 3], torch.full((4,), 1.5))
    reference = F.interpolate(ramp.reshape(1, 1, 4, 4), size=(4, 7), mode="bicubic")[0, 0]
    torch.testing.assert_close(upsampled, reference)


@pytest.mark.parametrize("family", ["boc", "cvit", "ha"])
def test_mask_token_replaces_masked_patches(family):
    model = make(family)
    k = 1 if family == "boc" else 2
    x = images(channels=k)
    masks = torch.zeros(2, k * N_PATCHES, dtype=torch.bool)
    masks[:, 5] = True
    # repaint the pixels of patch 5 of channel 0 (row 1, column 1 of the 4 x 4 grid)
    repainted = x.clone()
    repainted[:, 0, 8:16, 8:16] = 10.0
    with torch.no_grad():
        masked_a, masked_b = model(x, masks=masks), model(repainted, masks=masks)
        plain_a, plain_b = model(x), model(repainted)
    # masked: the model cannot see the repainted patch at all; unmasked it can
    torch.testing.assert_close(masked_a["patch"], masked_b["patch"])
    assert not torch.allclose(plain_a["patch"], plain_b["patch"], atol=1e-3)
    # the embedding at the masked slot is mask token + position embedding 5
    with torch.no_grad():
        patches = model.patch_embed(x[:, :1]).flatten(2).transpose(1, 2)
        replaced = model.replace_masked(patches, masks[:, :N_PATCHES])
    torch.testing.assert_close(replaced[:, 5], model.mask_token[0].expand(2, DIM))
    torch.testing.assert_close(replaced[:, 4], patches[:, 4])
    with pytest.raises(ValueError, match="masks has shape"):
        model(x, masks=masks[:, :3])


# ------------------------------------------------------------------ hierarchical channel sampling
def test_hcs_keeps_between_one_and_k_channels_without_repeats_in_order():
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(6, dtype=torch.long)
    for _ in range(600):
        ids = draw_channel_subset(8, 5, generator)
        m = ids.shape[1]
        assert 1 <= m <= 5 and ids.dtype == torch.long
        assert torch.all(ids[:, 1:] > ids[:, :-1])  # increasing: original order, no repeats
        assert ids.min() >= 0 and ids.max() < 5
        counts[m] += 1
    # m ~ U{1..5}: 120 expected per value over 600 draws
    assert counts[0] == 0 and torch.all((counts[1:] > 80) & (counts[1:] < 160))


def test_hcs_is_deterministic_under_a_seed_and_returns_matching_subset():
    x = images(batch=6, channels=5)
    draws = [hierarchical_channel_sampling(x, torch.Generator().manual_seed(7)) for _ in range(2)]
    torch.testing.assert_close(draws[0][0], draws[1][0])
    assert torch.equal(draws[0][1], draws[1][1])
    subset, ids = draws[0]
    for b in range(6):
        torch.testing.assert_close(subset[b], x[b, ids[b]])
    many = {
        tuple(draw_channel_subset(1, 5, torch.Generator().manual_seed(s))[0].tolist())
        for s in range(40)
    }
    assert len(many) > 5  # different seeds give different subsets


def test_hcs_same_for_batch_and_bad_input():
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        ids = draw_channel_subset(4, 6, generator, same_for_batch=True)
        assert torch.equal(ids, ids[:1].expand_as(ids))
    with pytest.raises(ValueError, match="K=0"):
        draw_channel_subset(2, 0, generator)
    with pytest.raises(ValueError, match="expected"):
        gather_channels(images(), torch.zeros(3, 1, dtype=torch.long))


def test_timm_floor_is_the_one_the_models_need_and_pyproject_declares():
    import inspect
    import re
    import tomllib
    from pathlib import Path

    from timm.layers import Attention
    from timm.models.vision_transformer import Block

    from channel_ssl.models.vit import TIMM_MIN, check_timm_version

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    deps = [d for group in pyproject["project"]["optional-dependencies"].values() for d in group]
    floors = {re.match(r"timm>=([\d.]+)", d).group(1) for d in deps if d.startswith("timm")}
    assert floors == {TIMM_MIN}
    # what the models call exists in the installed timm
    assert {"attn_layer", "proj_bias"} <= set(inspect.signature(Block.__init__).parameters)
    assert "is_causal" in inspect.signature(Attention.forward).parameters
    check_timm_version(TIMM_MIN)
    check_timm_version("1.0.31+cu")
    with pytest.raises(ImportError, match=r"timm 1.0.25 is too old.*timm>=1.0.26"):
        check_timm_version("1.0.25")
    with pytest.raises(ImportError, match="too old"):
        check_timm_version("0.9.16")
