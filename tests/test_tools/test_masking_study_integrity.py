# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Study results with integrity (issue 24, item 2): damaged, misplaced or
stale results are refused by name; reports are written atomically."""
import functools
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from masking_study_tool import load_masking_study

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis', 'masking_study.py')
CONFIG = osp.join(ROOT, 'configs', 'study', 'masking_study_v2.py')
KEYS = ('knnbank/top1', 'linear/top1', 'segprobe/mIoU', 'hierarchy/best_iou',
        'teacher_hierarchy/best_iou')


@pytest.fixture(scope='module')
def tool():
    return load_masking_study()


@functools.lru_cache(maxsize=None)
def _digest(arm, seed):
    return load_masking_study().run_digest(CONFIG, arm, seed, True)


def _write(tool, out, arm, seed, changes=None):
    """A valid quick-study result of (arm, seed), then ``changes``."""
    folder = tool.run_dir(str(out), arm, seed)
    os.makedirs(folder, exist_ok=True)
    final = {key: 50.0 + seed for key in KEYS}
    result = dict(
        arm=arm, seed=seed,
        config_digest=_digest(arm, seed),
        final=final,
        history=[dict(epoch=e, metrics=final) for e in (1, 2)],
        attention_distance=[1.0, 2.0], wall_s=1.0)
    result.update(changes or {})
    path = osp.join(folder, tool.RESULT_FILE)
    with open(path, 'w') as f:
        json.dump(result, f)
    return path


def _report(tool, out, seeds=(0, 1), **kwargs):
    cfg, _, _, _, contrasts = tool.load_study(CONFIG, True)
    return tool.report(
        str(out), 'mae', ['mae', 'ehm_node_size'], list(seeds), contrasts,
        [tuple(m) for m in cfg.study_metrics],
        digest=_digest,
        **kwargs)


def _study(tool, out):
    for arm in ('mae', 'ehm_node_size'):
        for seed in (0, 1):
            _write(tool, out, arm, seed)


def test_valid_results_report(tool, tmp_path):
    _study(tool, tmp_path)
    summary = _report(tool, tmp_path, expected_epochs=[1, 2])
    assert summary['arms']['ehm_node_size']['seeds'] == [0, 1]
    assert summary['missing_validations'] == []


def test_result_copied_into_another_arm_is_refused(tool, tmp_path):
    _study(tool, tmp_path)
    src = osp.join(tool.run_dir(str(tmp_path), 'mae', 0), 'result.json')
    dst = osp.join(tool.run_dir(str(tmp_path), 'ehm_node_size', 0),
                   'result.json')
    with open(src) as f, open(dst, 'w') as g:
        g.write(f.read())
    with pytest.raises(tool.StudyResultError,
                       match=f"{dst}: records arm 'mae'"):
        _report(tool, tmp_path)


def test_result_of_another_seed_is_refused(tool, tmp_path):
    _study(tool, tmp_path)
    path = _write(tool, tmp_path, 'mae', 1, dict(seed=0))
    with pytest.raises(tool.StudyResultError,
                       match=f'{path}: records seed 0 but lies in the '
                       'folder of seed 1'):
        _report(tool, tmp_path)


def test_result_of_another_config_is_refused(tool, tmp_path):
    _study(tool, tmp_path)
    path = _write(tool, tmp_path, 'ehm_node_size', 1,
                  dict(config_digest=_digest('mae', 1)))
    with pytest.raises(tool.StudyResultError,
                       match=f'{path}: config digest .* does not match'):
        _report(tool, tmp_path)
    _write(tool, tmp_path, 'ehm_node_size', 1, dict(config_digest=None))
    with pytest.raises(tool.StudyResultError, match='no config digest'):
        _report(tool, tmp_path)


@pytest.mark.parametrize('value, message', [
    (float('nan'), 'is nan, not finite'),
    (float('inf'), 'is inf, not finite'),
    ('52.0', "is '52.0', not a number"),
    (None, 'is None, not a number'),
])
def test_non_finite_or_non_numeric_metric_is_refused(tool, tmp_path, value,
                                                     message):
    _study(tool, tmp_path)
    final = {key: 50.0 for key in KEYS}
    final['segprobe/mIoU'] = value
    path = _write(tool, tmp_path, 'mae', 0, dict(final=final))
    with pytest.raises(tool.StudyResultError,
                       match=f"{path}: final metric 'segprobe/mIoU' {message}"
                       .replace('(', r'\(').replace(')', r'\)')):
        _report(tool, tmp_path)


def test_missing_metric_refused_unless_the_arm_declares_it(tool, tmp_path):
    _study(tool, tmp_path)
    final = {key: 50.0 for key in KEYS if key != 'hierarchy/best_iou'}
    path = _write(tool, tmp_path, 'ehm_node_size', 0, dict(final=final))
    with pytest.raises(tool.StudyResultError,
                       match=f"{path}: lacks the final metric "
                       "'hierarchy/best_iou'"):
        _report(tool, tmp_path)
    summary = _report(
        tool, tmp_path,
        missing_metrics={'ehm_node_size': ['hierarchy/best_iou']})
    assert summary['arms']['ehm_node_size']['seeds'] == [0, 1]


@pytest.mark.parametrize('content', ['', '{"arm": "mae", "se', 'garbage\x00',
                                     '[1, 2]'])
def test_unreadable_result_is_named(tool, tmp_path, content):
    _study(tool, tmp_path)
    path = osp.join(tool.run_dir(str(tmp_path), 'mae', 1), 'result.json')
    with open(path, 'w') as f:
        f.write(content)
    with pytest.raises(tool.StudyResultError, match=f'{path}: '):
        _report(tool, tmp_path)


def test_reports_are_written_atomically(tool, tmp_path, monkeypatch):
    _study(tool, tmp_path)
    _report(tool, tmp_path)
    before = (tmp_path / 'results.json').read_text()
    assert json.loads(before)['arms']

    def killed(*args, **kwargs):
        raise KeyboardInterrupt('killed during the write')

    monkeypatch.setattr(tool.json, 'dump', killed)
    with pytest.raises(KeyboardInterrupt):
        _report(tool, tmp_path)
    assert (tmp_path / 'results.json').read_text() == before
    assert not (tmp_path / 'results.json.tmp').exists()


def test_report_lists_runs_missing_a_validation(tool, tmp_path):
    _study(tool, tmp_path)
    final = {key: 50.0 for key in KEYS}
    _write(tool, tmp_path, 'mae', 1,
           dict(history=[dict(epoch=2.0, metrics=final)]))
    summary = _report(tool, tmp_path, expected_epochs=[1, 2])
    assert summary['missing_validations'] == [
        dict(arm='mae', seed=1, epochs=[1])
    ]
    assert 'Runs missing validations (epochs): mae/seed1 [1]' in (
        tmp_path / 'results.md').read_text()


def test_quick_honours_seeds(tool, tmp_path, capsys):
    for arm in ('mae', 'ehm_node_size'):
        _write(tool, tmp_path, arm, 3)
    assert tool.main([CONFIG, '--out', str(tmp_path), '--quick', '--seeds',
                      '3', '--report-only']) == 0
    summary = json.loads((tmp_path / 'results.json').read_text())
    assert summary['arms']['mae']['seeds'] == [3]
    assert summary['missing'] == []
    assert '--quick with --seeds [3]: running those seeds' in (
        capsys.readouterr().out)


def test_resumed_run_validates_the_epoch_a_kill_skipped(tmp_path):
    """A kill between the last epoch's checkpoint and its validation: the
    resumed run validates that epoch instead of reusing stale figures."""
    out = tmp_path / 'study'
    cmd = [sys.executable, TOOL, CONFIG, '--out', str(out), '--quick',
           '--arms', 'mae']
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env,
                          capture_output=True, text=True)
    folder = out / 'runs' / 'mae' / 'seed0'
    assert proc.returncode == 0, proc.stdout + proc.stderr + (
        (folder / 'run.log').read_text()[-3000:])
    # Undo what the epoch-2 validation wrote, as if killed before it.
    summary_file = folder / 'evaluation_summary.json'
    summary = json.loads(summary_file.read_text())
    assert [h['epoch'] for h in summary['history']] == [1, 2]
    summary['history'] = summary['history'][:1]
    summary['end'] = summary['history'][0]['metrics']
    summary_file.write_text(json.dumps(summary))
    (folder / 'result.json').unlink()
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr + (
        (folder / 'run.log').read_text()[-3000:])
    result = json.loads((folder / 'result.json').read_text())
    assert [round(h['epoch']) for h in result['history']] == [1, 2]
    assert result['revalidated_epoch'] == 2
    assert 'epoch 2 was not validated before the run stopped' in (
        folder / 'run.log').read_text()
