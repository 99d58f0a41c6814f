# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The run chain's bookkeeping with fake jobs (no training): each job once,
markers, reruns, refusals; the stage schema; GPU slots and commands."""
import json
import os
import os.path as osp
import sys

import pytest
from mmengine.config import Config

from ehm_mm.study import (
    EvaluationStage,
    RunChain,
    StageFailedError,
    StageMarkerError,
    StudyEvaluationError,
    TorchrunLauncher,
    device_slots,
    parse_evaluation_stages,
    run_chain,
)
from ehm_mm.study.launchers import SlurmLauncher, StageLauncher

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# A stand-in for tools/train.py and tools/test.py: logs its call, checks the
# checkpoint it was given and writes what the real tool's job leaves.
FAKE_JOB = r'''
import json, os, os.path as osp, sys
from mmengine.config import Config
tool, config = osp.basename(sys.argv[1]), sys.argv[2]
work_dir = sys.argv[sys.argv.index('--work-dir') + 1]
name = 'pretrain' if osp.basename(osp.dirname(work_dir)) != 'eval' else (
    osp.basename(work_dir))
with open(os.environ['FAKE_CALLS'], 'a') as f:
    f.write(name + '\n')
if os.environ.get('FAKE_FAIL') == name:
    sys.exit(3)
if name == 'pretrain':
    last = os.environ.get('FAKE_LAST', 'iter_4.pth')
    open(osp.join(work_dir, last), 'w').write('weights')
    open(osp.join(work_dir, 'last_checkpoint'), 'w').write(
        osp.join(work_dir, last))
    sys.exit(0)
cfg = Config.fromfile(config)
if tool == 'test.py':
    checkpoint, mode = sys.argv[3], 'test'
else:
    checkpoint, mode = cfg.model.backbone.init_cfg.checkpoint, 'val'
assert osp.isfile(checkpoint), checkpoint
assert cfg.randomness.seed == 7, cfg.randomness
value = float(os.environ.get('FAKE_VALUE', '61.5'))
record = dict(mode=mode, iter=8, epoch=2, final=True,
              metrics={cfg.reported: value}, non_scalar=[])
json.dump(dict(records=[record]),
          open(osp.join(work_dir, 'stage_metrics.json'), 'w'))
'''


class FakeLauncher(StageLauncher):
    """Runs the fake job in one process instead of a distributed job."""

    def __init__(self, script: str) -> None:
        super().__init__(1)
        self.script = script

    def command(self, tool, args):
        return [sys.executable, self.script, tool, *args]


def _stage(name, tool, metric, report_as, checkpoint):
    return EvaluationStage(
        name=name, config=f'/unused/{name}.py', tool=tool,
        checkpoint=checkpoint, metric=metric, report_as=report_as)


STAGES = [
    _stage('knn', 'test', 'knn/top1', 'knn/top1', 'argument'),
    _stage('linear', 'train', 'accuracy/top1', 'linear/top1',
           'model.backbone.init_cfg.checkpoint'),
]


def _chain(folder, arm='ehm', seed=7, stages=STAGES, knn_k=20, lr=0.1):
    stage_cfgs = [
        Config(dict(reported='knn/top1', k=knn_k, randomness=dict(seed=seed))),
        Config(dict(reported='accuracy/top1', randomness=dict(seed=seed),
                    optim_wrapper=dict(optimizer=dict(lr=lr)),
                    model=dict(backbone=dict(init_cfg=dict(
                        type='Pretrained', checkpoint=''))))),
    ]
    return RunChain(
        arm=arm, seed=seed, folder=folder,
        pretrain_cfg=Config(dict(train_cfg=dict(max_iters=4))),
        pretrain_digest='p' * 64, stages=list(stages),
        stage_cfgs=stage_cfgs[:len(stages)],
        tools_dir=osp.join(ROOT, 'tools'))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / 'fake_job.py'
    script.write_text(FAKE_JOB)
    calls = tmp_path / 'calls.txt'
    monkeypatch.setenv('FAKE_CALLS', str(calls))
    folder = str(tmp_path / 'runs' / 'ehm' / 'seed7')

    def jobs():
        return calls.read_text().split() if calls.exists() else []

    return FakeLauncher(str(script)), folder, jobs


def _quiet(message):
    pass


def test_each_job_runs_once_and_the_result_is_assembled(fake):
    launcher, folder, jobs = fake
    chain = _chain(folder)
    result = run_chain(chain, launcher, log=_quiet)
    assert jobs() == ['pretrain', 'knn', 'linear']
    assert result['final'] == {'knn/top1': 61.5, 'linear/top1': 61.5}
    assert result['config_digest'] == chain.digest
    assert (result['arm'], result['seed']) == ('ehm', 7)
    assert result['history'] == []  # iteration-based pretraining
    on_disk = json.loads(open(osp.join(folder, 'result.json')).read())
    assert on_disk['final'] == result['final']
    marker = json.loads(open(osp.join(folder, 'eval', 'linear',
                                      'stage_done.json')).read())
    assert (marker['arm'], marker['seed'], marker['stage']) == ('ehm', 7,
                                                                'linear')
    assert marker['metric'] == 'accuracy/top1'
    # The stage's config got the pretraining checkpoint and a metrics hook.
    cfg = Config.fromfile(osp.join(folder, 'eval', 'linear', 'config.py'))
    assert cfg.model.backbone.init_cfg.checkpoint == osp.join(
        folder, 'iter_4.pth')
    assert cfg.custom_hooks[-1]['type'] == 'StageMetricsHook'
    # Everything finished: a rerun runs nothing.
    assert run_chain(chain, launcher, log=_quiet)['final'] == result['final']
    assert jobs() == ['pretrain', 'knn', 'linear']


def test_a_killed_stage_reruns_alone(fake):
    launcher, folder, jobs = fake
    run_chain(_chain(folder), launcher, log=_quiet)
    os.remove(osp.join(folder, 'eval', 'linear', 'stage_done.json'))
    run_chain(_chain(folder), launcher, log=_quiet)
    assert jobs() == ['pretrain', 'knn', 'linear', 'linear']


def test_a_failed_job_stops_the_chain_naming_its_log(fake, monkeypatch):
    launcher, folder, jobs = fake
    monkeypatch.setenv('FAKE_FAIL', 'knn')
    with pytest.raises(StageFailedError, match='exited 3; see .*knn/stage'):
        run_chain(_chain(folder), launcher, log=_quiet)
    assert jobs() == ['pretrain', 'knn']
    assert not osp.exists(osp.join(folder, 'result.json'))
    monkeypatch.delenv('FAKE_FAIL')
    run_chain(_chain(folder), launcher, log=_quiet)  # pretraining kept
    assert jobs() == ['pretrain', 'knn', 'knn', 'linear']


def test_a_stage_of_another_config_is_refused(fake):
    launcher, folder, _ = fake
    run_chain(_chain(folder), launcher, log=_quiet)
    with pytest.raises(StageMarkerError,
                       match=r'knn/stage_done.json: written for config '
                       r'digest .* delete .*eval/knn'):
        run_chain(_chain(folder, knn_k=10), launcher, log=_quiet)


def test_a_folder_started_for_another_config_is_not_resumed(fake,
                                                            monkeypatch):
    launcher, folder, _ = fake
    monkeypatch.setenv('FAKE_FAIL', 'linear')
    with pytest.raises(StageFailedError):
        run_chain(_chain(folder), launcher, log=_quiet)
    monkeypatch.delenv('FAKE_FAIL')
    # The linear probe's config changed: its folder (checkpoints of the old
    # one) must not be resumed; the finished k-NN stage stays valid.
    with pytest.raises(StageMarkerError,
                       match='linear/stage_started.json: written for'):
        run_chain(_chain(folder, lr=0.2), launcher, log=_quiet)


def test_markers_of_another_run_are_refused(fake):
    launcher, folder, _ = fake
    run_chain(_chain(folder), launcher, log=_quiet)
    other = osp.join(osp.dirname(osp.dirname(folder)), 'mae', 'seed7')
    os.makedirs(osp.dirname(other), exist_ok=True)
    os.rename(folder, other)  # copied into another arm's folder
    with pytest.raises(StageMarkerError, match="records arm 'ehm'"):
        run_chain(_chain(other, arm='mae'), launcher, log=_quiet)


def test_an_unfinished_pretraining_is_refused(fake, monkeypatch):
    launcher, folder, jobs = fake
    monkeypatch.setenv('FAKE_LAST', 'iter_2.pth')
    with pytest.raises(StageFailedError,
                       match='ended at iter_2.pth, not at max_iters = 4'):
        run_chain(_chain(folder), launcher, log=_quiet)
    assert jobs() == ['pretrain']


def test_a_non_finite_figure_is_refused(fake, monkeypatch):
    launcher, folder, _ = fake
    monkeypatch.setenv('FAKE_VALUE', 'nan')
    with pytest.raises(StudyEvaluationError, match="'knn/top1' is nan"):
        run_chain(_chain(folder), launcher, log=_quiet)
    assert not osp.exists(osp.join(folder, 'eval', 'knn', 'stage_done.json'))


def test_a_stage_needing_a_missing_package_is_skipped(fake):
    launcher, folder, jobs = fake
    seg = EvaluationStage(
        name='linear', config='/unused/seg.py', tool='train',
        checkpoint='model.backbone.init_cfg.checkpoint', metric='mIoU',
        report_as='ade20k/mIoU', requires=('no_such_package_0xehm', ))
    result = run_chain(_chain(folder, stages=[STAGES[0], seg]), launcher,
                       log=_quiet)
    assert jobs() == ['pretrain', 'knn']
    assert result['final'] == {'knn/top1': 61.5}
    assert 'no_such_package_0xehm' in result['skipped_stages']['linear']


def test_a_stage_with_requires_is_read_when_it_runs(fake, tmp_path):
    """Its config may need a package the checking host lacks (mmseg on a
    login node): its file's text stands for it in the digest, and the
    config is read by the run that uses it."""
    launcher, folder, jobs = fake
    config = tmp_path / 'seg.py'
    config.write_text(
        "reported = 'mIoU'\nrandomness = dict(seed=0)\nmodel = dict("
        "backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='')))\n")
    seg = EvaluationStage(
        name='seg', config=str(config), tool='train',
        checkpoint='model.backbone.init_cfg.checkpoint', metric='mIoU',
        report_as='ade20k/mIoU', requires=('json', ))
    chain = _chain(folder, stages=[STAGES[0], seg])
    chain.stage_cfgs[1] = None
    result = run_chain(chain, launcher, log=_quiet)
    assert jobs() == ['pretrain', 'knn', 'seg']
    assert result['final']['ade20k/mIoU'] == 61.5
    digest = chain.digest
    config.write_text(config.read_text() + 'crop = 512\n')
    assert chain.digest != digest


def _spec(**changes):
    spec = dict(name='knn', tool='test', checkpoint='argument',
                config='tests/data/configs/cluster_study/knn_tiny.py',
                metric='knn/top1', report_as='knn/top1')
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}


@pytest.mark.parametrize('specs, message', [
    ([], 'lists no stage'),
    ([_spec(batch=2)], r"unknown fields \['batch'\]"),
    ([_spec(metric=None)], r"needs \['metric'\]"),
    ([_spec(name='kNN-1')], r'must match \[a-z0-9_\]\+'),
    ([_spec(), _spec()], "stage 'knn' repeats"),
    ([_spec(), _spec(name='knn2')], "report_as 'knn/top1' is another"),
    ([_spec(tool='eval')], "tool 'eval' is not one of"),
    ([_spec(tool='train')], "a 'train' stage by a config key"),
    ([_spec(checkpoint='model.init_cfg.checkpoint')],
     "a 'test' stage takes the checkpoint"),
    ([_spec(config='configs/nope.py')], 'nope.py not found'),
    ([_spec(requires='mmseg')], 'requires must be a list'),
])
def test_stage_schema_errors(specs, message):
    with pytest.raises(StudyEvaluationError, match=message):
        parse_evaluation_stages(specs, ROOT)


def test_stage_schema_resolves_configs_from_the_root():
    stage, = parse_evaluation_stages([_spec(requires=['mmseg'])], ROOT)
    assert stage.config == osp.join(ROOT, 'tests', 'data', 'configs',
                                    'cluster_study', 'knn_tiny.py')
    assert stage.requires == ('mmseg', ) and stage.script == 'test.py'


def test_device_slots_partition_the_gpus():
    assert device_slots(['0', '1', '2', '3'], 2, 2) == [
        dict(CUDA_VISIBLE_DEVICES='0,1'), dict(CUDA_VISIBLE_DEVICES='2,3')
    ]
    assert device_slots(['4', '6'], 1, 2) == [
        dict(CUDA_VISIBLE_DEVICES='4'), dict(CUDA_VISIBLE_DEVICES='6')
    ]
    assert device_slots([], 2, 3) == [dict(CUDA_VISIBLE_DEVICES='')] * 3
    with pytest.raises(ValueError, match='needs 6 GPUs, but 4 are visible'):
        device_slots(['0', '1', '2', '3'], 2, 3)


def test_launcher_commands():
    assert TorchrunLauncher(4, python='py').command('t.py', ['c.py']) == [
        'py', '-m', 'torch.distributed.run', '--standalone', '--nnodes=1',
        '--nproc_per_node=4', 't.py', 'c.py', '--launcher', 'pytorch'
    ]
    one_node = SlurmLauncher(8, python='py').command('t.py', ['c.py'])
    assert one_node == [
        'srun', '--nodes=1', '--ntasks=1', '--ntasks-per-node=1',
        '--kill-on-bad-exit=1', 'py', '-m', 'torch.distributed.run',
        '--standalone', '--nnodes=1', '--nproc_per_node=8', 't.py', 'c.py',
        '--launcher', 'pytorch'
    ]


def test_slurm_launcher_meets_on_the_first_node(monkeypatch):
    monkeypatch.setenv('MASTER_ADDR', 'node7')
    monkeypatch.setenv('MASTER_PORT', '23456')
    monkeypatch.setenv('SLURM_JOB_ID', '991')
    command = SlurmLauncher(8, 2, python='py').command('t.py', ['c.py'])
    assert command[:5] == ['srun', '--nodes=2', '--ntasks=2',
                           '--ntasks-per-node=1', '--kill-on-bad-exit=1']
    assert command[8:13] == [
        '--nnodes=2', '--rdzv_backend=c10d', '--rdzv_endpoint=node7:23456',
        '--rdzv_id=991', '--nproc_per_node=8'
    ]
