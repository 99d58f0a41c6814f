# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Loading with complete key accounting."""
import pytest
import torch
from torch import nn

from ehm_mm.downstream import (
    account_keys,
    check_key_report,
    load_state_dict_accounted,
)


class Tiny(nn.Module):

    def __init__(self, with_extra: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        if with_extra:
            self.gamma = nn.Parameter(torch.ones(3))
            self.register_buffer('index', torch.arange(3))


def test_account_keys():
    model = Tiny(with_extra=True)
    source = Tiny().state_dict()
    source['cls_token'] = torch.zeros(1, 1, 3)
    source['norm.bias'] = torch.zeros(5)
    report = account_keys(model.state_dict(), source)
    assert report.loaded == ['proj.weight', 'proj.bias', 'norm.weight']
    assert report.missing == ['gamma', 'index']
    assert report.unexpected == ['cls_token']
    assert report.mismatched == [('norm.bias', (5, ), (3, ))]
    assert report.summary() == ('loaded 3 / missing 2 / unexpected 1 / '
                                'shape mismatch 1')


def test_check_key_report_names_the_offenders():
    model = Tiny(with_extra=True)
    source = dict(Tiny().state_dict(), cls_token=torch.zeros(1))
    report = account_keys(model.state_dict(), source)
    check_key_report(report, ['gamma', 'index'], [r'cls_token'])
    with pytest.raises(ValueError, match=r"missing .*\['index'\]"):
        check_key_report(report, ['gamma'], [r'cls_token'])
    with pytest.raises(ValueError, match='does not have.*cls_token'):
        check_key_report(report, ['gamma', 'index'])
    # patterns match whole keys, not substrings
    with pytest.raises(ValueError, match='gamma'):
        check_key_report(report, ['gam', 'index'], ['cls_token'])


def test_load_state_dict_accounted():
    model = Tiny(with_extra=True)
    source = Tiny().state_dict()
    report = load_state_dict_accounted(
        model, source, allowed_missing=['gamma', 'index'])
    assert len(report.loaded) == 4
    for key, value in source.items():
        assert torch.equal(model.state_dict()[key], value)


def test_failed_check_loads_nothing():
    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    source = {'backbone.' + k: v for k, v in Tiny().state_dict().items()}
    source['proj.weight'] = torch.full((3, 4), 7.)
    with pytest.raises(ValueError, match='Incomplete pretrained load'):
        load_state_dict_accounted(model, source)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
