# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""INRIA Holidays (Jegou et al., ECCV 2008)."""
import os
import os.path as osp
import re
from typing import List, Tuple

from mmpretrain.registry import DATASETS

from .base_retrieval_dataset import BaseRetrievalDataset

_NAME = re.compile(r'^(\d{4})(\d{2})\.jpg$')


@DATASETS.register_module()
class INRIAHolidays(BaseRetrievalDataset):
    """INRIA Holidays (1491 images, 500 queries).

    Images are named ``GGGGNN.jpg``: the first four digits ``GGGG`` name the
    group (one scene), and ``NN == 00`` is the group's query. Every image is
    in the database; a query's positives are the other images of its group
    and the query itself is excluded from its own ranking (it is junk).

    Layout under ``data_root``::

        jpg/*.jpg   (100000.jpg, 100001.jpg, ..., 149903.jpg)

    Args:
        data_root (str): The dataset folder (e.g. ``data/holidays``).
        image_folder (str): Image sub-folder, e.g. a copy with the rotated
            images fixed. Defaults to ``'jpg'``.
        **kwargs: Arguments of :class:`BaseRetrievalDataset`.
    """

    METAINFO = dict(dataset_name='INRIA Holidays')
    LAYOUT = ('  jpg/GGGGNN.jpg   (GGGG: group, NN=00: the group query)\n'
              '(from https://thoth.inrialpes.fr/~jegou/data.php#holidays)')

    def __init__(self, data_root: str, image_folder: str = 'jpg',
                 **kwargs) -> None:
        self.image_folder = image_folder
        super().__init__(data_root=data_root, **kwargs)

    def load_queries_and_database(self) -> Tuple[List[dict], List[dict]]:
        """List the images and group them.

        Returns:
            tuple[list[dict], list[dict]]: Queries and database items.
        """
        folder = osp.join(self.data_root, self.image_folder)
        if not osp.isdir(folder):
            raise self.missing(f'image folder {folder} not found')
        names = sorted(n for n in os.listdir(folder)
                       if n.lower().endswith('.jpg'))
        if not names:
            raise self.missing(f'image folder {folder} holds no .jpg file')
        groups = {}
        for i, name in enumerate(names):
            match = _NAME.match(name)
            if match is None:
                raise ValueError(f'Holidays image {name} in {folder} is not '
                                 'named GGGGNN.jpg (6 digits)')
            groups.setdefault(match.group(1), []).append(i)
        database = [dict(img_path=osp.join(folder, n)) for n in names]
        queries = []
        for group, members in groups.items():
            query_name = f'{group}00.jpg'
            query_idx = [i for i in members if names[i] == query_name]
            if not query_idx:
                raise ValueError(f'Holidays group {group} in {folder} has no '
                                 f'query image {query_name}')
            db_idx = query_idx[0]
            queries.append(
                dict(
                    img_path=database[db_idx]['img_path'],
                    db_idx=db_idx,
                    retrieval_gt=dict(
                        positives=[i for i in members if i != db_idx],
                        junk=[db_idx])))
        return queries, database
