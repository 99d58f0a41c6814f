# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import numpy as np
from mmpretrain.registry import TRANSFORMS
from PIL import Image

from .load_pixel_map import LoadPixelMap


@TRANSFORMS.register_module()
class LoadObjectMask(LoadPixelMap):
    """Load a per-pixel object mask saved as an image file.

    **Required Keys:**

    - ``path_key`` (default ``mask_path``)

    **Added Keys:**

    - ``out_key`` (default ``gt_object_mask``): ``np.uint8`` array
      ``[H, W]``, 1 = object.

    The mask must align with the loaded image: when ``img`` is already in
    the results, their heights and widths must match. Geometric transforms
    after this one move the image but not the mask, so put it after them or
    use pipelines without them (as for evaluation).

    Args:
        path_key (str): Key of the mask file path. Defaults to
            ``'mask_path'``.
        out_key (str): Key of the loaded mask. Defaults to
            ``'gt_object_mask'``.
        threshold (int): Grey values above it are object. Defaults to 127.
    """

    kind = 'object mask'

    def __init__(self,
                 path_key: str = 'mask_path',
                 out_key: str = 'gt_object_mask',
                 threshold: int = 127) -> None:
        super().__init__(path_key=path_key, out_key=out_key)
        self.threshold = threshold

    def decode(self, image: Image.Image) -> np.ndarray:
        """Threshold the grey values of the image.

        Args:
            image (PIL.Image.Image): The opened file (any mode).

        Returns:
            np.ndarray: ``[H, W]`` ``np.uint8`` mask, 1 = object.
        """
        grey = np.asarray(image.convert('L'))
        return (grey > self.threshold).astype(np.uint8)

    def __repr__(self) -> str:
        return f'{super().__repr__()[:-1]}, threshold={self.threshold})'
