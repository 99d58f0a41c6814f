# Copyright (c) OpenMMLab. All rights reserved.
"""Patch affinity from a Vision Transformer's own self-attention.

Torch only, duck-typed on mmpretrain's ``VisionTransformer`` / ``MAEViT``
attributes (``patch_embed``, ``cls_token``, ``pos_embed``, ``layers[i]``
with ``ln1`` and ``attn.qkv`` ...). mmpretrain's attention is fused
(``F.scaled_dot_product_attention``) and never returns its weights, so the
chosen layers' attention is recomputed from their qkv projections
(design section 1).
"""
import functools
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
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
    query, key = qkv[0], qkv[1]  # [B, heads, T, head_dims]
    logits = (query @ key.transpose(-2, -1)).float()
    return (logits * _attention_scale(attn, head_dims)).softmax(dim=-1)


def _embed_tokens(vit: nn.Module, images: Tensor) -> Tuple[Tensor, int]:
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


@torch.no_grad()
def attention_affinity(vit: nn.Module,
                       images: Tensor,
                       layers: Union[int, Sequence[int], None] = None
                       ) -> Tensor:
    """Patch affinity ``[B, N, N]`` from a ViT's self-attention.

    For each chosen layer the attention probabilities are recomputed from
    the layer's qkv projection and averaged over heads; the layers are
    summed, the extra (CLS) tokens' rows and columns are dropped and the
    result is symmetrised, ``(S + S^T) / 2``. The network runs without
    gradient, in eval mode (dropout and drop path off; every submodule's
    mode is restored afterwards), and only up to the deepest chosen layer.

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
        tokens, num_extra = _embed_tokens(vit, images)
        total = None
        for index in range(chosen[-1] + 1):
            layer = vit.layers[index]
            if index in chosen:
                attn = layer_attention(layer, tokens).mean(dim=1)
                total = attn if total is None else total + attn
            if index < chosen[-1]:
                tokens = layer(tokens)
    finally:
        for module, mode in modes:
            module.training = mode
    patches = total[:, num_extra:, num_extra:]
    return (patches + patches.transpose(1, 2)) / 2
