# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tests of the affinity's shared-qkv fast path and inference mode."""
import pytest
import torch
from mmpretrain.models import VisionTransformer
from mmpretrain.models.backbones.vision_transformer import (
    TransformerEncoderLayer,
)
from mmpretrain.models.utils import MultiheadAttention

from ehm_mm import attention_affinity
from ehm_mm.models.masking.affinity import (
    has_fast_path,
    layer_attention,
    layer_attention_and_output,
)

ARCH = dict(embed_dims=32, num_layers=3, num_heads=4,
            feedforward_channels=64)


def _layer(**kwargs) -> TransformerEncoderLayer:
    torch.manual_seed(0)
    cfg = dict(embed_dims=32, num_heads=4, feedforward_channels=64)
    cfg.update(kwargs)
    layer = TransformerEncoderLayer(**cfg)
    layer.init_weights()
    with torch.no_grad():  # non-trivial biases and layer scales
        for param in layer.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return layer.eval()


class _CustomLayer(TransformerEncoderLayer):
    """A subclass whose forward differs: must not take the fast path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(layer_scale_init_value=0.1),
    dict(qkv_bias=False, drop_rate=0.3, drop_path_rate=0.3),
])
def test_fast_path_equals_layer_forward(kwargs):
    layer = _layer(**kwargs)
    assert has_fast_path(layer)
    tokens = torch.randn(2, 7, 32)
    with torch.no_grad():
        probs, out = layer_attention_and_output(layer, tokens)
        expected = layer(tokens)
        torch.testing.assert_close(probs, layer_attention(layer, tokens),
                                   rtol=0, atol=0)
        none_probs, none_out = layer_attention_and_output(
            layer, tokens, need_output=False)
    assert probs.dtype == torch.float32 and probs.shape == (2, 4, 7, 7)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert none_out is None
    torch.testing.assert_close(none_probs, probs, rtol=0, atol=0)


def test_explicit_qk_scale_layer_matches_its_forward():
    layer = _layer()
    layer.attn = MultiheadAttention(32, 4, qk_scale=0.3).eval()
    assert has_fast_path(layer)
    tokens = torch.randn(2, 5, 32)
    with torch.no_grad():
        _, out = layer_attention_and_output(layer, tokens)
        torch.testing.assert_close(out, layer(tokens), rtol=1e-5, atol=1e-5)


def test_other_layers_take_the_generic_path():
    layer = _CustomLayer(embed_dims=32, num_heads=4,
                         feedforward_channels=64).eval()
    shortcut = _layer()
    shortcut.attn.v_shortcut = True
    assert not has_fast_path(layer) and not has_fast_path(shortcut)
    tokens = torch.randn(2, 5, 32)
    with torch.no_grad():
        probs, out = layer_attention_and_output(layer, tokens)
        torch.testing.assert_close(out, layer(tokens), rtol=0, atol=0)
        torch.testing.assert_close(probs, layer_attention(layer, tokens))


def _counting_vit() -> tuple:
    torch.manual_seed(0)
    vit = VisionTransformer(arch=ARCH, img_size=32, patch_size=8)
    vit.eval()
    qkv_calls, layer_calls = [], []
    for i, layer in enumerate(vit.layers):
        layer.attn.qkv.register_forward_hook(
            lambda module, args, out, i=i: qkv_calls.append(i))
        layer.register_forward_hook(
            lambda module, args, out, i=i: layer_calls.append(i))
    return vit, qkv_calls, layer_calls


def test_each_qkv_projection_runs_once():
    vit, qkv_calls, layer_calls = _counting_vit()
    images = torch.randn(2, 3, 32, 32)
    attention_affinity(vit, images)  # all layers chosen
    assert qkv_calls == [0, 1, 2]
    assert layer_calls == []  # every output came from the shared qkv
    qkv_calls.clear()
    attention_affinity(vit, images, layers=[-1])
    assert qkv_calls == [0, 1, 2]
    assert layer_calls == [0, 1]  # unchosen layers: own fused forward


def test_generic_and_fast_paths_give_the_same_affinity():
    vit = VisionTransformer(arch=ARCH, img_size=32, patch_size=8,
                            layer_scale_init_value=0.1)
    vit.eval()  # mmpretrain backbones' train() returns None
    images = torch.randn(2, 3, 32, 32)
    fast = attention_affinity(vit, images, layers=[0, 2])
    # Swap every layer for a subclass with the same forward: generic path.
    slow_vit = VisionTransformer(arch=ARCH, img_size=32, patch_size=8,
                                 layer_scale_init_value=0.1)
    slow_vit.eval()
    slow_vit.load_state_dict(vit.state_dict())
    for layer in slow_vit.layers:
        layer.__class__ = type('Plain', (TransformerEncoderLayer, ), {})
    assert not has_fast_path(slow_vit.layers[0])
    slow = attention_affinity(slow_vit, images, layers=[0, 2])
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)


def test_result_is_a_normal_tensor_and_autocast_keeps_float32():
    vit = VisionTransformer(arch=ARCH, img_size=32, patch_size=8)
    vit.eval()
    images = torch.randn(2, 3, 32, 32)
    affinity = attention_affinity(vit, images)
    assert not affinity.is_inference() and not affinity.requires_grad
    # usable where autograd saves it, e.g. as gather indices
    weights = torch.randn(2, 16, requires_grad=True)
    index = affinity.argmax(dim=-1)
    weights.gather(1, index).sum().backward()
    assert weights.grad is not None
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = attention_affinity(vit, images)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, affinity, rtol=0.05, atol=0.02)
