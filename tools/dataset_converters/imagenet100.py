# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Write mmpretrain annotation files for ImageNet-100 from ImageNet-1K.

Reads a user's ImageNet-1K folder and writes, for the 100 classes of the
shipped list (CMC's, ``ehm_mm/datasets/data/imagenet100_classes.txt``; or
``--classes FILE``):

* ``OUT/meta/train.txt`` and ``OUT/meta/val.txt``: one ``path label`` line
  per image, ``path`` relative to the split's image folder (``train/`` or
  ``val/``), ``label`` 0-99 in the list's order (mmpretrain's annotation
  format, read by its ``ImageNet`` / ``CustomDataset``);
* ``OUT/classes.txt``: the WordNet ids, one per line, in label order (the
  ``classes`` of the dataset configs).

The ImageNet-1K folder holds ``train/<wnid>/*.JPEG`` and the validation
images in either layout: ``val/<wnid>/*.JPEG``, or all in ``val/`` with a
ground-truth file in mmpretrain's ``meta/val.txt`` format (``file label``
lines; the label is the class's index among the sorted ``train/`` class
folders, 0-999, or its WordNet id), ``IMAGENET/meta/val.txt`` unless
``--val-ann`` names another.

With ``--symlink`` the images are linked into ``OUT`` as well
(``OUT/train/<wnid>`` and ``OUT/val/<wnid>`` link to the class folders, a
flat ``val/`` gets one link per image), so ``OUT`` is a complete dataset
root for ``configs/_base_/datasets/imagenet100.py`` (``data_root``).
Without it the image paths stay relative to the ImageNet-1K folder: set
``data_root`` to that folder and the annotation files' paths to ``OUT``.

Example:
    python tools/dataset_converters/imagenet100.py data/imagenet \\
        data/imagenet100 --symlink
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
from ehm_mm.datasets.imagenet100 import WNID, read_class_list  # noqa: E402

#: Image file endings mmpretrain's ImageNet dataset reads (any case).
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif')
#: One annotation line: (path relative to the split folder, label).
Sample = Tuple[str, int]


def is_image(name: str) -> bool:
    """Whether a file name ends like an image mmpretrain reads."""
    return name.lower().endswith(IMG_EXTENSIONS)


def class_folder_samples(split_dir: str, wnids: Sequence[str],
                         split: str) -> List[Sample]:
    """Samples of a ``<split>/<wnid>/*`` folder for the listed classes.

    Args:
        split_dir (str): The split folder (``train/`` or ``val/``).
        wnids (Sequence[str]): The classes, in label order.
        split (str): ``'train'`` or ``'val'``, for the error messages.

    Returns:
        list[tuple[str, int]]: ``(wnid/file, label)``, by label, then by
        file name.

    Raises:
        FileNotFoundError: When a listed class has no folder.
        ValueError: When a class folder holds no image.
    """
    missing = [w for w in wnids if not osp.isdir(osp.join(split_dir, w))]
    if missing:
        raise FileNotFoundError(
            f'{len(missing)} of the {len(wnids)} listed classes have no '
            f'folder in {split_dir}: {", ".join(missing[:10])}'
            f'{" ..." if len(missing) > 10 else ""}')
    samples: List[Sample] = []
    for label, wnid in enumerate(wnids):
        folder = osp.join(split_dir, wnid)
        files = sorted(n for n in os.listdir(folder) if is_image(n)
                       and osp.isfile(osp.join(folder, n)))
        if not files:
            raise ValueError(f'{split} class {wnid} (label {label}) has no '
                             f'image in {folder} (endings {IMG_EXTENSIONS})')
        samples.extend((f'{wnid}/{name}', label) for name in files)
    return samples


def read_val_ground_truth(path: str, train_wnids: Sequence[str]
                          ) -> Dict[str, str]:
    """Read a flat validation folder's ground truth (``file label`` lines).

    Args:
        path (str): The file, mmpretrain's ``meta/val.txt`` format.
        train_wnids (Sequence[str]): Sorted class folders of ``train/``; an
            integer label is an index into them.

    Returns:
        dict[str, str]: File name -> WordNet id.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When a line is not ``file label`` or its label is
            neither an index of a ``train/`` class nor a WordNet id.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'no validation ground truth: {path} does not exist. Either put '
            'the validation images in val/<wnid>/ folders or pass the file '
            'of "file label" lines with --val-ann')
    truth: Dict[str, str] = {}
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f'{path}, line {number}: expected "file '
                                 f'label", got {line.strip()!r}')
            name, label = fields
            if WNID.fullmatch(label):
                truth[name] = label
            elif label.isdigit() and int(label) < len(train_wnids):
                truth[name] = train_wnids[int(label)]
            else:
                raise ValueError(
                    f'{path}, line {number}: label {label!r} is neither a '
                    'WordNet id nor an index of the '
                    f'{len(train_wnids)} sorted train/ class folders')
    return truth


def flat_val_samples(val_dir: str, truth: Dict[str, str],
                     wnids: Sequence[str], truth_file: str) -> List[Sample]:
    """Samples of a flat ``val/`` folder for the listed classes.

    Args:
        val_dir (str): The folder of all validation images.
        truth (dict[str, str]): File name -> WordNet id.
        wnids (Sequence[str]): The classes, in label order.
        truth_file (str): Where ``truth`` came from, for the messages.

    Returns:
        list[tuple[str, int]]: ``(file, label)``, by label, then by file.

    Raises:
        FileNotFoundError: When a listed image is not in ``val_dir``.
        ValueError: When a listed class has no validation image.
    """
    labels = {w: i for i, w in enumerate(wnids)}
    samples = sorted(((name, labels[w]) for name, w in truth.items()
                      if w in labels), key=lambda s: (s[1], s[0]))
    absent = [n for n, _ in samples if not osp.isfile(osp.join(val_dir, n))]
    if absent:
        raise FileNotFoundError(
            f'{len(absent)} validation images listed in {truth_file} are '
            f'not in {val_dir}: {", ".join(absent[:5])}'
            f'{" ..." if len(absent) > 5 else ""}')
    found = {label for _, label in samples}
    empty = [w for w in wnids if labels[w] not in found]
    if empty:
        raise ValueError(
            f'{truth_file} gives no validation image for {len(empty)} '
            f'listed classes: {", ".join(empty[:10])}')
    return samples


def write_lines(path: str, lines: Sequence[str]) -> None:
    """Write text lines, through a temporary file renamed into place."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.writelines(f'{line}\n' for line in lines)
    os.replace(tmp, path)


def link(source: str, target: str) -> None:
    """Symlink ``target`` -> ``source`` (absolute); keep a correct link.

    Raises:
        FileExistsError: When ``target`` exists and is not that link.
    """
    source = osp.abspath(source)
    if osp.islink(target) and os.readlink(target) == source:
        return
    if osp.lexists(target):
        raise FileExistsError(f'{target} exists and is not a link to '
                              f'{source}; remove it or choose another OUT')
    os.makedirs(osp.dirname(target), exist_ok=True)
    os.symlink(source, target)


def convert(imagenet: str,
            out: str,
            classes: Optional[str] = None,
            val_ann: Optional[str] = None,
            symlink: bool = False) -> Dict[str, int]:
    """Write ImageNet-100 annotation files (and links) into ``out``.

    Args:
        imagenet (str): The ImageNet-1K folder (``train/``, ``val/``).
        out (str): Where ``meta/``, ``classes.txt`` (and the links) go;
            not ``imagenet`` itself.
        classes (str, optional): A class list file; None uses the shipped
            ImageNet-100 list. Defaults to None.
        val_ann (str, optional): Ground truth of a flat ``val/``; None
            means ``imagenet/meta/val.txt``. Defaults to None.
        symlink (bool): Link the images into ``out``. Defaults to False.

    Returns:
        dict[str, int]: Number of ``classes``, ``train`` and ``val``
        images written.

    Raises:
        FileNotFoundError | ValueError: On a missing folder, class, image
            or ground truth, an empty class or ``out == imagenet``.
    """
    wnids = read_class_list(classes)
    train_dir, val_dir = osp.join(imagenet, 'train'), osp.join(imagenet, 'val')
    for folder in (train_dir, val_dir):
        if not osp.isdir(folder):
            raise FileNotFoundError(
                f'{folder} does not exist: {imagenet} must hold ImageNet-1K '
                'as train/<wnid>/*.JPEG and val/ (class folders or flat)')
    if osp.realpath(out) == osp.realpath(imagenet):
        raise ValueError(f'OUT must not be the ImageNet-1K folder {imagenet} '
                         '(its meta/ files would be overwritten)')
    train = class_folder_samples(train_dir, wnids, 'train')
    val_folders = any(
        WNID.fullmatch(n) and osp.isdir(osp.join(val_dir, n))
        for n in os.listdir(val_dir))
    if val_folders:
        val = class_folder_samples(val_dir, wnids, 'val')
    else:
        truth_file = val_ann or osp.join(imagenet, 'meta', 'val.txt')
        train_wnids = sorted(n for n in os.listdir(train_dir)
                             if osp.isdir(osp.join(train_dir, n)))
        truth = read_val_ground_truth(truth_file, train_wnids)
        val = flat_val_samples(val_dir, truth, wnids, truth_file)
    if symlink:
        for wnid in wnids:
            link(osp.join(train_dir, wnid), osp.join(out, 'train', wnid))
            if val_folders:
                link(osp.join(val_dir, wnid), osp.join(out, 'val', wnid))
        if not val_folders:
            for name, _ in val:
                link(osp.join(val_dir, name), osp.join(out, 'val', name))
    write_lines(osp.join(out, 'meta', 'train.txt'),
                [f'{path} {label}' for path, label in train])
    write_lines(osp.join(out, 'meta', 'val.txt'),
                [f'{path} {label}' for path, label in val])
    write_lines(osp.join(out, 'classes.txt'), wnids)
    return dict(classes=len(wnids), train=len(train), val=len(val))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Write mmpretrain annotation files (meta/train.txt, '
        'meta/val.txt, classes.txt) for ImageNet-100 from ImageNet-1K')
    parser.add_argument('imagenet', help='ImageNet-1K folder (train/, val/)')
    parser.add_argument('out', help='output folder (the dataset root with '
                        '--symlink)')
    parser.add_argument(
        '--classes', default=None,
        help='class list, one WordNet id a line (default: the shipped '
        'ImageNet-100 list of CMC)')
    parser.add_argument(
        '--val-ann', default=None,
        help='ground truth of a flat val/ folder, "file label" lines '
        '(default: IMAGENET/meta/val.txt)')
    parser.add_argument('--symlink', action='store_true',
                        help='also link the images into OUT')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the conversion and print what was written."""
    args = parse_args(argv)
    counts = convert(args.imagenet, args.out, args.classes, args.val_ann,
                     args.symlink)
    print(f'{args.out}: {counts["classes"]} classes, {counts["train"]} '
          f'train and {counts["val"]} val images '
          f'({"linked" if args.symlink else "paths relative to"} '
          f'{args.imagenet})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
