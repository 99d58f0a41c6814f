# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""UKBench (Nister & Stewenius, CVPR 2006)."""
import re
from typing import List, Tuple

from mmpretrain.registry import DATASETS

from .base_retrieval_dataset import NamedImagesRetrievalDataset


@DATASETS.register_module()
class UKBench(NamedImagesRetrievalDataset):
    """UKBench (10200 images of 2550 objects, 4 views each).

    Images ``ukbench%05d.jpg`` come in groups of four consecutive numbers
    (``4g .. 4g+3`` show object ``g``). Every image is both a query and a
    database item; its ground truth is its whole group, itself included, as
    the N-S score counts the group images among the top four results.

    Layout under ``data_root``::

        full/ukbench00000.jpg ... full/ukbench10199.jpg

    Args:
        data_root (str): The dataset folder (e.g. ``data/ukbench``).
        image_folder (str, optional): Image sub-folder. Defaults to None
            (``'full'``).
        **kwargs: Arguments of :class:`BaseRetrievalDataset`.
    """

    METAINFO = dict(dataset_name='UKBench')
    LAYOUT = ('  full/ukbench%05d.jpg   (00000 .. 4n-1; 4 consecutive '
              'images per object)\n'
              '(from https://archive.org/details/ukbench)')
    IMAGE_FOLDER = 'full'
    NAME_PATTERN = re.compile(r'ukbench(\d{5})\.jpg')
    NAME_FORM = 'ukbench%05d.jpg'
    GROUP_SIZE = 4

    def load_queries_and_database(self) -> Tuple[List[dict], List[dict]]:
        """List the images and group them by four.

        Returns:
            tuple[list[dict], list[dict]]: Queries and database items.
        """
        paths, matches = self.named_images()
        numbers = [int(match.group(1)) for match in matches]
        size = self.GROUP_SIZE
        if numbers != list(range(len(numbers))) or len(numbers) % size:
            absent = sorted(
                set(range(-(-(numbers[-1] + 1) // size) * size)) -
                set(numbers))
            raise self.missing(
                f'UKBench images must be numbered 0..4n-1 without gaps; '
                f'found {len(numbers)} images, missing numbers '
                f'{absent[:10]}')
        queries = [
            dict(
                img_path=paths[n],
                db_idx=n,
                retrieval_gt=dict(
                    positives=list(range(n - n % size, n - n % size + size)),
                    junk=[])) for n in numbers
        ]
        return queries, [dict(img_path=path) for path in paths]
