# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""tools/analysis/fsdp_memory.py and the table of docs/en/fsdp.md."""
import os.path as osp
import runpy

import pytest

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOOL = runpy.run_path(osp.join(REPO, 'tools', 'analysis', 'fsdp_memory.py'))
CONFIGS = ['configs/ehm_mae_vit-l_fsdp.py', 'configs/ehm_mae_vit-h_fsdp.py']
GIB = 2**30


@pytest.fixture(scope='module')
def sizes():
    return {c: TOOL['model_sizes'](osp.join(REPO, c)) for c in CONFIGS}


def test_parameter_counts(sizes):
    vit_l, vit_h = (sizes[c] for c in CONFIGS)
    # MAE's ViT-L/16 and ViT-H/14 encoders; the teacher is one more copy
    assert vit_l['teacher'] == 303_301_632
    assert vit_h['teacher'] == 630_764_800
    for size in (vit_l, vit_h):
        # the frozen position embeddings are the only untrained weights
        assert 0 < size['student'] - size['trainable'] < 10**6
        assert size['batch'] == 512


def test_sharded_rows_divide_by_ranks(sizes):
    rows = TOOL['memory_rows'](sizes[CONFIGS[0]], ranks=(1, 2, 4))
    optimizer = next(r for r in rows if r[0].startswith('AdamW'))
    ddp, one, two, four = (float(v) for v in optimizer[2:])
    assert ddp == one
    assert two == pytest.approx(one / 2, abs=0.01)
    assert four == pytest.approx(one / 4, abs=0.01)
    activations = next(r for r in rows if r[0] == 'activations, 512 images')
    assert len(set(activations[2:])) == 1  # not sharded


def test_docs_hold_the_computed_table(sizes, capsys):
    TOOL['main']([osp.join(REPO, c) for c in CONFIGS])
    printed = capsys.readouterr().out.replace(REPO + '/', '')
    with open(osp.join(REPO, 'docs', 'en', 'fsdp.md')) as f:
        page = f.read()
    assert printed.strip() in page
    # host memory of a save: parameters, teacher and AdamW state, no grads
    for config, figure in zip(CONFIGS, ('4.81 GiB', '9.69 GiB')):
        size = sizes[config]
        total = (4 * size['student'] + 8 * size['trainable'] +
                 4 * size['teacher']) / GIB
        assert f'{total:.2f} GiB' == figure
        assert figure in page


def test_refuses_a_model_it_does_not_model():
    simmim = osp.join(
        REPO, 'configs', 'simmim',
        'ehm-simmim_vit-large-p16_8xb256-fsdp-coslr-100e_in1k.py')
    with pytest.raises(ValueError, match='models EHM-MAE.*EHMSimMIM'):
        TOOL['model_sizes'](simmim)
