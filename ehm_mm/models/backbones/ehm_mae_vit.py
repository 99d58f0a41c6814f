# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from typing import Optional, Sequence, Tuple, Union

import torch
from mmpretrain.models import MAEViT
from mmpretrain.registry import MODELS
from torch import Tensor

from ..masking import attention_affinity, check_mask_ratio, install_readouts


@MODELS.register_module()
class EHMMAEViT(MAEViT):
    """MAE ViT whose token mask may be given from outside.

    mmpretrain's :class:`~mmpretrain.models.MAEViT` draws its random mask
    in ``random_masking``, called by its ``forward``. This subclass
    overrides ``random_masking`` to use a mask given to ``forward`` (for
    instance by ``EvolvedHierarchicalMasking`` from a teacher's attention)
    and otherwise is exactly ``MAEViT``; it adds no parameters, so its
    state dict has exactly ``MAEViT``'s keys.

    Reading attention is a seam of this backbone
    (:meth:`attention_affinity`): every layer's attention kernel is an
    :class:`~ehm_mm.models.masking.affinity.AttentionReadout` from
    construction, the fused kernel that can also hand its ``q, k`` to a
    reader, so the teacher's affinity is read in a normal forward that
    stops after the deepest chosen layer's ``q, k``.

    Args:
        arch (str | dict): Vision Transformer architecture. Defaults to
            ``'b'``.
        img_size (int | Sequence[int]): Input image size; each side must be
            divisible by ``patch_size``. Defaults to 224.
        patch_size (int): The patch size. Defaults to 16.
        **kwargs: Other arguments of :class:`~mmpretrain.models.MAEViT`
            (``mask_ratio`` of its own random masking, ``drop_path_rate``,
            ``init_cfg``, ...).
    """

    def __init__(self,
                 arch: Union[str, dict] = 'b',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 **kwargs) -> None:
        sizes = (img_size, img_size) if isinstance(img_size,
                                                   int) else tuple(img_size)
        if len(sizes) != 2 or any(
                not isinstance(s, int) or s <= 0 for s in sizes):
            raise ValueError('backbone.img_size must be a positive int or '
                             f'a pair of them, got {img_size!r}')
        if not isinstance(patch_size, int) or patch_size <= 0:
            raise ValueError('backbone.patch_size must be a positive int, '
                             f'got {patch_size!r}')
        if any(s % patch_size for s in sizes):
            raise ValueError(
                f'backbone.img_size {img_size} is not divisible by '
                f'backbone.patch_size {patch_size}')
        try:  # the masking core's one check of a ratio
            check_mask_ratio(kwargs.get('mask_ratio', 0.75))
        except ValueError as e:
            raise ValueError(f'backbone.{e}') from None
        super().__init__(
            arch=arch, img_size=img_size, patch_size=patch_size, **kwargs)
        self._given = None  # (mask, ids_restore, ids_keep) during forward
        install_readouts(self)

    def attention_affinity(self,
                           images: Tensor,
                           layers: Union[int, Sequence[int], None] = None,
                           fused: bool = True) -> Tensor:
        """Patch affinity ``[B, N, N]`` from this network's self-attention.

        The head-averaged attention probabilities of the chosen layers,
        summed, patch tokens only, symmetrised; computed in inference and
        eval mode (modes restored), float32 logits, the layers run only up
        to the deepest chosen one (see
        :func:`~ehm_mm.models.masking.attention_affinity`).

        Args:
            images (Tensor): ``[B, C, H, W]``.
            layers (int | Sequence[int], optional): Layer indices (negative
                ones count from the end); None means all. Defaults to None.
            fused (bool): Accumulate heads chunk by chunk. Defaults to True.

        Returns:
            Tensor: float32 ``[B, N, N]``.
        """
        return attention_affinity(self, images, layers, fused)

    def random_masking(self,
                       x: Tensor,
                       mask_ratio: float = 0.75
                       ) -> Tuple[Tensor, Tensor, Tensor]:
        """MAE's random masking, or the mask given to :meth:`forward`.

        Args:
            x (Tensor): Patch tokens ``[B, N, C]``.
            mask_ratio (float): Ratio of MAE's random masking.
                Defaults to 0.75.

        Returns:
            Tuple[Tensor, Tensor, Tensor]: The visible tokens
            ``[B, N_keep, C]``, the mask ``[B, N]`` (float, 1 = masked) and
            ``ids_restore`` ``[B, N]``.
        """
        if self._given is None:
            return super().random_masking(x, mask_ratio)
        mask, ids_restore, ids_keep = self._given
        visible = x.gather(1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))
        return visible, mask, ids_restore  # [B, N_keep, C]

    def forward(
        self,
        x: Tensor,
        mask: Union[bool, None, Tensor] = True,
        ids_restore: Optional[Tensor] = None,
        ids_keep: Optional[Tensor] = None
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Encode images, masking tokens as asked.

        Args:
            x (Tensor): Images ``[B, C, H, W]``.
            mask (bool | Tensor | None): ``None`` or ``False`` runs the
                plain ViT on all tokens (returns
                ``VisionTransformer.forward``'s output). ``True`` draws
                MAE's random mask with ``self.mask_ratio``. A ``[B, N]``
                tensor (nonzero = masked) is used as the mask. Defaults to
                True.
            ids_restore (Tensor, optional): With a tensor ``mask``, the
                position of each patch in the shuffled order whose first
                ``N_keep`` entries are the visible patches, as in
                ``MAEViT.random_masking``. Defaults to None, which means the
                visible patches in raster order.
            ids_keep (Tensor, optional): With ``mask`` and ``ids_restore``,
                the visible patches ``[B, N_keep]`` (e.g.
                ``MaskingResult.ids_keep``). The three are then trusted and
                nothing is read from the device; without it the mask is
                checked on the host (equal counts, order). Defaults to None.

        Returns:
            Tuple[Tensor, Tensor, Tensor]: As ``MAEViT.forward``: hidden
            features of the CLS and visible tokens ``[B, 1 + N_keep, C]``,
            the mask ``[B, N]`` (float, 1 = masked) and ``ids_restore``
            ``[B, N]``.
        """
        if not isinstance(mask, Tensor):
            if ids_restore is not None or ids_keep is not None:
                raise ValueError(
                    'ids_restore needs a mask tensor (so does ids_keep)')
            if mask is None or mask is False:
                return super(MAEViT, self).forward(x)
            if mask is not True:
                raise TypeError('mask must be a bool, None or a [B, N] '
                                f'tensor, got {type(mask).__name__}')
            return super().forward(x, mask=True)
        self._given = self._check_mask(x.shape[0], mask, ids_restore,
                                       ids_keep)
        try:
            return super().forward(x, mask=True)
        finally:
            self._given = None

    def _check_mask(self, batch: int, mask: Tensor,
                    ids_restore: Optional[Tensor],
                    ids_keep: Optional[Tensor]
                    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Shape-check a given mask; derive and check the order if needed.

        Returns:
            Tuple[Tensor, Tensor, Tensor]: ``mask`` (float), ``ids_restore``
            and ``ids_keep``.
        """
        num = self.num_patches
        for name, value in (('mask', mask), ('ids_restore', ids_restore)):
            if value is not None and value.shape != (batch, num):
                raise ValueError(f'{name} must have shape {(batch, num)} '
                                 f'(batch, patches), got '
                                 f'{tuple(value.shape)}')
        if ids_keep is not None:
            if ids_restore is None:
                raise ValueError('ids_keep needs ids_restore')
            if ids_keep.dim() != 2 or ids_keep.shape[0] != batch:
                raise ValueError(f'ids_keep must be [{batch}, N_keep], got '
                                 f'{tuple(ids_keep.shape)}')
            return (mask != 0).float(), ids_restore, ids_keep
        # Checked path: one host read for all the checks.
        masked = mask != 0
        num_masked = masked.sum(dim=1)  # [B]
        uneven = (num_masked != num_masked[0]).any()
        if ids_restore is None:
            misordered = torch.zeros_like(uneven)
        else:
            # visible first: exactly the visible patches sit before the
            # image's visible count in the shuffled order
            num_visible = (num - num_masked)[:, None]
            misordered = ((ids_restore < num_visible) == masked).any()
        uneven, misordered, first = torch.stack(
            [uneven.long(), misordered.long(), num_masked[0]]).tolist()
        if uneven:
            raise ValueError('every image must mask the same number of '
                             f'patches, got counts {num_masked.tolist()}')
        if misordered:
            raise ValueError('ids_restore does not put the visible patches '
                             'of mask first')
        if ids_restore is None:
            # Stable sort: visible patches first, in raster order.
            ids_shuffle = torch.argsort(masked.byte(), dim=1, stable=True)
            ids_restore = torch.argsort(ids_shuffle, dim=1)
        else:
            ids_shuffle = torch.argsort(ids_restore, dim=1)
        return masked.float(), ids_restore, ids_shuffle[:, :num - first]
