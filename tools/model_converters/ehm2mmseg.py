# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Convert an EHM checkpoint for mmseg (`--help` says how)."""
import os.path as osp
import sys
from functools import partial

# Make `import ehm_mm` work from a plain checkout (no `pip install -e`).
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
from ehm_mm.downstream.converters import converter_main  # noqa: E402

main = partial(converter_main, 'mmseg')

if __name__ == '__main__':
    main()
