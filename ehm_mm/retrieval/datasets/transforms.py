# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Transforms of the retrieval test pipelines."""
from typing import Optional, Sequence

from mmcv.transforms import BaseTransform
from mmpretrain.datasets.transforms import PackInputs
from mmpretrain.registry import TRANSFORMS

#: Sample keys the retrieval metrics read (besides the feature).
RETRIEVAL_META_KEYS = ('query_idx', 'db_idx', 'whiten_idx', 'retrieval_gt',
                       'block')


@TRANSFORMS.register_module()
class CropToBBox(BaseTransform):
    """Crop the image to a per-sample box, when the sample has one.

    The revisited Oxford/Paris protocol crops each query to its box in the
    original image before any resizing. Samples without the key (database
    images) pass through unchanged.

    Required keys: ``img``. Optional keys: ``bbox_key`` (``x1, y1, x2, y2``
    in pixels, right / bottom exclusive). Modified keys: ``img``,
    ``img_shape``.

    Args:
        bbox_key (str): Key of the box. Defaults to ``'crop_bbox'``.
    """

    def __init__(self, bbox_key: str = 'crop_bbox') -> None:
        self.bbox_key = bbox_key

    def transform(self, results: dict) -> dict:
        """Crop ``results['img']`` to ``results[bbox_key]`` if present.

        Args:
            results (dict): The sample.

        Returns:
            dict: The sample, cropped.
        """
        bbox = results.get(self.bbox_key)
        if bbox is None:
            return results
        if len(bbox) != 4:
            raise ValueError(f'{self.bbox_key} must be (x1, y1, x2, y2), got '
                             f'{bbox!r} for {results.get("img_path")}')
        img = results['img']
        height, width = img.shape[:2]
        # Rounded like PIL's Image.crop, then kept inside the image.
        x1, y1, x2, y2 = (int(round(float(v))) for v in bbox)
        x1, x2 = max(0, x1), min(width, x2)
        y1, y2 = max(0, y1), min(height, y2)
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f'{self.bbox_key} {bbox!r} is empty inside the '
                             f'{width}x{height} image '
                             f'{results.get("img_path")}')
        results['img'] = img[y1:y2, x1:x2]
        results['img_shape'] = results['img'].shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(bbox_key={self.bbox_key!r})'


@TRANSFORMS.register_module()
class PackRetrievalInputs(PackInputs):
    """``PackInputs`` that also keeps the retrieval keys as metainfo.

    The retrieval metrics need each sample's role indices and ground truth
    (:data:`RETRIEVAL_META_KEYS`); they are appended to ``meta_keys``.

    Args:
        meta_keys (Sequence[str], optional): Other meta keys; None uses
            mmpretrain's defaults. Defaults to None.
        **kwargs: Other arguments of ``PackInputs``.
    """

    def __init__(self, meta_keys: Optional[Sequence[str]] = None,
                 **kwargs) -> None:
        if meta_keys is None:
            meta_keys = PackInputs.DEFAULT_META_KEYS
        meta_keys = tuple(meta_keys) + tuple(
            k for k in RETRIEVAL_META_KEYS if k not in meta_keys)
        super().__init__(meta_keys=meta_keys, **kwargs)
