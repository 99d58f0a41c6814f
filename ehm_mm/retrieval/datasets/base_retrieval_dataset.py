# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Common base of the image retrieval benchmarks.

A retrieval benchmark has three image roles, each indexed from 0:

- **database** images (``db_idx``): what is searched;
- **query** images (``query_idx``) with their ground truth
  (``retrieval_gt``: database indices of positives, junk, ...);
- optional **whitening** images (``whiten_idx``): a separate set on which a
  PCA whitening is learned.

Every image is one sample; an image that is both a query and a database item
(INRIA Holidays, UKBench) is one sample with both indices, so its feature is
computed once. A role index is -1 when the sample does not play that role.
The retrieval metrics (``RevisitedMAP``, ``InstanceMAP``, ``UKBenchScore``)
gather the features by role, search and score.
"""
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Pattern, Sequence, Tuple

from mmengine.dataset import BaseDataset

#: Image file extensions listed in distractor / whitening folders.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.webp')


def list_images(folder: str, what: str) -> List[str]:
    """All image files under a folder (recursively), sorted.

    Args:
        folder (str): The folder.
        what (str): What the folder is for, used in error messages.

    Returns:
        list[str]: Image paths.
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(f'{what} folder not found: {folder}')
    paths = []
    for root, _, files in os.walk(folder):
        paths.extend(
            osp.join(root, name) for name in files
            if name.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise FileNotFoundError(f'{what} folder {folder} holds no image '
                                f'({", ".join(IMAGE_EXTENSIONS)})')
    return sorted(paths)


class BaseRetrievalDataset(BaseDataset):
    """Base class of retrieval datasets (queries, database, whitening set).

    Subclasses implement :meth:`load_queries_and_database` for their standard
    layout and describe it in ``LAYOUT`` (or :meth:`expected_layout`), which
    is shown when files are missing.

    Args:
        data_root (str): Root folder of the dataset's standard layout.
        pipeline (Sequence[dict]): Test pipeline. Defaults to ().
        distractor_folder (str, optional): Folder of extra database images
            that are positives of no query (e.g. 10k YFCC100M images for
            Copydays). Defaults to None.
        whitening_folder (str, optional): Folder of images on which the
            metric learns a PCA whitening (e.g. 20k YFCC100M images).
            Defaults to None.
        **kwargs: Other arguments of mmengine's ``BaseDataset``.
    """

    METAINFO: Dict = dict(dataset_name='retrieval')
    #: Human-readable description of the expected files.
    LAYOUT: str = ''

    def __init__(self,
                 data_root: str,
                 pipeline: Sequence = (),
                 distractor_folder: Optional[str] = None,
                 whitening_folder: Optional[str] = None,
                 **kwargs) -> None:
        if not isinstance(data_root, str) or not data_root:
            raise ValueError(f'{type(self).__name__}: data_root must be a '
                             f'non-empty path, got {data_root!r}')
        self.distractor_folder = distractor_folder
        self.whitening_folder = whitening_folder
        kwargs.setdefault('test_mode', True)
        super().__init__(
            ann_file='', data_root=data_root, pipeline=list(pipeline),
            **kwargs)

    def expected_layout(self) -> str:
        """Describe the files the dataset expects under ``data_root``.

        Returns:
            str: The layout description.
        """
        return self.LAYOUT

    def missing(self, message: str) -> FileNotFoundError:
        """An error naming the missing files and the expected layout.

        Args:
            message (str): What is missing.

        Returns:
            FileNotFoundError: The error to raise.
        """
        name = self.METAINFO.get('dataset_name', type(self).__name__)
        return FileNotFoundError(
            f'{name}: {message}. Expected layout under data_root='
            f'{self.data_root!r}:\n{self.expected_layout()}')

    def check_files(self, paths: Sequence[str], what: str) -> None:
        """Raise when any of the given files does not exist.

        Args:
            paths (Sequence[str]): Files that must exist.
            what (str): What they are, for the message.
        """
        absent = [p for p in paths if not osp.isfile(p)]
        if absent:
            shown = ', '.join(absent[:5])
            more = f' and {len(absent) - 5} more' if len(absent) > 5 else ''
            raise self.missing(f'{len(absent)} of {len(paths)} {what} '
                               f'missing: {shown}{more}')

    def jpg_names(self,
                  folder: str,
                  what: str = 'image folder',
                  hint: str = '') -> List[str]:
        """Sorted ``*.jpg`` file names of a folder of the layout.

        Args:
            folder (str): The folder.
            what (str): What the folder is, for the messages. Defaults to
                ``'image folder'``.
            hint (str): Appended to the message when the folder is absent.
                Defaults to ``''``.

        Returns:
            list[str]: The names (not paths), at least one.

        Raises:
            FileNotFoundError: If the folder does not exist or holds no
                ``.jpg`` file; the message shows the expected layout.
        """
        if not osp.isdir(folder):
            raise self.missing(f'{what} {folder} not found{hint}')
        names = sorted(n for n in os.listdir(folder)
                       if n.lower().endswith('.jpg'))
        if not names:
            raise self.missing(f'{what} {folder} holds no .jpg file')
        return names

    def load_queries_and_database(self) -> Tuple[List[dict], List[dict]]:
        """Read the standard layout.

        Returns:
            tuple[list[dict], list[dict]]: Queries and database items. A
            database item is ``dict(img_path=...)``. A query has
            ``img_path`` and ``retrieval_gt`` (a dict of database index
            lists) and optionally ``db_idx`` (the query is that database
            item), ``crop_bbox`` and ``block``.
        """
        raise NotImplementedError

    def load_data_list(self) -> List[dict]:
        """Build one sample per image with its role indices.

        Returns:
            list[dict]: Samples for the pipeline.
        """
        if not osp.isdir(self.data_root):
            raise self.missing(f'data_root {self.data_root!r} does not exist')
        queries, database = self.load_queries_and_database()
        if not queries or not database:
            raise self.missing(f'found {len(queries)} queries and '
                               f'{len(database)} database images')
        database = list(database)
        if self.distractor_folder is not None:
            database.extend(
                dict(img_path=p)
                for p in list_images(self.distractor_folder, 'distractor'))
        samples = [
            dict(img_path=item['img_path'], db_idx=i, query_idx=-1,
                 whiten_idx=-1) for i, item in enumerate(database)
        ]
        for query_idx, query in enumerate(queries):
            info = {k: v for k, v in query.items() if k != 'db_idx'}
            info['query_idx'] = query_idx
            db_idx = query.get('db_idx')
            if db_idx is None:
                samples.append(dict(db_idx=-1, whiten_idx=-1, **info))
                continue
            sample = samples[db_idx]
            if sample['img_path'] != query['img_path']:
                raise ValueError(f'query {query["img_path"]} claims database '
                                 f'index {db_idx} ({sample["img_path"]})')
            sample.update(info)
        num_whitening = 0
        if self.whitening_folder is not None:
            whitening = list_images(self.whitening_folder, 'whitening')
            num_whitening = len(whitening)
            samples.extend(
                dict(img_path=p, db_idx=-1, query_idx=-1, whiten_idx=i)
                for i, p in enumerate(whitening))
        self._metainfo.update(
            num_queries=len(queries),
            num_database=len(database),
            num_whitening=num_whitening)
        return samples


class NamedImagesRetrievalDataset(BaseRetrievalDataset):
    """A benchmark of one image folder whose file names encode the groups.

    Every image is a database item; subclasses turn the parsed file names
    into queries in :meth:`load_queries_and_database` (INRIA Holidays,
    UKBench).

    Args:
        data_root (str): The dataset folder.
        image_folder (str, optional): Image sub-folder, e.g. a copy with
            fixed rotations. Defaults to None (``IMAGE_FOLDER``).
        **kwargs: Arguments of :class:`BaseRetrievalDataset`.
    """

    #: Default image sub-folder.
    IMAGE_FOLDER: str = ''
    #: Whole-name pattern of the images; its groups are what subclasses read.
    NAME_PATTERN: Pattern = re.compile(r'.*\.jpg')
    #: How the names should look, for the error message.
    NAME_FORM: str = '*.jpg'

    def __init__(self,
                 data_root: str,
                 image_folder: Optional[str] = None,
                 **kwargs) -> None:
        self.image_folder = (
            self.IMAGE_FOLDER if image_folder is None else image_folder)
        super().__init__(data_root=data_root, **kwargs)

    def named_images(self) -> Tuple[List[str], List[re.Match]]:
        """The images of the folder and their parsed names.

        Returns:
            tuple[list[str], list[re.Match]]: Image paths (sorted by name)
            and the ``NAME_PATTERN`` match of each name.

        Raises:
            FileNotFoundError: If the folder is absent or empty.
            ValueError: If a ``.jpg`` name does not match ``NAME_PATTERN``.
        """
        folder = osp.join(self.data_root, self.image_folder)
        names = self.jpg_names(folder)
        matches = [self.NAME_PATTERN.fullmatch(n) for n in names]
        bad = [n for n, m in zip(names, matches) if m is None]
        if bad:
            raise ValueError(
                f'{self.METAINFO["dataset_name"]} images in {folder} must be '
                f'named {self.NAME_FORM}; {len(bad)} are not: {bad[:5]}')
        return [osp.join(folder, n) for n in names], matches
