# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tests of the affinity's attention probe: fused heads, float32, cost."""
import pytest
import torch
from mmpretrain.models import VisionTransformer
from mmpretrain.models.utils import MultiheadAttention
from torch import nn

from ehm_mm import attention_affinity
from ehm_mm.models.masking import affinity as affinity_module
from ehm_mm.models.masking.affinity import (
    attention_scale,
    head_mean_attention,
)

ARCH = dict(embed_dims=32, num_layers=3, num_heads=4,
            feedforward_channels=64)


def _vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(arch=ARCH, img_size=32, patch_size=8, **kwargs)
    vit.eval()  # mmpretrain backbones' train() returns None
    return vit


def _counting_vit() -> tuple:
    vit = _vit()
    qkv_calls, layer_calls = [], []
    for i, layer in enumerate(vit.layers):
        layer.attn.qkv.register_forward_hook(
            lambda module, args, out, i=i: qkv_calls.append(i))
        layer.register_forward_hook(
            lambda module, args, out, i=i: layer_calls.append(i))
    return vit, qkv_calls, layer_calls


def test_each_qkv_projection_runs_once_and_the_forward_stops_early():
    vit, qkv_calls, layer_calls = _counting_vit()
    images = torch.randn(2, 3, 32, 32)
    attention_affinity(vit, images)  # all layers chosen
    assert qkv_calls == [0, 1, 2]
    assert layer_calls == [0, 1]  # the last layer stops after its weights
    qkv_calls.clear()
    layer_calls.clear()
    attention_affinity(vit, images, layers=[0])
    assert qkv_calls == [0] and layer_calls == []


def test_fused_heads_match_the_reference_path(monkeypatch):
    vit = _vit(layer_scale_init_value=0.1)
    images = torch.randn(3, 3, 32, 32)
    reference = attention_affinity(vit, images, layers=[0, 2], fused=False)
    fused = attention_affinity(vit, images, layers=[0, 2])
    torch.testing.assert_close(fused, reference, rtol=1e-6, atol=1e-7)
    # one head per chunk: never more than one head's probabilities held
    one_head = 3 * 17 * 17 * 4
    monkeypatch.setattr(affinity_module, '_CHUNK_BYTES', one_head)
    seen = []
    softmax = torch.Tensor.softmax

    def spy(self, *args, **kwargs):
        seen.append(tuple(self.shape))
        return softmax(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, 'softmax', spy)
    chunked = attention_affinity(vit, images, layers=[0, 2])
    assert seen == [(3, 1, 17, 17)] * 8  # 4 heads x 2 layers
    torch.testing.assert_close(chunked, reference, rtol=1e-6, atol=1e-7)


def test_logits_are_float32_under_autocast():
    torch.manual_seed(0)
    query = torch.randn(2, 4, 9, 8) * 3
    key = torch.randn(2, 4, 9, 8) * 3
    exact = (query.double() @ key.double().transpose(-2, -1) *
             0.25).softmax(-1).mean(1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        probs = head_mean_attention(query.bfloat16(), key.bfloat16(), 0.25)
    assert probs.dtype == torch.float32
    # only the bf16 rounding of q and k remains, not of the logits
    ref = (query.bfloat16().double() @ key.bfloat16().double().transpose(
        -2, -1) * 0.25).softmax(-1).mean(1)
    torch.testing.assert_close(probs.double(), ref, rtol=1e-5, atol=1e-6)
    assert (probs.double() - exact).abs().max() < 0.05
    vit = _vit()
    images = torch.randn(2, 3, 32, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = attention_affinity(vit, images)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, attention_affinity(vit, images),
                               rtol=0.05, atol=0.02)


def test_explicit_qk_scale_kernel_is_followed():
    attn = MultiheadAttention(16, 4).eval()
    assert attention_scale(attn) == 0.5  # head_dims 4
    # mmpretrain's python kernel (set when qk_scale is given) divides the
    # logits by its `scale` (head_dims ** -0.5), i.e. multiplies by 2
    attn = MultiheadAttention(16, 4, qk_scale=0.3).eval()
    assert attention_scale(attn) == pytest.approx(2.0)
    vit = _vit()
    vit.layers[1].attn = MultiheadAttention(32, 4, qk_scale=0.3).eval()
    images = torch.randn(2, 3, 32, 32)
    inputs = {}
    vit.layers[1].attn.register_forward_pre_hook(
        lambda module, args: inputs.__setitem__('x', args[0]))
    with torch.no_grad():
        out = vit(images)[0]  # the plain forward still works afterwards
        attention_affinity(vit, images, layers=[1])
        x = inputs['x']
        qkv = vit.layers[1].attn.qkv(x).reshape(2, 17, 3, 4, 8)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        probs = (q @ k.transpose(-2, -1) * 8**0.5).softmax(-1).mean(1)
    patches = probs[:, 1:, 1:]
    torch.testing.assert_close(
        attention_affinity(vit, images, layers=[1]),
        (patches + patches.transpose(1, 2)) / 2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(vit(images)[0], out)


class _OwnAttention(nn.Module):

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.inner = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_unsupported_attention_is_refused_and_kernels_are_restored():
    vit = _vit()
    vit.layers[1].attn = _OwnAttention(vit.layers[1].attn)
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(TypeError, match='layer 1 has attention _OwnAtt'):
        attention_affinity(vit, images)
    attention_affinity(vit, images, layers=[0])  # unprobed layers are fine
    kernels = [layer.attn.scaled_dot_product_attention
               for layer in _vit().layers]
    vit = _vit()
    vit.patch_embed.register_forward_hook(
        lambda *args: (_ for _ in ()).throw(RuntimeError('boom')))
    with pytest.raises(RuntimeError, match='boom'):
        attention_affinity(vit, images)
    assert [layer.attn.scaled_dot_product_attention
            for layer in vit.layers] == kernels
    with pytest.raises(TypeError, match='VisionTransformer'):
        attention_affinity(nn.Linear(2, 2), images)


def test_result_is_a_normal_tensor():
    vit = _vit()
    images = torch.randn(2, 3, 32, 32)
    affinity = attention_affinity(vit, images)
    assert not affinity.is_inference() and not affinity.requires_grad
    weights = torch.randn(2, 16, requires_grad=True)
    weights.gather(1, affinity.argmax(dim=-1)).sum().backward()
    assert weights.grad is not None
