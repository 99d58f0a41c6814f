# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""INRIA Copydays copy detection (Douze et al., 2009)."""
import os.path as osp
from typing import List, Optional, Sequence, Tuple

from mmpretrain.registry import DATASETS

from .base_retrieval_dataset import BaseRetrievalDataset

#: The query blocks of the standard protocol (as in DINO's
#: ``eval_copy_detection.py``): originals, strong attacks, 9 JPEG qualities
#: and 9 crop ratios.
COPYDAYS_BLOCKS = (('original', 'strong') +
                   tuple(f'jpegqual/{q}'
                         for q in (3, 5, 8, 10, 15, 20, 30, 50, 75)) +
                   tuple(f'crops/{c}'
                         for c in (10, 15, 20, 30, 40, 50, 60, 70, 80)))


@DATASETS.register_module()
class Copydays(BaseRetrievalDataset):
    """Copydays: find the original of a transformed copy.

    The database is the ``original`` block (plus optional distractors). Each
    query block holds transformed copies: in ``jpegqual/<q>`` and
    ``crops/<pct>`` a copy has its original's file name; in ``strong`` the
    originals of a copy are those whose file name shares its first four
    characters (the image group). Every query carries its ``block`` so the
    metric reports one mAP per block.

    Layout under ``data_root``::

        original/*.jpg
        strong/*.jpg
        jpegqual/{3,5,8,10,15,20,30,50,75}/*.jpg
        crops/{10,15,20,30,40,50,60,70,80}/*.jpg

    Args:
        data_root (str): The dataset folder (e.g. ``data/copydays``).
        query_blocks (Sequence[str], optional): Blocks used as queries;
            None uses all of :data:`COPYDAYS_BLOCKS`. Defaults to None.
        **kwargs: Arguments of :class:`BaseRetrievalDataset` (e.g.
            ``distractor_folder``, ``whitening_folder``).
    """

    METAINFO = dict(dataset_name='Copydays')
    LAYOUT = ('  original/*.jpg   (the database)\n'
              '  strong/*.jpg\n'
              '  jpegqual/<quality>/*.jpg   (3 5 8 10 15 20 30 50 75)\n'
              '  crops/<percent>/*.jpg      (10 15 20 30 40 50 60 70 80)\n'
              '(from https://thoth.inrialpes.fr/~jegou/data.php#copydays)')

    def __init__(self,
                 data_root: str,
                 query_blocks: Optional[Sequence[str]] = None,
                 **kwargs) -> None:
        if query_blocks is None:
            query_blocks = COPYDAYS_BLOCKS
        if isinstance(query_blocks, str) or not query_blocks:
            raise ValueError('query_blocks must be a non-empty list of block '
                             f'names, got {query_blocks!r}')
        self.query_blocks = tuple(query_blocks)
        super().__init__(data_root=data_root, **kwargs)

    def _block_names(self, block: str) -> List[str]:
        """File names of one block, with a clear error when it is absent."""
        return self.jpg_names(
            osp.join(self.data_root, block), 'block folder',
            ' (choose the blocks you have with query_blocks)')

    def load_queries_and_database(self) -> Tuple[List[dict], List[dict]]:
        """List the originals and the query blocks.

        Returns:
            tuple[list[dict], list[dict]]: Queries and database items.
        """
        originals = self._block_names('original')
        database = [
            dict(img_path=osp.join(self.data_root, 'original', n))
            for n in originals
        ]
        by_name = {n: i for i, n in enumerate(originals)}
        by_group = {}
        for i, name in enumerate(originals):
            by_group.setdefault(name[:4], []).append(i)
        queries = []
        for block in self.query_blocks:
            for name in self._block_names(block):
                if block == 'strong':
                    positives = by_group.get(name[:4], [])
                else:
                    positives = [by_name[name]] if name in by_name else []
                if not positives:
                    raise ValueError(
                        f'Copydays query {block}/{name} has no original '
                        f'(expected original/{name} or, for strong, an '
                        f'original named {name[:4]}*.jpg)')
                queries.append(
                    dict(
                        img_path=osp.join(self.data_root, block, name),
                        block=block,
                        retrieval_gt=dict(positives=list(positives),
                                          junk=[])))
        return queries, database
