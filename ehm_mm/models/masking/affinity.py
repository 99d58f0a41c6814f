# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Patch affinity from a Vision Transformer's own self-attention.

Torch only, duck-typed on mmpretrain's ``VisionTransformer`` / ``MAEViT``
attributes (``patch_embed``, ``cls_token``, ``pos_embed``, ``layers[i]``
with ``ln1`` and ``attn.qkv`` ...). mmpretrain's attention is fused
(``F.scaled_dot_product_attention``) and never returns its weights, so the
chosen layers' attention is recomputed from their qkv projections
(design section 1).

Cost: the network runs in inference mode and stops after the deepest chosen
layer's attention. Layers whose weights are not needed run their own fused
forward. A chosen layer that is exactly mmpretrain's
``TransformerEncoderLayer`` with ``MultiheadAttention`` takes its output
from the same qkv projection as its weights (``probs @ v``, projection,
layer scale, residual, FFN, as its ``forward`` does), so no projection is
computed twice; other layer types recompute the weights and then run their
own forward.
"""
import functools
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones.vision_transformer import (
    TransformerEncoderLayer,
)
from mmpretrain.models.utils.attention import MultiheadAttention
from torch import Tensor, nn


def resolve_layers(layers: Union[int, Sequence[int], None],
                   num_layers: int) -> Tuple[int, ...]:
    """Turn a layer selection into sorted, non-negative, unique indices.

    Args:
        layers (int | Sequence[int] | None): Layer indices, negative ones
            count from the end; None means all layers.
        num_layers (int): The number of layers of the network.

    Returns:
        Tuple[int, ...]: The indices, ascending.
    """
    if layers is None:
        return tuple(range(num_layers))
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    if (not isinstance(layers, Sequence) or len(layers) == 0
            or not all(isinstance(i, int) and not isinstance(i, bool)
                       for i in layers)):
        raise TypeError('layers must be None, an int or a non-empty '
                        f'sequence of ints, got {layers!r}')
    out = set()
    for index in layers:
        if not -num_layers <= index < num_layers:
            raise ValueError(f'layers index {index} is out of range for a '
                             f'network with {num_layers} layers')
        out.add(index % num_layers)
    return tuple(sorted(out))


def _resize_pos_embed(pos_embed: Tensor, src_shape: Sequence[int],
                      dst_shape: Sequence[int], mode: str,
                      num_extra_tokens: int) -> Tensor:
    """Interpolate a ``[1, extra + h * w, C]`` position embedding.

    The same resizing as mmpretrain's ``resize_pos_embed``: extra tokens
    are kept, the grid part is interpolated in float32.

    Args:
        pos_embed (Tensor): ``[1, L, C]``.
        src_shape (Sequence[int]): The embedding's grid ``(h, w)``.
        dst_shape (Sequence[int]): The wanted grid ``(h', w')``.
        mode (str): ``F.interpolate`` mode.
        num_extra_tokens (int): Leading tokens without a grid position.

    Returns:
        Tensor: ``[1, extra + h' * w', C]``.
    """
    if tuple(src_shape) == tuple(dst_shape):
        return pos_embed
    extra = pos_embed[:, :num_extra_tokens]
    grid = pos_embed[:, num_extra_tokens:]
    channels = grid.shape[-1]
    grid = grid.reshape(1, src_shape[0], src_shape[1],
                        channels).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid.float(), size=tuple(dst_shape), align_corners=False, mode=mode)
    grid = grid.flatten(2).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat((extra, grid), dim=1)


def _attention_scale(attn: nn.Module, head_dims: int) -> float:
    """The factor the attention module multiplies ``q k^T`` by.

    Args:
        attn (nn.Module): The attention module.
        head_dims (int): Channels per head.

    Returns:
        float: The logit scale.
    """
    scale = getattr(attn, 'scale', None)
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        return float(scale)
    kernel = getattr(attn, 'scaled_dot_product_attention', None)
    if (isinstance(kernel, functools.partial)
            and kernel.keywords.get('scale') is not None):
        value = float(kernel.keywords['scale'])
        # mmpretrain's python kernel (used when ``qk_scale`` is set) divides
        # the logits by ``scale``; F.scaled_dot_product_attention multiplies.
        if getattr(kernel.func, '__name__', '').endswith('_pyimpl'):
            return 1.0 / value
        return value
    return head_dims**-0.5


def _query_key_value(layer: nn.Module,
                     tokens: Tensor) -> Tuple[Tensor, Tensor, Tensor, float]:
    """Split one layer's qkv projection into heads.

    Args:
        layer (nn.Module): A transformer layer with ``ln1`` (or ``norm1``)
            and ``attn.qkv`` / ``attn.num_heads``.
        tokens (Tensor): The layer's input ``[B, T, C]``.

    Returns:
        Tuple[Tensor, Tensor, Tensor, float]: ``q``, ``k``, ``v``, each
        ``[B, heads, T, head_dims]``, and the logit scale.
    """
    norm = getattr(layer, 'ln1', None)
    if norm is None:
        norm = getattr(layer, 'norm1', None)
    attn = getattr(layer, 'attn', None)
    if norm is None or attn is None or not hasattr(attn, 'qkv'):
        raise TypeError(f'{type(layer).__name__} is not a supported '
                        'transformer layer: it needs ln1 (or norm1), '
                        'attn.qkv and attn.num_heads')
    batch, length = tokens.shape[:2]
    num_heads = attn.num_heads
    qkv = attn.qkv(norm(tokens))
    head_dims = qkv.shape[-1] // (3 * num_heads)
    qkv = qkv.reshape(batch, length, 3, num_heads,
                      head_dims).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2], _attention_scale(attn, head_dims)


def _softmax_attention(query: Tensor, key: Tensor, scale: float) -> Tensor:
    """``softmax(q k^T * scale)`` in float32, ``[B, heads, T, T]``."""
    logits = (query @ key.transpose(-2, -1)).float()
    return (logits * scale).softmax(dim=-1)


def layer_attention(layer: nn.Module, tokens: Tensor) -> Tensor:
    """Recompute one encoder layer's attention probabilities.

    ``softmax(q k^T * scale)`` from the layer's pre-norm (``ln1``) and qkv
    projection, as mmpretrain's ``TransformerEncoderLayer`` computes it.

    Args:
        layer (nn.Module): A transformer layer with ``ln1`` (or ``norm1``)
            and ``attn.qkv`` / ``attn.num_heads``.
        tokens (Tensor): The layer's input ``[B, T, C]``.

    Returns:
        Tensor: float32 ``[B, heads, T, T]``, rows sum to 1.
    """
    query, key, _, scale = _query_key_value(layer, tokens)
    return _softmax_attention(query, key, scale)


def has_fast_path(layer: nn.Module) -> bool:
    """Whether :func:`layer_attention_and_output` shares the qkv projection.

    True for exactly mmpretrain's ``TransformerEncoderLayer`` whose
    attention is exactly ``MultiheadAttention`` without value shortcut
    (subclasses may change ``forward``, so they take the generic path).

    Args:
        layer (nn.Module): A transformer layer.

    Returns:
        bool: True when the output is computed from the same projection.
    """
    attn = getattr(layer, 'attn', None)
    return (type(layer) is TransformerEncoderLayer
            and type(attn) is MultiheadAttention and not attn.v_shortcut)


def layer_attention_and_output(
        layer: nn.Module, tokens: Tensor,
        need_output: bool = True) -> Tuple[Tensor, Optional[Tensor]]:
    """One layer's attention probabilities and (optionally) its output.

    For a layer with :func:`has_fast_path`, the output mirrors
    ``TransformerEncoderLayer.forward`` from the qkv projection the
    weights came from: ``x + gamma1(proj(probs @ v))``, then
    ``ffn(ln2(x), identity=x)``. Dropout and drop path are applied as the
    layer's modules do (identity in eval mode; attention dropout is not
    applied, as the fused kernel does in eval mode). Any other layer gets
    :func:`layer_attention` followed by its own ``forward``.

    Args:
        layer (nn.Module): A transformer layer with ``ln1`` (or ``norm1``)
            and ``attn.qkv`` / ``attn.num_heads``.
        tokens (Tensor): The layer's input ``[B, T, C]``.
        need_output (bool): Compute the layer output too. Defaults to True.

    Returns:
        Tuple[Tensor, Tensor | None]: float32 probabilities
        ``[B, heads, T, T]`` and the layer output ``[B, T, C]`` (None when
        ``need_output`` is False).
    """
    if not has_fast_path(layer):
        probs = layer_attention(layer, tokens)
        return probs, layer(tokens) if need_output else None
    query, key, value, scale = _query_key_value(layer, tokens)
    probs = _softmax_attention(query, key, scale)
    if not need_output:
        return probs, None
    attn = layer.attn
    batch, length = tokens.shape[:2]
    mixed = probs.to(value.dtype) @ value  # [B, heads, T, head_dims]
    mixed = mixed.transpose(1, 2).reshape(batch, length, attn.embed_dims)
    out = attn.out_drop(attn.gamma1(attn.proj_drop(attn.proj(mixed))))
    out = tokens + out
    return probs, layer.ffn(layer.ln2(out), identity=out)


def embed_tokens(vit: nn.Module, images: Tensor) -> Tuple[Tensor, int]:
    """Patch-embed images and add CLS token and position embedding.

    Mirrors ``VisionTransformer.forward`` up to the first layer (the same
    tokens ``MAEViT`` builds before masking, all patches kept).

    Args:
        vit (nn.Module): The ViT.
        images (Tensor): ``[B, C, H, W]``.

    Returns:
        Tuple[Tensor, int]: The tokens ``[B, extra + N, C]`` and the number
        of leading extra tokens.
    """
    embedded = vit.patch_embed(images)
    if isinstance(embedded, tuple):
        tokens, resolution = embedded
    else:
        tokens, resolution = embedded, getattr(vit, 'patch_resolution', None)
    cls_token = getattr(vit, 'cls_token', None)
    num_extra = getattr(vit, 'num_extra_tokens',
                        0 if cls_token is None else 1)
    if cls_token is not None:
        tokens = torch.cat(
            (cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
    pos_embed = getattr(vit, 'pos_embed', None)
    if pos_embed is not None:
        if resolution is not None and hasattr(vit, 'patch_resolution'):
            pos_embed = _resize_pos_embed(
                pos_embed, vit.patch_resolution, resolution,
                getattr(vit, 'interpolate_mode', 'bicubic'), num_extra)
        tokens = tokens + pos_embed
    for name in ('drop_after_pos', 'pre_norm'):
        module = getattr(vit, name, None)
        if module is not None:
            tokens = module(tokens)
    return tokens, num_extra


def attention_affinity(vit: nn.Module,
                       images: Tensor,
                       layers: Union[int, Sequence[int], None] = None
                       ) -> Tensor:
    """Patch affinity ``[B, N, N]`` from a ViT's self-attention.

    For each chosen layer the attention probabilities are recomputed from
    the layer's qkv projection and averaged over heads; the layers are
    summed, the extra (CLS) tokens' rows and columns are dropped and the
    result is symmetrised, ``(S + S^T) / 2``. The network runs in
    ``torch.inference_mode`` and eval mode (dropout and drop path off;
    every submodule's mode is restored afterwards), only up to the
    deepest chosen layer's attention; an enclosing autocast (e.g. bf16 on
    CUDA) applies to its layers, the probabilities are always float32.

    Args:
        vit (nn.Module): An mmpretrain ``VisionTransformer`` / ``MAEViT``
            (or a wrapper with ``.module``, e.g. DDP or an EMA model), or
            anything with the same attributes.
        images (Tensor): Input images ``[B, C, H, W]``.
        layers (int | Sequence[int], optional): Indices of the layers whose
            attention is used, negative ones count from the end; None means
            all. Defaults to None.

    Returns:
        Tensor: float32 ``[B, N, N]``, ``N`` the number of patches in
        row-major grid order.
    """
    if not hasattr(vit, 'layers') and hasattr(vit, 'module'):
        vit = vit.module
    for name in ('patch_embed', 'layers'):
        if not hasattr(vit, name):
            raise TypeError(f'vit must be a ViT with `{name}`, got '
                            f'{type(vit).__name__}')
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError('images must be a tensor [B, C, H, W], got '
                         f'{getattr(images, "shape", type(images))}')
    chosen = resolve_layers(layers, len(vit.layers))
    modes = [(module, module.training) for module in vit.modules()]
    vit.eval()
    try:
        with torch.inference_mode():
            tokens, num_extra = embed_tokens(vit, images)
            total = None
            for index in range(chosen[-1] + 1):
                layer = vit.layers[index]
                if index not in chosen:
                    tokens = layer(tokens)  # fused attention
                    continue
                probs, tokens = layer_attention_and_output(
                    layer, tokens, need_output=index < chosen[-1])
                probs = probs.mean(dim=1)
                total = probs if total is None else total + probs
            patches = total[:, num_extra:, num_extra:]
            affinity = (patches + patches.transpose(1, 2)) / 2
    finally:
        for module, mode in modes:
            module.training = mode
    # A normal tensor (inference tensors cannot be saved for backward,
    # e.g. as gather indices derived from them).
    return affinity.clone()
