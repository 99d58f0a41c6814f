# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Convert an EHM checkpoint to the official-MAE / timm layout (ViTDet).

Extracts the student encoder of an EHM checkpoint (or the EMA teacher with
``--source teacher``), drops the decoder, mask token, head and the other
encoder copy, writes the timm layout and loads the result into the
consumer's backbone, printing the loaded / missing / unexpected counts. The
command fails (and writes nothing) if any key is unaccounted for.

Example:
    python tools/model_converters/ehm2timm.py \
        work_dirs/ehm_pretrain/epoch_300.pth \
        pretrain/ehm_vit-base-p16_timm.pth
"""
import os.path as osp
import sys
from typing import List, Optional

# Make `import ehm_mm` work from a plain checkout (no `pip install -e`).
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
from ehm_mm.downstream.converters import converter_main  # noqa: E402


def main(argv: Optional[List[str]] = None) -> None:
    """Convert, save and print the key accounting."""
    converter_main('timm', __doc__, argv)


if __name__ == '__main__':
    main()
