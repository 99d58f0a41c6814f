# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The masking study tool: statistics, and --quick end to end (resumable)."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
from masking_study_tool import load_masking_study

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOOL = osp.join(ROOT, 'tools', 'analysis', 'masking_study.py')
CONFIG = osp.join(ROOT, 'configs', 'study', 'masking_study_scenes.py')


def _tool():
    return load_masking_study()


def test_paired_difference_and_t_interval():
    tool = _tool()
    diff = tool.paired_difference({0: 3.0, 1: 5.0, 2: 9.0}, {0: 1.0, 1: 2.0})
    # shared seeds 0, 1: differences 2 and 3
    assert diff['n'] == 2 and diff['mean'] == pytest.approx(2.5)
    half = 12.706 * math.sqrt(0.5) / math.sqrt(2)
    assert diff['low'] == pytest.approx(2.5 - half)
    assert diff['high'] == pytest.approx(2.5 + half)
    assert tool.t_quantile(3) == pytest.approx(3.182)
    assert tool.t_quantile(100) == pytest.approx(1.96)
    mean, sd = tool.mean_sd([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and sd == pytest.approx(1.2909944)


def _fake(arm, seed, finals, curve):
    return dict(
        arm=arm, seed=seed, final={'knn/top1': finals},
        history=[dict(epoch=e, metrics={'knn/top1': v}) for e, v in curve],
        attention_distance=[1.0, 2.0], wall_s=1.0)


def test_summary_reaches_baseline_epoch_and_table():
    tool = _tool()
    results = [
        _fake('mae', 0, 40.0, [(0, 10.0), (2, 30.0), (4, 40.0)]),
        _fake('mae', 1, 50.0, [(0, 10.0), (2, 30.0), (4, 50.0)]),
        _fake('ehm', 0, 52.0, [(0, 10.0), (2, 46.0), (4, 52.0)]),
        _fake('ehm', 1, 54.0, [(0, 10.0), (2, 44.0), (4, 54.0)]),
    ]
    summary = tool.summarise(results, 'mae', ['mae', 'ehm'])
    ehm = summary['arms']['ehm']['metrics']['knn/top1']
    assert ehm['mean'] == 53.0
    assert ehm['diff']['mean'] == pytest.approx(8.0)
    # baseline final mean 45; ehm's seed-mean curve 10, 45, 53
    assert ehm['first_epoch_reaching_baseline'] == 2
    mae = summary['arms']['mae']['metrics']['knn/top1']
    assert mae['first_epoch_reaching_baseline'] == 4
    table = tool.markdown_table(summary)
    assert '| ehm | 2 | 53.0 +- 1.4 | +8.0 [' in table
    assert 'layer 1' in table


def test_quick_study_end_to_end_and_resume(tmp_path):
    out = tmp_path / 'study'
    data = tmp_path / 'data'
    cmd = [
        sys.executable, TOOL, CONFIG, '--out',
        str(out), '--quick', '--jobs', '2', '--cfg-options',
        f'train_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}'
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True)
    logs = ''
    for arm in ('mae', 'ehm_linear'):
        log = out / 'runs' / arm / 'seed0' / 'run.log'
        if log.exists():
            logs += log.read_text()[-3000:]
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs
    summary = json.loads((out / 'results.json').read_text())
    assert list(summary['arms']) == ['mae', 'ehm_linear']
    assert summary['missing'] == []
    for arm in ('mae', 'ehm_linear'):
        metrics = summary['arms'][arm]['metrics']
        for key in ('knn/top1', 'linear/top1', 'segprobe/mIoU',
                    'hierarchy/best_iou'):
            assert 0.0 <= metrics[key]['mean'] <= 100.0
            assert len(metrics[key]['curve']) >= 2  # start and end at least
        assert len(summary['arms'][arm]['attention_distance']) == 4
    ehm_run = [r for r in summary['runs'] if r['arm'] == 'ehm_linear'][0]
    assert ehm_run['final']['knn/top1'] >= 0
    for name in ('results.csv', 'results.md', 'final_metrics.png',
                 'metric_curves.png', 'attention_distance.png'):
        assert (out / name).stat().st_size > 0
    assert '| ehm_linear | 1 |' in (out / 'results.md').read_text()
    # Resumable: finished runs are not redone.
    stamp = (out / 'runs' / 'mae' / 'seed0' / 'result.json').stat().st_mtime
    again = subprocess.run(
        cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert '0 runs to do, 2 already finished' in again.stdout
    assert (out / 'runs' / 'mae' / 'seed0' /
            'result.json').stat().st_mtime == stamp


def test_contrast_averages_groups_per_seed():
    tool = _tool()
    results = [
        _fake('a1', 0, 10.0, []), _fake('a2', 0, 20.0, []),
        _fake('r', 0, 12.0, []),
        _fake('a1', 1, 14.0, []), _fake('a2', 1, 18.0, []),
        _fake('r', 1, 13.0, []),
        _fake('a1', 2, 50.0, []),  # seed 2 lacks a2 and r: left out
    ]
    diff = tool.contrast(results, ['a1', 'a2'], ['r'], 'knn/top1')
    # seed 0: 15 - 12 = 3; seed 1: 16 - 13 = 3
    assert diff['n'] == 2 and diff['mean'] == pytest.approx(3.0)
    assert diff['low'] == pytest.approx(3.0)  # no spread
    summary = tool.summarise(results, 'r', ['a1', 'a2', 'r'], [
        dict(name='groups', arms=['a1', 'a2'], reference=['r'])
    ])
    assert summary['contrasts'][0]['metrics']['knn/top1']['n'] == 2
    assert '| groups | a1, a2 | r | +3.0 [+3.0, +3.0], n=2 |' in (
        tool.markdown_table(summary))
    with pytest.raises(ValueError, match='not in the study'):
        tool.summarise(results, 'r', ['a1', 'r'], [
            dict(name='x', arms=['a2'], reference=['r'])
        ])


def test_arm_styles_tell_up_to_30_arms_apart():
    tool = _tool()
    arms = ['mae'] + [f'arm{i}' for i in range(29)]
    styles = tool.arm_styles(arms, 'mae')
    assert styles['mae']['color'] == 'k'
    keys = {(st['color'], st['linestyle'], st['marker'])
            for st in styles.values()}
    assert len(keys) == 30  # every arm its own (colour, line, marker)
    # the first ten non-baseline arms share one line style
    assert {styles[f'arm{i}']['linestyle'] for i in range(10)} == {'-'}


def test_every_shipped_arm_builds_its_model(tmp_path):
    """A typo in an arm's options fails here, not an hour into a study."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import ehm_mm  # noqa: F401
    tool = _tool()
    init_default_scope('mmpretrain')
    _, arms, _, _, _ = tool.load_study(CONFIG, quick=False)
    assert len(arms) >= 9
    for arm in arms:
        cfg = tool.build_run_config(CONFIG, arm, 0, str(tmp_path), quick=False)
        model = MODELS.build(cfg.model)
        assert hasattr(model, 'masking'), arm
