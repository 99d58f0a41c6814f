# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Revisited Oxford and Paris (Radenovic et al., CVPR 2018)."""
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np
from mmpretrain.registry import DATASETS

from ehm_mm.utils.safe_pickle import load_data_pickle

from .base_retrieval_dataset import BaseRetrievalDataset

_GND_KEYS = ('easy', 'hard', 'junk')


class RevisitedOxfordParis(BaseRetrievalDataset):
    """Base of ROxford5k / RParis6k in the ``revisitop`` layout.

    ``gnd_<name>.pkl`` holds ``imlist`` (database image names),
    ``qimlist`` (query image names) and ``gnd``: per query a dict with
    ``bbx`` (query box ``x1, y1, x2, y2`` in pixels) and the database indices
    ``easy``, ``hard`` and ``junk``. Images are ``jpg/<name>.jpg``.
    Queries are cropped to their box by the ``CropToBBox`` transform (the
    revisited protocol); set ``crop_queries=False`` to ablate that.

    Args:
        data_root (str): The dataset folder (e.g. ``data/roxford5k``).
        crop_queries (bool): Give each query its ``crop_bbox``.
            Defaults to True.
        **kwargs: Arguments of :class:`BaseRetrievalDataset`.
    """

    #: ``roxford5k`` or ``rparis6k``: names the ground-truth file.
    NAME: str = ''

    def __init__(self, data_root: str, crop_queries: bool = True,
                 **kwargs) -> None:
        self.crop_queries = crop_queries
        super().__init__(data_root=data_root, **kwargs)

    def expected_layout(self) -> str:
        """Describe the files the dataset expects under ``data_root``.

        Returns:
            str: The layout description.
        """
        return (f'  gnd_{self.NAME}.pkl   (imlist, qimlist, gnd)\n'
                f'  jpg/<image name>.jpg  (every name in imlist and '
                f'qimlist)\n(from https://github.com/filipradenovic/revisitop,'
                f' python/download.py)')

    def _read_ground_truth(self) -> Dict:
        """Load and validate ``gnd_<name>.pkl``."""
        gnd_file = osp.join(self.data_root, f'gnd_{self.NAME}.pkl')
        if not osp.isfile(gnd_file):
            raise self.missing(f'ground truth file {gnd_file} not found')
        # Plain data only: a crafted pickle could run code.
        cfg = load_data_pickle(gnd_file)
        if not isinstance(cfg, dict):
            raise ValueError(f'{gnd_file} holds a {type(cfg).__name__}, not '
                             'a dict with imlist, qimlist and gnd')
        for key in ('imlist', 'qimlist', 'gnd'):
            if key not in cfg:
                raise ValueError(f'{gnd_file} has no {key!r} entry')
        if len(cfg['gnd']) != len(cfg['qimlist']):
            raise ValueError(f'{gnd_file}: {len(cfg["gnd"])} gnd entries for '
                             f'{len(cfg["qimlist"])} queries')
        return cfg

    def load_queries_and_database(self) -> Tuple[List[dict], List[dict]]:
        """Read ``gnd_<name>.pkl`` and list the images.

        Returns:
            tuple[list[dict], list[dict]]: Queries and database items.
        """
        cfg = self._read_ground_truth()
        image_dir = osp.join(self.data_root, 'jpg')
        database = [
            dict(img_path=osp.join(image_dir, f'{name}.jpg'))
            for name in cfg['imlist']
        ]
        num_database = len(database)
        queries = []
        for name, gnd in zip(cfg['qimlist'], cfg['gnd']):
            gt = {}
            for key in _GND_KEYS:
                if key not in gnd:
                    raise ValueError(f'gnd of query {name} has no {key!r}')
                indices = [int(i) for i in np.asarray(gnd[key]).reshape(-1)]
                bad = [i for i in indices if not 0 <= i < num_database]
                if bad:
                    raise ValueError(f'gnd of query {name}: {key} indices '
                                     f'{bad} outside [0, {num_database})')
                gt[key] = indices
            query = dict(
                img_path=osp.join(image_dir, f'{name}.jpg'), retrieval_gt=gt)
            if self.crop_queries:
                bbx = np.asarray(gnd.get('bbx', []), dtype=np.float64)
                if bbx.size != 4:
                    raise ValueError(f'gnd of query {name} has no 4-number '
                                     "'bbx' box to crop to")
                query['crop_bbox'] = [float(v) for v in bbx.reshape(-1)]
            queries.append(query)
        self.check_files([d['img_path'] for d in database], 'database images')
        self.check_files([q['img_path'] for q in queries], 'query images')
        return queries, database


@DATASETS.register_module()
class ROxford5k(RevisitedOxfordParis):
    """Revisited Oxford 5k (70 queries, 4993 database images).

    Layout under ``data_root`` (e.g. ``data/roxford5k``)::

        gnd_roxford5k.pkl
        jpg/*.jpg

    See :class:`RevisitedOxfordParis` for the arguments.
    """

    NAME = 'roxford5k'
    METAINFO = dict(dataset_name='ROxford5k')


@DATASETS.register_module()
class RParis6k(RevisitedOxfordParis):
    """Revisited Paris 6k (70 queries, 6322 database images).

    Layout under ``data_root`` (e.g. ``data/rparis6k``)::

        gnd_rparis6k.pkl
        jpg/*.jpg

    See :class:`RevisitedOxfordParis` for the arguments.
    """

    NAME = 'rparis6k'
    METAINFO = dict(dataset_name='RParis6k')
