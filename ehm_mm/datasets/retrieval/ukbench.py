# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""UKBench (Nister & Stewenius, CVPR 2006)."""
import os
import os.path as osp
import re
from typing import List, Tuple

from mmpretrain.registry import DATASETS

from .base_retrieval_dataset import BaseRetrievalDataset

_NAME = re.compile(r'^ukbench(\d{5})\.jpg$')


@DATASETS.register_module()
class UKBench(BaseRetrievalDataset):
    """UKBench (10200 images of 2550 objects, 4 views each).

    Images ``ukbench%05d.jpg`` come in groups of four consecutive numbers
    (``4g .. 4g+3`` show object ``g``). Every image is both a query and a
    database item; its ground truth is its whole group, itself included, as
    the N-S score counts the group images among the top four results.

    Layout under ``data_root``::

        full/ukbench00000.jpg ... full/ukbench10199.jpg

    Args:
        data_root (str): The dataset folder (e.g. ``data/ukbench``).
        image_folder (str): Image sub-folder. Defaults to ``'full'``.
        **kwargs: Arguments of :class:`BaseRetrievalDataset`.
    """

    METAINFO = dict(dataset_name='UKBench')
    LAYOUT = ('  full/ukbench%05d.jpg   (00000 .. 4n-1; 4 consecutive '
              'images per object)\n'
              '(from https://archive.org/details/ukbench)')
    GROUP_SIZE = 4

    def __init__(self, data_root: str, image_folder: str = 'full',
                 **kwargs) -> None:
        self.image_folder = image_folder
        super().__init__(data_root=data_root, **kwargs)

    def load_queries_and_database(self) -> Tuple[List[dict], List[dict]]:
        """List the images and group them by four.

        Returns:
            tuple[list[dict], list[dict]]: Queries and database items.
        """
        folder = osp.join(self.data_root, self.image_folder)
        if not osp.isdir(folder):
            raise self.missing(f'image folder {folder} not found')
        numbers = sorted(
            int(m.group(1)) for m in map(_NAME.match, os.listdir(folder))
            if m is not None)
        if not numbers:
            raise self.missing(f'image folder {folder} holds no '
                               'ukbench%05d.jpg file')
        size = self.GROUP_SIZE
        if numbers != list(range(len(numbers))) or len(numbers) % size:
            absent = sorted(
                set(range(-(-(numbers[-1] + 1) // size) * size)) -
                set(numbers))
            raise self.missing(
                f'UKBench images must be numbered 0..4n-1 without gaps; '
                f'found {len(numbers)} images, missing numbers '
                f'{absent[:10]}')
        database = [
            dict(img_path=osp.join(folder, f'ukbench{n:05d}.jpg'))
            for n in numbers
        ]
        queries = []
        for n in numbers:
            start = n - n % size
            queries.append(
                dict(
                    img_path=database[n]['img_path'],
                    db_idx=n,
                    retrieval_gt=dict(
                        positives=list(range(start, start + size)),
                        junk=[])))
        return queries, database
