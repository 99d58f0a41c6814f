# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Make the whole checkpoint of a distributed (sharded) FSDP2 checkpoint.

An FSDP2 run with ``checkpoint_format = 'distributed'`` writes
``iter_N.pth`` (no model or optimizer state) and the folder ``iter_N.dcp``
beside it (every rank's shards, torch.distributed.checkpoint). This tool,
one process, no GPU, writes the checkpoint ``checkpoint_format = 'full'``
would have written: the model's whole tensors under the usual names, the
optimizer state by parameter index and the file's other entries, which
the ehm2* converters, fine-tuning configs and ``--resume`` read.

Example:
    python tools/model_converters/ehm_dcp2full.py \\
        work_dirs/ehm_mae_vit-h_fsdp/epoch_1600.pth \\
        work_dirs/ehm_mae_vit-h_fsdp/epoch_1600_full.pth
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

# Make `import ehm_mm` work from a plain checkout (no `pip install -e`).
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
from ehm_mm.models.wrappers.distributed_checkpoint import (  # noqa: E402
    distributed_to_full,
)


def main(argv: Optional[List[str]] = None) -> None:
    """Parse the command line and convert.

    Args:
        argv (List[str], optional): The arguments; None reads
            ``sys.argv``. Defaults to None.
    """
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('src', help='iter_N.pth / epoch_N.pth of the '
                        'distributed checkpoint (its .dcp folder beside it)')
    parser.add_argument('dst', help='the whole checkpoint to write')
    args = parser.parse_args(argv)
    checkpoint = distributed_to_full(args.src, args.dst)
    print(f'{args.dst}: {len(checkpoint["state_dict"])} model tensors, '
          f'optimizer state: {"optimizer" in checkpoint}')

if __name__ == '__main__':
    main()
