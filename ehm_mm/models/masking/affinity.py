# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Patch affinity from a Vision Transformer's own self-attention.

mmpretrain's attention is fused (``F.scaled_dot_product_attention``) and
never returns its weights. Its ``MultiheadAttention`` takes the kernel as
an attribute, ``scaled_dot_product_attention(q, k, v, ...)``: an
:class:`AttentionReadout` there calls the fused kernel as before and also
hands ``q, k`` to a reader, which adds the head-averaged
``softmax(q k^T * scale)`` into one float32 ``[B, T, T]`` sum.

:func:`attention_affinity` runs the network's own token embedding and
layers up to the deepest chosen one, whose attention weights need only its
``q, k`` (its ``ln1`` and ``qkv``), then stops: no exception, nothing
after it runs. ``EHMMAEViT`` carries its readouts from construction (its
documented seam, :meth:`~ehm_mm.models.EHMMAEViT.attention_affinity`);
other mmpretrain ViTs get them for the call and back afterwards.

Only attention types whose call of the kernel is known are read
(:data:`SUPPORTED_ATTENTION`); any other raises a clear TypeError.
"""
import contextlib
import functools
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from mmpretrain.models.backbones.vision_transformer import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.models.utils.attention import MultiheadAttention
from torch import Tensor, nn

# Attention modules that compute ``self.scaled_dot_product_attention(q, k,
# v, ...)`` with ``q, k`` of shape ``[B, heads, T, head_dims]`` on every
# token, once per forward.
SUPPORTED_ATTENTION = (MultiheadAttention, )
# Largest float32 temporary of probabilities, [B, heads chunk, T, T].
_CHUNK_BYTES = 1 << 28


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


def attention_scale(attn: nn.Module) -> float:
    """The factor an attention module's kernel multiplies ``q k^T`` by.

    ``head_dims ** -0.5``, unless the module's kernel is a ``partial`` with
    an explicit ``scale`` (mmpretrain does this when ``qk_scale`` is set):
    ``F.scaled_dot_product_attention`` multiplies by it, mmpretrain's
    python kernel (``*_pyimpl``) divides by it.

    Args:
        attn (nn.Module): A supported attention module.

    Returns:
        float: The logit scale.
    """
    kernel = attn.scaled_dot_product_attention
    kernel = getattr(kernel, 'kernel', kernel)  # an AttentionReadout's
    if (isinstance(kernel, functools.partial)
            and kernel.keywords.get('scale') is not None):
        value = float(kernel.keywords['scale'])
        if getattr(kernel.func, '__name__', '').endswith('_pyimpl'):
            return 1.0 / value
        return value
    return attn.head_dims**-0.5


def head_mean_attention(query: Tensor, key: Tensor, scale: float,
                        fused: bool = True) -> Tensor:
    """Head-averaged ``softmax(q k^T * scale)`` in float32.

    The logits are computed in float32 whatever the input dtype or an
    enclosing autocast.

    Args:
        query (Tensor): ``[B, heads, T, head_dims]``.
        key (Tensor): ``[B, heads, T, head_dims]``.
        scale (float): The logit scale.
        fused (bool): Add the heads up chunk by chunk (temporaries of at
            most ~256 MiB); False materialises every head's probabilities
            at once (the reference). Defaults to True.

    Returns:
        Tensor: float32 ``[B, T, T]``, rows sum to 1.
    """
    batch, heads, length = query.shape[:3]
    per_head = batch * length * length * 4
    chunk = heads if not fused else max(1, min(heads,
                                               _CHUNK_BYTES // per_head))
    with torch.autocast(query.device.type, enabled=False):
        total = None
        for start in range(0, heads, chunk):
            q = query[:, start:start + chunk].float()
            k = key[:, start:start + chunk].float()
            probs = (q @ k.transpose(-2, -1) * scale).softmax(-1)
            part = probs.sum(1)  # [B, T, T]
            total = part if total is None else total.add_(part)
        return total.div_(heads)


class AttentionReadout:
    """A ``MultiheadAttention`` kernel that also hands ``q, k`` to a reader.

    Calls ``kernel(query, key, value, ...)`` exactly as the module would;
    when :attr:`reader` is set it first gets ``(query, key)``.

    Args:
        kernel (Callable): The module's kernel (fused or mmpretrain's
            python one).
    """

    def __init__(self, kernel: Callable) -> None:
        self.kernel = kernel
        self.reader: Optional[Callable[[Tensor, Tensor], None]] = None

    def __call__(self, query: Tensor, key: Tensor, value: Tensor, *args,
                 **kwargs) -> Tensor:
        if self.reader is not None:
            self.reader(query, key)
        return self.kernel(query, key, value, *args, **kwargs)


def install_readouts(vit: nn.Module) -> None:
    """Give every supported attention of ``vit`` an :class:`AttentionReadout`.

    Args:
        vit (nn.Module): An mmpretrain ``VisionTransformer``.
    """
    for layer in vit.layers:
        attn = getattr(layer, 'attn', None)
        if type(attn) in SUPPORTED_ATTENTION and not isinstance(
                attn.scaled_dot_product_attention, AttentionReadout):
            attn.scaled_dot_product_attention = AttentionReadout(
                attn.scaled_dot_product_attention)


@contextlib.contextmanager
def _readouts(modules: Sequence[nn.Module]
              ) -> Iterator[List[AttentionReadout]]:
    """The modules' readouts for a block: theirs, or lent for the block."""
    lent = [(attn, attn.scaled_dot_product_attention) for attn in modules
            if not isinstance(attn.scaled_dot_product_attention,
                              AttentionReadout)]
    for attn, kernel in lent:
        attn.scaled_dot_product_attention = AttentionReadout(kernel)
    readouts = [attn.scaled_dot_product_attention for attn in modules]
    try:
        yield readouts
    finally:
        for readout in readouts:
            readout.reader = None
        for attn, kernel in lent:
            attn.scaled_dot_product_attention = kernel


def _attention_modules(vit: nn.Module, chosen: Sequence[int]) -> list:
    """The chosen layers' attention modules, checked against the list."""
    modules = []
    for index in chosen:
        attn = getattr(vit.layers[index], 'attn', None)
        if type(attn) not in SUPPORTED_ATTENTION:
            names = [t.__module__ + '.' + t.__name__
                     for t in SUPPORTED_ATTENTION]
            raise TypeError(
                f'attention_affinity: layer {index} has attention '
                f'{type(attn).__name__}, not one of the supported types '
                f'{names} (its `scaled_dot_product_attention` call is read)')
        modules.append(attn)
    return modules


def token_embedding(vit: VisionTransformer, images: Tensor) -> Tensor:
    """The tokens a ViT's first layer gets, as ``VisionTransformer.forward``.

    Patch embedding, extra (CLS) tokens, the position embedding resized to
    the input, its dropout and the pre-norm.

    Args:
        vit (VisionTransformer): The network.
        images (Tensor): ``[B, C, H, W]``.

    Returns:
        Tensor: ``[B, T, C]``.
    """
    x, patch_resolution = vit.patch_embed(images)
    if vit.cls_token is not None:
        x = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    x = x + resize_pos_embed(
        vit.pos_embed, vit.patch_resolution, patch_resolution,
        mode=vit.interpolate_mode, num_extra_tokens=vit.num_extra_tokens)
    return vit.pre_norm(vit.drop_after_pos(x))


def _query_key(layer: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor]:
    """A layer's ``q, k`` ``[B, heads, T, head_dims]`` (its ln1 and qkv)."""
    attn = layer.attn
    batch, length, _ = x.shape
    qkv = attn.qkv(layer.ln1(x)).reshape(batch, length, 3, attn.num_heads,
                                         attn.head_dims).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1]


def attention_affinity(vit: nn.Module,
                       images: Tensor,
                       layers: Union[int, Sequence[int], None] = None,
                       fused: bool = True) -> Tensor:
    """Patch affinity ``[B, N, N]`` from a ViT's self-attention.

    For each chosen layer the attention probabilities are averaged over
    heads; the layers are summed, the extra (CLS) tokens' rows and columns
    are dropped and the result is symmetrised, ``(S + S^T) / 2``. The
    network runs in ``torch.inference_mode`` and eval mode (dropout and
    drop path off; every submodule's mode is restored afterwards), only up
    to the deepest chosen layer's ``q, k``; an enclosing autocast (e.g.
    bf16 on CUDA) applies to its layers, while the attention logits and
    probabilities are float32.

    Args:
        vit (nn.Module): An mmpretrain ``VisionTransformer`` (``MAEViT``,
            ``EHMMAEViT`` ...) or a wrapper with ``.module`` (DDP, EMA).
        images (Tensor): Input images ``[B, C, H, W]``.
        layers (int | Sequence[int], optional): Indices of the layers whose
            attention is used, negative ones count from the end; None means
            all. Defaults to None.
        fused (bool): Accumulate heads chunk by chunk (see
            :func:`head_mean_attention`); False is the reference path.
            Defaults to True.

    Returns:
        Tensor: float32 ``[B, N, N]``, ``N`` the number of patches in
        row-major grid order.
    """
    if not isinstance(vit, VisionTransformer) and hasattr(vit, 'module'):
        vit = vit.module
    if not isinstance(vit, VisionTransformer):
        raise TypeError('vit must be an mmpretrain VisionTransformer (or a '
                        f'wrapper of one), got {type(vit).__name__}')
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError('images must be a tensor [B, C, H, W], got '
                         f'{getattr(images, "shape", type(images))}')
    chosen = resolve_layers(layers, len(vit.layers))
    modules = _attention_modules(vit, chosen)
    sums = []

    def reader(scale: float) -> Callable[[Tensor, Tensor], None]:
        return lambda query, key: sums.append(
            head_mean_attention(query, key, scale, fused))

    modes = [(module, module.training) for module in vit.modules()]
    vit.eval()
    try:
        with torch.inference_mode(), _readouts(modules[:-1]) as readouts:
            for readout, attn in zip(readouts, modules):
                readout.reader = reader(attention_scale(attn))
            x = token_embedding(vit, images)
            for layer in vit.layers[:chosen[-1]]:
                x = layer(x)
            reader(attention_scale(modules[-1]))(
                *_query_key(vit.layers[chosen[-1]], x))
            total = sums[0]
            for part in sums[1:]:
                total = total + part
            extra = vit.num_extra_tokens
            patches = total[:, extra:, extra:]  # [B, N, N]
            affinity = (patches + patches.transpose(1, 2)) / 2
    finally:
        for module, mode in modes:
            module.training = mode
    # A normal tensor (inference tensors cannot be saved for backward,
    # e.g. as gather indices derived from them).
    return affinity.clone()
