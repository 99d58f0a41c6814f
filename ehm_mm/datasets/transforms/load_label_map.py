# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import numpy as np
from mmpretrain.registry import TRANSFORMS
from PIL import Image

from .load_pixel_map import LoadPixelMap


@TRANSFORMS.register_module()
class LoadLabelMap(LoadPixelMap):
    """Load a per-pixel label map (class or part ids) saved as a PNG.

    Unlike :class:`LoadObjectMask` the grey values are kept as labels (no
    threshold), e.g. the class maps of
    :class:`~ehm_mm.datasets.SyntheticScenes` (0 = background, ``c + 1`` =
    class ``c``).

    **Required Keys:**

    - ``path_key`` (default ``seg_path``)

    **Added Keys:**

    - ``out_key`` (default ``gt_seg_map``): ``np.uint8`` array ``[H, W]``
      (``np.int32`` when a label is above 255).

    The map must align with the loaded image (checked when ``img`` is in
    the results); geometric transforms after this one do not move it.

    Args:
        path_key (str): Key of the map file path. Defaults to
            ``'seg_path'``.
        out_key (str): Key of the loaded map. Defaults to ``'gt_seg_map'``.
    """

    kind = 'label map'

    def __init__(self,
                 path_key: str = 'seg_path',
                 out_key: str = 'gt_seg_map') -> None:
        super().__init__(path_key=path_key, out_key=out_key)

    def decode(self, image: Image.Image) -> np.ndarray:
        """Keep the grey values of a single-channel image as labels.

        Args:
            image (PIL.Image.Image): The opened file.

        Returns:
            np.ndarray: ``[H, W]`` labels, ``np.uint8`` or ``np.int32``.

        Raises:
            ValueError: If the image has colour channels.
        """
        if image.mode not in ('L', 'P', 'I;16', 'I'):
            raise ValueError(f'mode {image.mode} is not a label map '
                             '(expected a single-channel image)')
        labels = np.asarray(image)
        return labels.astype(
            np.uint8 if labels.max(initial=0) < 256 else np.int32)
