# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from mmcv.transforms import BaseTransform
from mmpretrain.registry import TRANSFORMS


@TRANSFORMS.register_module()
class SetKNNBankFlag(BaseTransform):
    """Mark every sample of a dataset as k-NN bank or as query.

    :class:`~ehm_mm.evaluation.KNNBankAccuracy` tells bank samples from
    queries by a boolean field of each data sample. Put this transform in
    the pipeline of each dataset of a ``ConcatDataset`` (``bank=True`` for
    the memory, e.g. the training split, ``bank=False`` for the queries)
    and pack the field with ``PackInputs(meta_keys=[..., 'knn_bank'])``.

    **Added Keys:**

    - ``key`` (default ``knn_bank``): ``bool``.

    Args:
        bank (bool): True for bank samples, False for queries.
        key (str): The field written. Defaults to ``'knn_bank'``.
    """

    def __init__(self, bank: bool, key: str = 'knn_bank') -> None:
        if not isinstance(bank, bool):
            raise TypeError(f'SetKNNBankFlag: bank must be True or False, '
                            f'got {bank!r}')
        self.bank = bank
        self.key = key

    def transform(self, results: dict) -> dict:
        """Write the flag.

        Args:
            results (dict): The sample.

        Returns:
            dict: The sample with ``results[key] = bank``.
        """
        results[self.key] = self.bank
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(bank={self.bank}, '
                f'key={self.key!r})')
