# Copyright (c) OpenMMLab. All rights reserved.
"""Convert an EHM checkpoint for mmsegmentation (UPerNet ViT on ADE20K).

Extracts the student encoder of an EHM checkpoint (or the EMA teacher with
``--source teacher``), drops the decoder, mask token, head and the other
encoder copy, writes the mmseg layout and loads the result into the
consumer's backbone, printing the loaded / missing / unexpected counts. The
command fails (and writes nothing) if any key is unaccounted for.

Example:
    python tools/model_converters/ehm2mmseg.py \
        work_dirs/ehm_pretrain/epoch_300.pth \
        pretrain/ehm_vit-base-p16_mmseg.pth
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

# Make `import ehm_mm` work from a plain checkout (no `pip install -e`).
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
from ehm_mm.downstream.converters import convert_checkpoint  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='EHM (or MAE) checkpoint to convert')
    parser.add_argument('dst', help='where to write the converted weights')
    parser.add_argument(
        '--source',
        choices=['student', 'teacher'],
        default='student',
        help='encoder of the EHM checkpoint to export (default: student)')
    parser.add_argument(
        '--config',
        help='downstream config to check the weights against (default: a '
        'backbone with the shape of the checkpoint)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Convert, save and print the key accounting."""
    args = parse_args(argv)
    result = convert_checkpoint(
        args.src,
        args.dst,
        consumer='mmseg',
        source=args.source,
        config=args.config)
    for line in result.lines():
        print(line)
    print(f'saved to {args.dst}')


if __name__ == '__main__':
    main()
