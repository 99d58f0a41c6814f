# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import numpy as np
from mmcv.transforms import BaseTransform
from PIL import Image


class LoadPixelMap(BaseTransform):
    """Base of the transforms that load a per-pixel map saved as an image.

    It reads the file named by ``results[path_key]``, turns it into an
    array with :meth:`decode`, checks that it aligns with the loaded image
    (when ``img`` is already in the results) and stores it under
    ``out_key``. A subclass names what it loads (``kind``) and how the
    image becomes an array (:meth:`decode`).

    Geometric transforms after this one move the image but not the map, so
    put it after them or use pipelines without them (as for evaluation).

    Args:
        path_key (str): Key of the map file path.
        out_key (str): Key of the loaded map.
    """

    #: What the map is, for error messages (e.g. ``'label map'``).
    kind: str = 'pixel map'

    def __init__(self, path_key: str, out_key: str) -> None:
        self.path_key = path_key
        self.out_key = out_key

    def decode(self, image: Image.Image) -> np.ndarray:
        """Turn the opened image into the map.

        Args:
            image (PIL.Image.Image): The opened file.

        Returns:
            np.ndarray: The map, ``[H, W]``.

        Raises:
            ValueError: If the image cannot be such a map.
        """
        raise NotImplementedError

    def transform(self, results: dict) -> dict:
        """Load the map of one sample.

        Args:
            results (dict): The result dict of the pipeline.

        Returns:
            dict: ``results`` with ``out_key`` added.
        """
        if self.path_key not in results:
            raise KeyError(f'{self.__class__.__name__} needs '
                           f'`{self.path_key}` in the results, found keys '
                           f'{sorted(results)}')
        path = results[self.path_key]
        try:
            with Image.open(path) as image:
                pixel_map = self.decode(image)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f'{self.kind} file not found: {path}') from e
        except (OSError, SyntaxError, ValueError) as e:
            raise ValueError(
                f'cannot decode {self.kind} file {path}: {e}') from e
        if 'img' in results and results['img'].shape[:2] != pixel_map.shape:
            raise ValueError(
                f'{self.kind} {path} has shape {pixel_map.shape} but the '
                f'image has shape {results["img"].shape[:2]}')
        results[self.out_key] = pixel_map
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(path_key={self.path_key!r}, '
                f'out_key={self.out_key!r})')
