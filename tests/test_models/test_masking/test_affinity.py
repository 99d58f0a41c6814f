# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tests of ``attention_affinity`` against a naive attention reference."""
import pytest
import torch
from mmengine.model import ExponentialMovingAverage
from mmpretrain.models import MAEViT, VisionTransformer
from mmpretrain.models.utils import MultiheadAttention
from torch import nn

from ehm_mm import attention_affinity
from ehm_mm.models.masking.affinity import resolve_layers

ARCH = dict(embed_dims=32, num_layers=3, num_heads=4,
            feedforward_channels=64)


def _vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    cfg = dict(arch=ARCH, img_size=32, patch_size=8, out_type='raw')
    cfg.update(kwargs)
    vit = VisionTransformer(**cfg)
    with torch.no_grad():  # a non-trivial position embedding
        vit.pos_embed.normal_(std=0.5)
    vit.eval()  # mmpretrain's backbone train() does not return self
    return vit


def _naive_attention(attn: MultiheadAttention, x: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """Per-head loops, explicit weights; also checks the module output."""
    batch, length, dims = x.shape
    heads = attn.num_heads
    head_dims = dims // heads
    weight, bias = attn.qkv.weight, attn.qkv.bias
    probs = torch.empty(batch, heads, length, length)
    mixed = torch.empty(batch, length, dims)
    for h in range(heads):
        rows = slice(h * head_dims, (h + 1) * head_dims)
        q = x @ weight[rows].T + bias[rows]
        k = x @ weight[dims:][rows].T + bias[dims:][rows]
        v = x @ weight[2 * dims:][rows].T + bias[2 * dims:][rows]
        logits = torch.einsum('bid,bjd->bij', q, k) * scale
        p = torch.exp(logits - logits.amax(-1, keepdim=True))
        p = p / p.sum(-1, keepdim=True)
        probs[:, h] = p
        mixed[..., rows] = p @ v
    # the recomputed weights reproduce the fused attention's output
    torch.testing.assert_close(
        attn.proj(mixed), attn(x), rtol=1e-4, atol=1e-5)
    return probs


def _reference(vit: VisionTransformer, images: torch.Tensor,
               layers) -> torch.Tensor:
    """Run the ViT's own forward, hooking the attention inputs."""
    inputs = {}
    hooks = [
        layer.attn.register_forward_pre_hook(
            lambda module, args, i=i: inputs.__setitem__(i, args[0]))
        for i, layer in enumerate(vit.layers)
    ]
    with torch.no_grad():
        if isinstance(vit, MAEViT):
            vit(images, mask=None)  # all patches, no random masking
        else:
            vit(images)
        total = 0
        for i in layers:
            attn = vit.layers[i].attn
            scale = attn.head_dims**-0.5
            total = total + _naive_attention(attn, inputs[i],
                                             scale).mean(1)
    for hook in hooks:
        hook.remove()
    extra = vit.num_extra_tokens
    patches = total[:, extra:, extra:]
    return (patches + patches.transpose(1, 2)) / 2


@pytest.mark.parametrize('layers, chosen', [(None, [0, 1, 2]), (-1, [2]),
                                            ([0, -1], [0, 2]), (1, [1])])
def test_matches_naive_attention(layers, chosen):
    vit = _vit()
    images = torch.randn(2, 3, 32, 32)
    affinity = attention_affinity(vit, images, layers=layers)
    assert affinity.shape == (2, 16, 16) and affinity.dtype == torch.float32
    assert not affinity.requires_grad
    torch.testing.assert_close(affinity, affinity.transpose(1, 2))
    torch.testing.assert_close(
        affinity, _reference(vit, images, chosen), rtol=1e-4, atol=1e-6)


def test_other_resolution_no_cls_token_and_mae_vit():
    vit = _vit()
    images = torch.randn(2, 3, 48, 40)  # pos_embed is interpolated
    affinity = attention_affinity(vit, images)
    assert affinity.shape == (2, 30, 30)
    torch.testing.assert_close(
        affinity, _reference(vit, images, [0, 1, 2]), rtol=1e-4, atol=1e-6)

    plain = _vit(with_cls_token=False, out_type='featmap')
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(
        attention_affinity(plain, images, layers=[0, 1]),
        _reference(plain, images, [0, 1]), rtol=1e-4, atol=1e-6)

    torch.manual_seed(0)
    mae = MAEViT(arch=ARCH, img_size=32, patch_size=8)
    mae.init_weights()  # fixed sin-cos position embedding
    mae.eval()
    with torch.no_grad():
        tokens = mae(images, mask=None)[0]  # the plain ViT forward
    assert tokens.shape == (2, 17, 32)
    torch.testing.assert_close(
        attention_affinity(mae, images),
        _reference(mae, images, [0, 1, 2]), rtol=1e-4, atol=1e-6)


def test_runs_only_up_to_the_deepest_layer_in_eval_mode():
    vit = _vit(drop_rate=0.5, drop_path_rate=0.5)
    calls = []
    for i, layer in enumerate(vit.layers):
        layer.register_forward_hook(
            lambda module, args, out, i=i: calls.append(i))
    vit.train()
    vit.layers[0].eval()
    modes = [m.training for m in vit.modules()]
    images = torch.randn(2, 3, 32, 32)
    first = attention_affinity(vit, images, layers=1)
    assert calls == [0]  # layer 1's attention needs only layer 0's output
    assert [m.training for m in vit.modules()] == modes
    # dropout and drop path are off: the result is deterministic
    torch.testing.assert_close(attention_affinity(vit, images, layers=1),
                               first, rtol=0, atol=0)
    vit.eval()
    torch.testing.assert_close(
        first, _reference(vit, images, [1]), rtol=1e-4, atol=1e-6)


def test_wrapped_models_are_unwrapped():
    vit = _vit()
    images = torch.randn(1, 3, 32, 32)
    ema = ExponentialMovingAverage(vit, momentum=0.001)
    torch.testing.assert_close(attention_affinity(ema, images),
                               attention_affinity(vit, images))


def test_bad_input_is_refused():
    vit = _vit()
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match='out of range'):
        attention_affinity(vit, images, layers=3)
    with pytest.raises(ValueError, match='out of range'):
        attention_affinity(vit, images, layers=[-4])
    with pytest.raises(TypeError, match='layers'):
        attention_affinity(vit, images, layers=[])
    with pytest.raises(TypeError, match='layers'):
        attention_affinity(vit, images, layers=1.0)
    with pytest.raises(ValueError, match='images'):
        attention_affinity(vit, images[0])
    with pytest.raises(TypeError, match='VisionTransformer'):
        attention_affinity(nn.Linear(2, 2), images)
    assert resolve_layers([2, -1, 0], 3) == (0, 2)
