# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from typing import Optional, Sequence, Tuple, Union

import torch
from mmpretrain.models import MAEViT, VisionTransformer
from mmpretrain.registry import MODELS


@MODELS.register_module()
class EHMMAEViT(MAEViT):
    """MAE ViT whose token mask may be given from outside.

    mmpretrain's :class:`~mmpretrain.models.MAEViT` draws its random mask
    inside ``forward``. This subclass also accepts a mask computed elsewhere
    (for instance by ``EvolvedHierarchicalMasking`` from a teacher's
    attention) and otherwise behaves exactly like ``MAEViT``; it adds no
    parameters, so its state dict has exactly ``MAEViT``'s keys.

    Args:
        arch (str | dict): Vision Transformer architecture. Defaults to
            ``'b'``.
        img_size (int | Sequence[int]): Input image size; each side must be
            divisible by ``patch_size``. Defaults to 224.
        patch_size (int): The patch size. Defaults to 16.
        **kwargs: Other arguments of :class:`~mmpretrain.models.MAEViT`
            (``mask_ratio``, ``drop_path_rate``, ``init_cfg``, ...).
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
        mask_ratio = kwargs.get('mask_ratio', 0.75)
        if not 0 < mask_ratio < 1:
            raise ValueError('backbone.mask_ratio must be in (0, 1), got '
                             f'{mask_ratio}')
        super().__init__(
            arch=arch, img_size=img_size, patch_size=patch_size, **kwargs)

    def mask_tokens(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        ids_restore: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keep the visible tokens of a given mask.

        Args:
            x (torch.Tensor): Patch tokens ``[B, N, C]``.
            mask (torch.Tensor): ``[B, N]``, nonzero = masked; every image
                must mask the same number of tokens.
            ids_restore (torch.Tensor, optional): ``[B, N]`` as in
                ``MAEViT.random_masking``: the position of each patch in the
                shuffled order whose first ``N - num_masked`` entries are the
                visible patches. Defaults to None, which means the visible
                patches in raster order.

        Returns:
            Tuple[torch.Tensor, torch.Tensor]: The visible tokens
            ``[B, N_keep, C]`` and ``ids_restore`` ``[B, N]``.
        """
        B, N, C = x.shape
        if mask.shape != (B, N):
            raise ValueError(f'mask must have shape {(B, N)} (batch, '
                             f'patches), got {tuple(mask.shape)}')
        if ids_restore is not None and ids_restore.shape != (B, N):
            raise ValueError(f'ids_restore must have shape {(B, N)}, '
                             f'got {tuple(ids_restore.shape)}')
        masked = mask != 0
        num_masked = masked.sum(dim=1)
        uneven = (num_masked != num_masked[0]).any()
        if ids_restore is None:
            misordered = torch.zeros_like(uneven)
        else:
            # visible first: exactly the visible patches sit before the
            # image's visible count in the shuffled order
            num_visible = (N - num_masked)[:, None]
            misordered = ((ids_restore < num_visible) == masked).any()
        # One host read for all the checks (a device sync on accelerators).
        uneven, misordered, first = torch.stack(
            [uneven.long(), misordered.long(), num_masked[0]]).tolist()
        if uneven:
            raise ValueError('every image must mask the same number of '
                             f'patches, got counts {num_masked.tolist()}')
        if misordered:
            raise ValueError('ids_restore does not put the visible patches '
                             'of mask first')
        num_keep = N - first
        if ids_restore is None:
            # Stable sort: visible patches first, in raster order.
            ids_shuffle = torch.argsort(masked.byte(), dim=1, stable=True)
            ids_restore = torch.argsort(ids_shuffle, dim=1)
        else:
            ids_shuffle = torch.argsort(ids_restore, dim=1)
        ids_keep = ids_shuffle[:, :num_keep]
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, C))
        return x, ids_restore

    def forward(
        self,
        x: torch.Tensor,
        mask: Union[bool, None, torch.Tensor] = True,
        ids_restore: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode images, masking tokens as asked.

        Args:
            x (torch.Tensor): Images ``[B, C, H, W]``.
            mask (bool | torch.Tensor | None): ``None`` or ``False`` runs the
                plain ViT on all tokens (returns
                ``VisionTransformer.forward``'s output). ``True`` draws
                MAE's random mask with ``self.mask_ratio``. A ``[B, N]``
                tensor (nonzero = masked) is used as the mask. Defaults to
                True.
            ids_restore (torch.Tensor, optional): With a tensor ``mask``, the
                token order to use, see :meth:`mask_tokens`. Defaults to
                None.

        Returns:
            Tuple[torch.Tensor, torch.Tensor, torch.Tensor]: As
            ``MAEViT.forward``: hidden features of the CLS and visible
            tokens ``[B, 1 + N_keep, C]``, the mask ``[B, N]`` (float,
            1 = masked) and ``ids_restore`` ``[B, N]``.
        """
        if mask is None or mask is False:
            return VisionTransformer.forward(self, x)
        if mask is True:
            if ids_restore is not None:
                raise ValueError('ids_restore needs a mask tensor')
            return super().forward(x, mask=True)
        if not isinstance(mask, torch.Tensor):
            raise TypeError('mask must be a bool, None or a [B, N] tensor, '
                            f'got {type(mask).__name__}')
        B = x.shape[0]
        x = self.patch_embed(x)[0]
        # add pos embed w/o cls token
        x = x + self.pos_embed[:, 1:, :]
        x, ids_restore = self.mask_tokens(x, mask, ids_restore)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(B, -1, -1), x), dim=1)
        for layer in self.layers:
            x = layer(x)
        x = self.norm1(x)
        return x, (mask != 0).float(), ids_restore
