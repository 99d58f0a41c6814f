# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EHMMAEViT: MAEViT with an optional mask from outside."""
import copy

import pytest
import torch
from mmpretrain.models import MAEViT
from mmpretrain.registry import MODELS

import ehm_mm  # noqa: F401
from ehm_mm.models import EHMMAEViT, attention_affinity
from ehm_mm.models.masking.affinity import AttentionReadout

ARCH = dict(embed_dims=48, num_layers=2, num_heads=3, feedforward_channels=96)


def _pair():
    """An EHMMAEViT and a MAEViT with the same weights."""
    torch.manual_seed(0)
    ours = MODELS.build(
        dict(type='EHMMAEViT', arch=ARCH, img_size=32, patch_size=8))
    assert isinstance(ours, EHMMAEViT)
    ours.init_weights()
    theirs = MAEViT(arch=ARCH, img_size=32, patch_size=8)
    theirs.load_state_dict(ours.state_dict())
    ours.eval()  # VisionTransformer.train() returns None
    theirs.eval()
    return ours, theirs


def test_same_keys_and_same_random_masking_as_maevit():
    ours, theirs = _pair()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(3, 3, 32, 32)
    torch.manual_seed(1)
    a = ours(x)
    torch.manual_seed(1)
    b = theirs(x)
    for left, right in zip(a, b):
        assert torch.equal(left, right)
    # mask=None and mask=False: the plain ViT on all tokens.
    plain = ours(x, mask=None)
    assert torch.equal(plain[0], theirs(x, mask=None)[0])
    assert torch.equal(ours(x, mask=False)[0], plain[0])
    assert plain[0].shape == (3, 17, 48)


def test_external_mask_and_order_reproduce_maevit():
    ours, theirs = _pair()
    x = torch.randn(3, 3, 32, 32)
    torch.manual_seed(2)
    latent, mask, ids_restore = theirs(x)
    out, out_mask, out_restore = ours(x, mask=mask, ids_restore=ids_restore)
    assert torch.equal(out, latent)
    assert torch.equal(out_mask, mask)
    assert torch.equal(out_restore, ids_restore)


def test_external_mask_without_order_keeps_raster_order():
    ours, _ = _pair()
    x = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 16)
    mask[0, 4:16] = 1
    mask[1, :12] = 1
    latent, out_mask, ids_restore = ours(x, mask=mask.bool())
    assert latent.shape == (2, 1 + 4, 48)
    assert out_mask.dtype == torch.float32 and torch.equal(out_mask, mask)
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    assert ids_shuffle[0, :4].tolist() == [0, 1, 2, 3]
    assert ids_shuffle[1, :4].tolist() == [12, 13, 14, 15]
    # The same visible tokens given in another order give the same
    # features, permuted (the encoder has no notion of token order).
    flipped = torch.cat([ids_shuffle[:, :4].flip(1), ids_shuffle[:, 4:]], 1)
    again, _, _ = ours(
        x, mask=mask, ids_restore=torch.argsort(flipped, dim=1))
    assert torch.allclose(again[:, 1:], latent[:, 1:].flip(1), atol=1e-5)


def test_bad_masks_fail_clearly():
    ours, _ = _pair()
    x = torch.randn(2, 3, 32, 32)
    uneven = torch.zeros(2, 16)
    uneven[0, :3] = 1
    with pytest.raises(ValueError, match='same number'):
        ours(x, mask=uneven)
    with pytest.raises(ValueError, match=r'shape \(2, 16\)'):
        ours(x, mask=torch.zeros(2, 15))
    mask = torch.zeros(2, 16)
    mask[:, :8] = 1
    with pytest.raises(ValueError, match='visible patches'):
        ours(x, mask=mask, ids_restore=torch.arange(16).expand(2, 16))
    with pytest.raises(TypeError, match='mask must be'):
        ours(x, mask='random')
    with pytest.raises(ValueError, match='ids_restore needs'):
        ours(x, mask=True, ids_restore=torch.arange(16).expand(2, 16))


@pytest.mark.parametrize('kwargs, match', [
    (dict(img_size=30, patch_size=8), 'backbone.img_size 30 is not'),
    (dict(img_size=(32, 36), patch_size=8), 'not divisible'),
    (dict(img_size=32, patch_size=0), 'backbone.patch_size'),
    (dict(img_size=32, patch_size=8, mask_ratio=1.0), 'backbone.mask_ratio'),
])
def test_config_mistakes_fail_at_build(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(type='EHMMAEViT', arch=ARCH, **kwargs))


def test_reading_attention_is_a_seam_of_the_backbone():
    ours, theirs = _pair()
    readouts = [layer.attn.scaled_dot_product_attention
                for layer in ours.layers]
    assert all(isinstance(r, AttentionReadout) for r in readouts)
    x = torch.randn(2, 3, 32, 32)
    plain = ours(x, mask=None)[0]
    seen = []
    ours.layers[1].register_forward_hook(
        lambda module, args, out: seen.append(1))
    affinity = ours.attention_affinity(x, layers=[0, 1])
    # the same affinity as the probe lends to MAEViT for the call, the
    # backbone's kernels untouched, the forward stopped at layer 1's q, k
    assert torch.equal(affinity, attention_affinity(theirs, x))
    assert [layer.attn.scaled_dot_product_attention
            for layer in ours.layers] == readouts
    assert all(r.reader is None for r in readouts) and seen == []
    assert torch.equal(ours(x, mask=None)[0], plain)
    # an EMA copy carries its own readouts
    copied = copy.deepcopy(ours)
    assert copied.layers[0].attn.scaled_dot_product_attention is not \
        readouts[0]
    assert torch.equal(copied.attention_affinity(x), affinity)
