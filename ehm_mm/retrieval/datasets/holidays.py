# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""INRIA Holidays (Jegou et al., ECCV 2008)."""
import re
from typing import Dict, List, Tuple

from mmpretrain.registry import DATASETS

from .base_retrieval_dataset import NamedImagesRetrievalDataset


@DATASETS.register_module()
class INRIAHolidays(NamedImagesRetrievalDataset):
    """INRIA Holidays (1491 images, 500 queries).

    Images are named ``GGGGNN.jpg``: the first four digits ``GGGG`` name the
    group (one scene), and ``NN == 00`` is the group's query. Every image is
    in the database; a query's positives are the other images of its group
    and the query itself is excluded from its own ranking (it is junk).

    Layout under ``data_root``::

        jpg/*.jpg   (100000.jpg, 100001.jpg, ..., 149903.jpg)

    Args:
        data_root (str): The dataset folder (e.g. ``data/holidays``).
        image_folder (str, optional): Image sub-folder, e.g. a copy with the
            rotated images fixed. Defaults to None (``'jpg'``).
        **kwargs: Arguments of :class:`BaseRetrievalDataset`.
    """

    METAINFO = dict(dataset_name='INRIA Holidays')
    LAYOUT = ('  jpg/GGGGNN.jpg   (GGGG: group, NN=00: the group query)\n'
              '(from https://thoth.inrialpes.fr/~jegou/data.php#holidays)')
    IMAGE_FOLDER = 'jpg'
    NAME_PATTERN = re.compile(r'(\d{4})(\d{2})\.jpg')
    NAME_FORM = 'GGGGNN.jpg (6 digits)'

    def load_queries_and_database(self) -> Tuple[List[dict], List[dict]]:
        """List the images and group them.

        Returns:
            tuple[list[dict], list[dict]]: Queries and database items.
        """
        paths, matches = self.named_images()
        groups: Dict[str, List[int]] = {}
        for i, match in enumerate(matches):
            groups.setdefault(match.group(1), []).append(i)
        queries = []
        for group, members in groups.items():
            query = [i for i in members if matches[i].group(2) == '00']
            if not query:
                raise ValueError(f'Holidays group {group} has no query image '
                                 f'{group}00.jpg')
            queries.append(
                dict(
                    img_path=paths[query[0]],
                    db_idx=query[0],
                    retrieval_gt=dict(
                        positives=[i for i in members if i != query[0]],
                        junk=[query[0]])))
        return queries, [dict(img_path=path) for path in paths]
