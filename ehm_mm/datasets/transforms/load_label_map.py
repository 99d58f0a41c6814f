# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import numpy as np
from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS
from PIL import Image


@TRANSFORMS.register_module()
class LoadLabelMap(BaseTransform):
    """Load a per-pixel label map (class or part ids) saved as a PNG.

    Unlike :class:`LoadObjectMask` the grey values are kept as labels (no
    threshold), e.g. the class maps of
    :class:`~ehm_mm.datasets.SyntheticScenes` (0 = background, ``c + 1`` =
    class ``c``).

    **Required Keys:**

    - ``path_key`` (default ``seg_path``)

    **Added Keys:**

    - ``out_key`` (default ``gt_seg_map``): ``np.uint8`` array ``[H, W]``.

    The map must align with the loaded image (checked when ``img`` is in
    the results); geometric transforms after this one do not move it.

    Args:
        path_key (str): Key of the map file path. Defaults to
            ``'seg_path'``.
        out_key (str): Key of the loaded map. Defaults to ``'gt_seg_map'``.
    """

    def __init__(self,
                 path_key: str = 'seg_path',
                 out_key: str = 'gt_seg_map') -> None:
        self.path_key = path_key
        self.out_key = out_key

    def transform(self, results: dict) -> dict:
        """Load the map of one sample.

        Args:
            results (dict): The result dict of the pipeline.

        Returns:
            dict: ``results`` with ``out_key`` added.
        """
        if self.path_key not in results:
            raise KeyError(f'LoadLabelMap needs `{self.path_key}` in the '
                           f'results, found keys {sorted(results)}')
        path = results[self.path_key]
        try:
            with Image.open(path) as image:
                if image.mode not in ('L', 'P', 'I;16', 'I'):
                    raise ValueError(f'mode {image.mode} is not a label map '
                                     '(expected a single-channel image)')
                labels = np.asarray(image)
        except FileNotFoundError as e:
            raise FileNotFoundError(f'label map file not found: {path}') from e
        except (OSError, SyntaxError, ValueError) as e:
            raise ValueError(
                f'cannot decode label map file {path}: {e}') from e
        if 'img' in results and results['img'].shape[:2] != labels.shape:
            raise ValueError(
                f'label map {path} has shape {labels.shape} but the image '
                f'has shape {results["img"].shape[:2]}')
        results[self.out_key] = labels.astype(np.uint8 if labels.max(
            initial=0) < 256 else np.int32)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(path_key={self.path_key!r}, '
                f'out_key={self.out_key!r})')
