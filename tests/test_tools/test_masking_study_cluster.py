# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The study tool's cluster launchers (issue 26): torchrun end to end on CPU
(2 gloo processes per job) through a fake ImageNet-style folder, a run
killed mid-pretraining and resumed (finished runs not redone), the slurm
array script checked as text, and run for real where a slurm runs. The
stage-level bookkeeping (a killed stage rerun alone, refusals) is tested
with fake jobs in tests/test_study/test_run_chain.py.

A local slurm for the real slurm test: tests/test_stack/slurm_ci.sh (CI
runs it) installs, configures and starts one. By hand (Debian 12, as root;
about 15 s to install, a few to start)::

    apt-get install -y --no-install-recommends slurmctld slurmd \\
        slurm-client munge
    munged --force
    # /etc/slurm/slurm.conf: ClusterName=local, SlurmctldHost=$(hostname),
    # SlurmUser=root, ProctrackType=proctrack/linuxproc,
    # TaskPlugin=task/none, SelectType=select/cons_tres,
    # NodeName=$(hostname) CPUs=$(nproc) State=UNKNOWN,
    # PartitionName=debug Nodes=$(hostname) Default=YES State=UP
    slurmctld && slurmd
"""
import json
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from fake_imagenet import make_fake_imagenet, write_class_list
from masking_study_tool import load_masking_study

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis', 'masking_study.py')
CONFIG = osp.join(ROOT, 'tests', 'data', 'configs', 'cluster_study',
                  'tiny_study.py')
CONVERTER = osp.join(ROOT, 'tools', 'dataset_converters', 'imagenet100.py')
#: Four of CMC's ImageNet-100 classes; the fake ImageNet-1K also holds one
#: class that is not in the list (the converter leaves it out).
CLASSES = ('n02869837', 'n01749939', 'n02488291', 'n02107142')


def make_fake_imagenet100(root: str) -> str:
    """An ImageNet-100-style dataset root made the way a user makes one: a
    fake ImageNet-1K folder (generated JPEGs, tests/fake_imagenet.py) through
    tools/dataset_converters/imagenet100.py with ``--symlink``.

    Returns:
        str: The dataset root (``train/``, ``val/``, ``meta/{train,val}.txt``).
    """
    imagenet = osp.join(root, 'imagenet1k')
    make_fake_imagenet(imagenet, wnids=CLASSES + ('n01440764', ),
                       train_per_class=8, val_per_class=4)
    classes = write_class_list(osp.join(root, 'classes.txt'), CLASSES)
    out = osp.join(root, 'imagenet100')
    subprocess.run([sys.executable, CONVERTER, imagenet, out, '--classes',
                    classes, '--symlink'], check=True,
                   env=dict(os.environ, PYTHONPATH=ROOT))
    for split, count in (('train', 8), ('val', 4)):
        with open(osp.join(out, 'meta', f'{split}.txt')) as f:
            assert len(f.read().split('\n')) - 1 == count * len(CLASSES)
    return out


@pytest.fixture(scope='module')
def tool():
    return load_masking_study()


def _run(cmd, env, kill_group_file=None, timeout=600):
    """Run the tool in a session of its own (the kill hook's target)."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if kill_group_file:
        with open(kill_group_file, 'w') as f:
            f.write(str(proc.pid))
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _logs(out):
    text = ''
    for arm in ('mae', 'ehm'):
        folder = osp.join(out, 'runs', arm, 'seed0')
        for name in ('run.log', 'stage.log', 'eval/knn/stage.log',
                     'eval/linear/stage.log'):
            if osp.exists(osp.join(folder, name)):
                with open(osp.join(folder, name)) as f:
                    text += f'--- {arm}/{name}\n' + f.read()[-3000:]
    return text


def _study_env(root: str) -> tuple:
    """The study folder under ``root`` and the tool's environment (a fake
    ImageNet under ``root``; tests/ importable for the kill hook)."""
    data = make_fake_imagenet100(root)
    env = dict(
        os.environ, PYTHONPATH=ROOT + os.pathsep + osp.join(ROOT, 'tests'),
        OMP_NUM_THREADS='1', EHM_FAKE_IMAGENET=data)
    return osp.join(root, 'study'), env


@pytest.fixture(scope='module')
def study(tmp_path_factory):
    """2 arms x 1 seed with torchrun (2 processes a job). The first try
    finishes mae, then is killed after ehm's pretraining iteration 3 of 4
    (checkpoint at 2); the second try finishes the study."""
    root = tmp_path_factory.mktemp('cluster_study')
    out, env = _study_env(str(root))
    cmd = [
        sys.executable, TOOL, CONFIG, '--out', out, '--seeds', '0',
        '--launcher', 'torchrun', '--gpus-per-run', '2', '--device', 'cpu'
    ]
    group_file = str(root / 'group')
    killed = _run(
        cmd, dict(env, EHM_TEST_KILL_AT_ITER='3',
                  EHM_TEST_KILL_RUN=osp.join('runs', 'ehm', 'seed0'),
                  EHM_TEST_KILL_GROUP_FILE=group_file),
        kill_group_file=group_file)
    runs = {arm: osp.join(out, 'runs', arm, 'seed0') for arm in ('mae', 'ehm')}
    after_kill = {arm: sorted(os.listdir(runs[arm])) for arm in runs}
    mae_result = os.stat(osp.join(runs['mae'], 'result.json')).st_mtime_ns
    full = _run(cmd, env)
    return dict(out=out, runs=runs, killed=killed, full=full,
                after_kill=after_kill, mae_result=mae_result)


def test_killed_pretraining_left_its_checkpoint_and_no_marker(study):
    code, output = study['killed']
    assert code == -9, output + _logs(study['out'])  # SIGKILL of the study
    assert 'result.json' in study['after_kill']['mae']  # mae had finished
    ehm = study['after_kill']['ehm']
    assert 'iter_2.pth' in ehm and 'iter_4.pth' not in ehm
    assert 'stage_done.json' not in ehm and 'result.json' not in ehm
    assert 'eval' not in ehm  # no stage started


def test_torchrun_study_end_to_end(study):
    code, output = study['full']
    out = study['out']
    assert code == 0, output + _logs(out)
    # The finished run is not redone.
    assert '1 runs to do, 1 already finished' in output
    assert os.stat(osp.join(study['runs']['mae'], 'result.json')
                   ).st_mtime_ns == study['mae_result']
    summary = json.loads(open(osp.join(out, 'results.json')).read())
    assert list(summary['arms']) == ['mae', 'ehm']
    assert summary['missing'] == []
    for arm, run in study['runs'].items():
        result = json.loads(open(osp.join(run, 'result.json')).read())
        assert set(result['final']) == {'knn/top1', 'linear/top1'}
        for value in result['final'].values():
            assert 0.0 <= value <= 100.0
        # Each job was a 2-process torchrun job (gloo on CPU).
        for log in ('stage.log', 'eval/knn/stage.log',
                    'eval/linear/stage.log'):
            text = open(osp.join(run, log)).read()
            assert '--nproc_per_node=2' in text, log
            assert 'Distributed launcher: pytorch' in text, log
            assert 'GPU number: 2' in text, log  # the world size
            assert "'backend': 'gloo'" in text, log
        knn = json.loads(open(osp.join(run, 'eval', 'knn',
                                       'stage_done.json')).read())
        assert knn['arm'] == arm and knn['seed'] == 0
        assert knn['value'] == result['final']['knn/top1']
        assert knn['metric'] == 'knn/top1'
        linear = json.loads(open(osp.join(run, 'eval', 'linear',
                                          'stage_done.json')).read())
        assert linear['metric'] == 'accuracy/top1'
        assert linear['value'] == result['final']['linear/top1']
        assert linear['epoch'] == 2  # the validation of the final weights
        assert summary['arms'][arm]['metrics']['knn/top1']['mean'] == (
            result['final']['knn/top1'])
    # The same report as the CPU study: paired differences and contrasts.
    report = open(osp.join(out, 'results.md')).read()
    assert '| EHM vs MAE | ehm | mae |' in report
    # Tables the chain does not measure say so instead of empty rows.
    for what in ('Mean attention distance', 'Mean masked node size',
                 'Mask-object alignment'):
        assert f'{what}: not measured by these runs' in report
    assert 'Mask-object alignment (%' not in report
    for name in ('results.csv', 'final_metrics.png', 'metric_curves.png'):
        assert os.path.getsize(osp.join(out, name)) > 0


def test_killed_run_resumed_from_its_checkpoint(study):
    assert study['full'][0] == 0, study['full'][1]
    log = open(osp.join(study['runs']['ehm'], 'stage.log')).read()
    tries = log.split('\n$ ')
    assert len(tries) == 3  # text before the first command, 2 tries
    assert 'Iter(train) [3/4]' in tries[1]
    assert 'Iter(train) [4/4]' not in tries[1]
    assert 'resumed epoch: 0, iter: 2' in tries[2]
    assert 'Iter(train) [1/4]' not in tries[2]
    assert 'Iter(train) [3/4]' in tries[2]
    assert 'Iter(train) [4/4]' in tries[2]


def test_slurm_array_script(tool, tmp_path, capsys):
    out = str(tmp_path / 'study')
    assert tool.main([
        CONFIG, '--out', out, '--seeds', '0', '1', '--launcher', 'slurm',
        '--gpus-per-run', '4', '--nnodes', '2', '--jobs', '3',
        '--partition', 'gpu', '--sbatch-args=--time=48:00:00'
    ]) == 0
    script = osp.join(out, 'slurm', 'study_array.sh')
    assert f'sbatch {script}' in capsys.readouterr().out
    text = open(script).read()
    lines = text.splitlines()
    # One task per (arm, seed) run, the same arms and seeds as the study.
    assert '#SBATCH --array=0-3%3' in lines
    start = lines.index('RUNS=(')
    assert lines[start + 1:start + 6] == [
        "  'mae 0'", "  'ehm 0'", "  'mae 1'", "  'ehm 1'", ')'
    ]
    for option in ('--nodes=2', '--ntasks-per-node=1', '--gres=gpu:4',
                   '--cpus-per-task=20', '--partition=gpu',
                   '--time=48:00:00', '--requeue'):
        assert f'#SBATCH {option}' in lines, option
    assert 'export CUDA_VISIBLE_DEVICES=' not in lines  # GPUs asked for
    # Each task runs its chain with srun jobs; pretraining and the linear
    # probe resume (--resume), k-NN gets the pretraining checkpoint.
    chain = shlex.split(lines[-1])
    assert chain[-2:] == ['$ARM', '$SEED'] and chain[-3] == '--run-chain'
    args = tool.parse_args(chain[2:-2] + ['mae', '0'])
    assert (args.launcher, args.gpus_per_run, args.nnodes) == ('slurm', 4, 2)
    assert args.run_chain == ['mae', '0'] and args.config == CONFIG
    srun = ('#   srun --nodes=2 --ntasks=2 --ntasks-per-node=1 '
            '--kill-on-bad-exit=1 ')
    torchrun = ('-m torch.distributed.run --nnodes=2 --rdzv_backend=c10d '
                '--rdzv_endpoint=$MASTER_ADDR:$MASTER_PORT '
                '--rdzv_id=$SLURM_JOB_ID --nproc_per_node=4 ')
    jobs = [line for line in lines if line.startswith('#   srun')]
    assert len(jobs) == 3
    assert all(job.startswith(srun) and torchrun in job for job in jobs)
    assert 'tools/train.py' in jobs[0] and jobs[0].endswith(
        '--resume --launcher pytorch')
    assert 'tools/test.py' in jobs[1] and '<pretraining checkpoint>' in (
        jobs[1])
    assert 'eval/linear' in jobs[2] and jobs[2].endswith(
        '--resume --launcher pytorch')
    assert 'export MASTER_PORT=' in text and 'export MASTER_ADDR=' in text
    subprocess.run(['bash', '-n', script], check=True)  # valid bash


def _slurm_running() -> bool:
    if shutil.which('sbatch') is None:
        return False
    try:
        return subprocess.run(['sinfo', '-h'], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(
    not _slurm_running() and os.environ.get('EHM_REQUIRE_SLURM') != '1',
    reason='no running slurm; tests/test_stack/slurm_ci.sh starts one (CI '
    'runs it with EHM_REQUIRE_SLURM=1, which turns this skip into a failure)')
def test_slurm_array_job_runs_for_real(tmp_path):
    """One arm through a real slurm (sbatch array task, srun jobs of 2 gloo
    processes), then the report from the finished task."""
    assert _slurm_running(), ('EHM_REQUIRE_SLURM=1 but `sinfo` does not '
                              'answer: no slurm controller is running')
    out, env = _study_env(str(tmp_path))
    cmd = [
        sys.executable, TOOL, CONFIG, '--out', out, '--seeds', '0',
        '--arms', 'ehm', '--launcher', 'slurm', '--gpus-per-run', '2',
        '--cpus-per-gpu', '1', '--device', 'cpu'
    ]
    code, output = _run(cmd + ['--submit'], env)
    assert code == 0, output
    job = re.search(r'Submitted batch job (\d+)', output)
    assert job, output
    deadline = time.time() + 600
    while subprocess.run(['squeue', '-h', '-j', job.group(1)],
                         capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline, 'the slurm job did not finish'
        time.sleep(2)
    code, output = _run(cmd + ['--report-only'], env)
    assert code == 0, output + _logs(out)
    run = osp.join(out, 'runs', 'ehm', 'seed0')
    result = json.loads(open(osp.join(run, 'result.json')).read())
    assert set(result['final']) == {'knn/top1', 'linear/top1'}
    assert result['launcher'] == 'SlurmLauncher'
    log = open(osp.join(run, 'stage.log')).read()
    assert '$ srun --nodes=1 --ntasks=1' in log and 'GPU number: 2' in log
    task_log = open(osp.join(out, 'slurm', f'{job.group(1)}_0.log')).read()
    assert '[study] ehm seed 0: result written' in task_log


def test_launcher_needs_an_evaluation_chain(tool, tmp_path):
    plain = osp.join(ROOT, 'configs', 'study', 'masking_study_v2.py')
    with pytest.raises(SystemExit, match='study_evaluation'):
        tool.main([plain, '--out', str(tmp_path), '--launcher', 'torchrun'])
    with pytest.raises(SystemExit, match='--launcher torchrun'):
        tool.main([CONFIG, '--out', str(tmp_path)])
    with pytest.raises(SystemExit, match='--nnodes > 1 needs --launcher '
                       'slurm'):
        tool.main([CONFIG, '--out', str(tmp_path), '--launcher', 'torchrun',
                   '--nnodes', '2'])
    with pytest.raises(SystemExit, match='--baselines .* --launcher local'):
        tool.main([CONFIG, '--out', str(tmp_path), '--launcher', 'torchrun',
                   '--baselines'])
