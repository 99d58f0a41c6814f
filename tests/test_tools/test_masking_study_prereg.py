# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The study's pre-registration: read from the config, enforced in the
report (primary cells: Holm p and TOST; the rest labelled exploratory)."""
import os.path as osp

import pytest
from masking_study_tool import load_masking_study

from ehm_mm.evaluation.study_statistics import holm, paired_t_test, tost

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'study', 'masking_study_v2.py')

CONTRASTS = [
    dict(name='A vs R', arms=['a'], reference=['r']),
    dict(name='B vs R', arms=['b'], reference=['r']),
    dict(name='A vs B', arms=['a'], reference=['b']),
]
PREREG = dict(primary_endpoints=['m1'], primary_contrasts=['A vs R',
                                                          'B vs R'],
              equivalence_margin={'m1': 2.0}, alpha=0.05, num_seeds=4,
              exploratory_contrasts=['A vs B'])


@pytest.fixture(scope='module')
def tool():
    return load_masking_study()


def _results(values):
    return [dict(arm=arm, seed=seed, final=dict(m1=v1, m2=v1 / 2))
            for arm, per_seed in values.items()
            for seed, v1 in enumerate(per_seed)]


def test_primary_cells_get_holm_and_tost(tool):
    values = dict(r=[50.0, 52.0, 49.0, 51.0],
                  a=[56.0, 58.5, 54.0, 57.5],  # clearly better
                  b=[50.3, 51.6, 49.2, 51.1])  # within +-2
    prereg = tool.check_preregistration(PREREG, CONTRASTS, ['m1', 'm2'])
    out = tool.preregistered_analysis(_results(values), CONTRASTS, prereg,
                                      ['m1', 'm2'])
    primary = {c['contrast']: c for c in out['primary']}
    assert set(primary) == {'A vs R', 'B vs R'}
    diffs_a = [6.0, 6.5, 5.0, 6.5]
    diffs_b = [0.3, -0.4, 0.2, 0.1]
    p_a, p_b = paired_t_test(diffs_a)['p'], paired_t_test(diffs_b)['p']
    assert [primary['A vs R']['p_holm'], primary['B vs R']['p_holm']
            ] == pytest.approx(holm([p_a, p_b]))
    assert primary['A vs R']['verdict'] == 'better'
    assert primary['B vs R']['tost']['p'] == pytest.approx(
        tost(diffs_b, 2.0)['p'])
    assert primary['B vs R']['verdict'] == 'equivalent'
    # Everything else is exploratory, unadjusted, without a verdict.
    labels = {(c['contrast'], c['metric']) for c in out['exploratory']}
    assert labels == {('A vs R', 'm2'), ('B vs R', 'm2'), ('A vs B', 'm1'),
                      ('A vs B', 'm2')}
    assert all('verdict' not in c for c in out['exploratory'])
    table = tool.preregistration_table(out)
    assert '| A vs R | m1 | 4 |' in table and '| better |' in table
    assert 'Exploratory (not registered as primary' in table


def test_fewer_seeds_than_registered_is_incomplete(tool):
    values = dict(r=[50.0, 52.0, 49.0], a=[56.0, 58.5, 54.0],
                  b=[50.0, 52.0, 49.0])
    prereg = tool.check_preregistration(PREREG, CONTRASTS, ['m1'])
    out = tool.preregistered_analysis(_results(values), CONTRASTS, prereg,
                                      ['m1'])
    assert {c['verdict'] for c in out['primary']} == {'incomplete'}


def test_unregistered_contrast_cannot_be_primary(tool):
    contrasts = CONTRASTS + [dict(name='post hoc', arms=['b'],
                                  reference=['a'], primary=True)]
    with pytest.raises(tool.PreregistrationError,
                       match=r"\['post hoc'\] call themselves primary"):
        tool.check_preregistration(PREREG, contrasts, ['m1'])


@pytest.mark.parametrize('change, message', [
    (dict(primary_contrasts=['nope']), 'not in study_contrasts'),
    (dict(primary_endpoints=['m9']), 'not metrics of the study'),
    (dict(equivalence_margin={}), 'needs a margin > 0'),
    (dict(num_seeds=1), 'num_seeds must be'),
    (dict(alpha=0.7), 'alpha must be'),
    (dict(exploratory_contrasts=['A vs R']), 'both primary and exploratory'),
    (dict(power=0.8), 'unknown keys'),
])
def test_bad_preregistration_is_named(tool, change, message):
    with pytest.raises(tool.PreregistrationError, match=message):
        tool.check_preregistration(dict(PREREG, **change), CONTRASTS,
                                   ['m1', 'm2'])
    missing = dict(PREREG)
    del missing['alpha']
    with pytest.raises(tool.PreregistrationError, match='lacks'):
        tool.check_preregistration(missing, CONTRASTS, ['m1'])


def test_v2_config_preregistration_is_read_and_valid(tool):
    cfg, _, _, _, contrasts = tool.load_study(CONFIG, False)
    prereg = cfg.study_preregistration
    checked = tool.check_preregistration(
        prereg, contrasts, [k for k, _ in cfg.study_metrics])
    assert checked['primary_contrasts']
    assert checked['num_seeds'] >= 2


def test_v2_amendment_three_primary_contrasts_and_seed_count(tool):
    """The amended registration (before the main run): shuffled attention,
    the size-matched random tree and MAE against EHM, Holm over three; the
    seed count is what the power functions give at Holm's first level."""
    from ehm_mm.evaluation.study_statistics import paired_sample_size
    cfg, arms, _, _, contrasts = tool.load_study(CONFIG, False)
    prereg = tool.check_preregistration(
        cfg.study_preregistration, contrasts,
        [k for k, _ in cfg.study_metrics])
    by_name = {c['name']: c for c in contrasts}
    pairs = {(tuple(by_name[n]['arms']), tuple(by_name[n]['reference']))
             for n in prereg['primary_contrasts']}
    assert pairs == {(('ehm_node_size', ), ('shuffled_attention', )),
                     (('ehm_node_size', ), ('random_tree_node_size', )),
                     (('ehm_node_size', ), ('mae', ))}
    assert prereg['primary_endpoints'] == ['segprobe/mIoU']
    assert prereg['equivalence_margin'] == {'segprobe/mIoU': 0.5}
    assert prereg['alpha'] == 0.05
    assert '2026-12-08' in prereg['amended']
    level = prereg['alpha'] / len(prereg['primary_contrasts'])
    needed = max(
        paired_sample_size(0.5, 0.689, alpha=level),
        paired_sample_size(0.5, 0.689, alpha=level, test='equivalence'),
        paired_sample_size(0.5, 0.689, alpha=0.05, test='equivalence'))
    assert prereg['num_seeds'] == needed
    # Every arm of a registered contrast exists; the rest are exploratory.
    named = {a for c in contrasts for a in c['arms'] + c['reference']}
    assert named <= set(arms)
    assert set(prereg['exploratory_contrasts']) == (
        set(by_name) - set(prereg['primary_contrasts']))
    values = dict(mae=[1.0, 2.0], ehm_node_size=[1.5, 2.5],
                  shuffled_attention=[1.0, 2.1],
                  random_tree_node_size=[1.2, 2.0])
    results = [dict(arm=arm, seed=seed, final={'segprobe/mIoU': v})
               for arm, per_seed in values.items()
               for seed, v in enumerate(per_seed)]
    table = tool.preregistration_table(tool.preregistered_analysis(
        results, contrasts, prereg, ['segprobe/mIoU']))
    assert 'Amended: 2026-12-08' in table and 'Holm over the 3 primary' in (
        table)
