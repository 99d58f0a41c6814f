# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import numpy as np
from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS
from PIL import Image


@TRANSFORMS.register_module()
class LoadObjectMask(BaseTransform):
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

    def __init__(self,
                 path_key: str = 'mask_path',
                 out_key: str = 'gt_object_mask',
                 threshold: int = 127) -> None:
        self.path_key = path_key
        self.out_key = out_key
        self.threshold = threshold

    def transform(self, results: dict) -> dict:
        """Load the mask of one sample.

        Args:
            results (dict): The result dict of the pipeline.

        Returns:
            dict: ``results`` with ``out_key`` added.
        """
        if self.path_key not in results:
            raise KeyError(f'LoadObjectMask needs `{self.path_key}` in the '
                           f'results, found keys {sorted(results)}')
        path = results[self.path_key]
        try:
            with Image.open(path) as image:
                grey = np.asarray(image.convert('L'))
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f'object mask file not found: {path}') from e
        except (OSError, SyntaxError, ValueError) as e:
            raise ValueError(
                f'cannot decode object mask file {path}: {e}') from e
        if 'img' in results and results['img'].shape[:2] != grey.shape:
            raise ValueError(
                f'object mask {path} has shape {grey.shape} but the image '
                f'has shape {results["img"].shape[:2]}')
        results[self.out_key] = (grey > self.threshold).astype(np.uint8)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(path_key={self.path_key!r}, '
                f'out_key={self.out_key!r}, threshold={self.threshold})')
