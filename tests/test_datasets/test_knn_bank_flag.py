# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""SetKNNBankFlag marks bank and query samples for KNNBankAccuracy."""
import pytest
from mmengine.registry import DefaultScope
from mmpretrain.registry import TRANSFORMS

import ehm_mm  # noqa: F401
from ehm_mm.datasets import SetKNNBankFlag


def test_flag_is_written_and_packed():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        bank = TRANSFORMS.build(dict(type='SetKNNBankFlag', bank=True))
    query = SetKNNBankFlag(bank=False)
    assert bank(dict(img_path='a'))['knn_bank'] is True
    assert query(dict(img_path='a'))['knn_bank'] is False
    assert SetKNNBankFlag(True, key='bank')(dict())['bank'] is True
    assert repr(bank) == "SetKNNBankFlag(bank=True, key='knn_bank')"


@pytest.mark.parametrize('bank', [1, 'yes', None])
def test_bank_must_be_a_bool(bank):
    with pytest.raises(TypeError, match='bank must be True or False'):
        SetKNNBankFlag(bank=bank)
