# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The ImageNet-100 class list (CMC's 100 WordNet ids), shipped as data.

The list and its provenance are in ``data/imagenet100_classes.txt`` (next
to this module); ``tools/dataset_converters/imagenet100.py`` writes
mmpretrain annotation files for it from an ImageNet-1K folder.
"""
import os.path as osp
import re
from typing import List, Optional

#: The shipped list: CMC's ``imagenet100.txt`` with a provenance header.
IMAGENET100_CLASSES_FILE = osp.join(
    osp.dirname(__file__), 'data', 'imagenet100_classes.txt')
#: A WordNet noun id as ImageNet names its class folders.
WNID = re.compile(r'n\d{8}')


def read_class_list(path: Optional[str] = None) -> List[str]:
    """Read a list of WordNet ids, one per line, in label order.

    Blank lines and lines starting with ``#`` are skipped; every other line
    must be one WordNet id (``n`` and 8 digits), each id once.

    Args:
        path (str, optional): The list file; None reads the shipped
            ImageNet-100 list (:data:`IMAGENET100_CLASSES_FILE`).
            Defaults to None.

    Returns:
        list[str]: The ids; label ``i`` is the ``i``-th.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When a line is not a WordNet id, an id repeats or the
            file lists none.
    """
    path = IMAGENET100_CLASSES_FILE if path is None else path
    if not osp.isfile(path):
        raise FileNotFoundError(f'class list not found: {path}')
    wnids: List[str] = []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith('#'):
                continue
            if not WNID.fullmatch(text):
                raise ValueError(f'{path}, line {number}: {text!r} is not a '
                                 'WordNet id (n followed by 8 digits)')
            if text in wnids:
                raise ValueError(f'{path}, line {number}: {text} is listed '
                                 f'twice (first as label {wnids.index(text)})')
            wnids.append(text)
    if not wnids:
        raise ValueError(f'{path} lists no class')
    return wnids
