# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""tools/benchmarks/bench_checkpoint_digest.py: smoke run on the tiny
config."""
import re
import sys

SCRIPT = 'tools/benchmarks/bench_checkpoint_digest.py'


def test_smoke_run_prints_both_ratios(run_tool, tmp_path):
    proc = run_tool([
        sys.executable, SCRIPT, '--config',
        'tests/data/configs/ehm_mae_tiny_cpu.py', '--repeats', '1',
        '--work-dir', str(tmp_path)
    ], timeout=300)
    text = proc.stdout
    assert 'config: tests/data/configs/ehm_mae_tiny_cpu.py' in text
    assert re.search(r'checkpoint: [\d.]+ MiB, \d+ model tensors', text)
    for what in ('save', 'load'):
        assert re.search(
            rf'{what}: plain [\d.]+ s, with digests [\d.]+ s, '
            r'ratio [\d.]+x', text), text
    assert list(tmp_path.iterdir()) == []  # its files are removed
