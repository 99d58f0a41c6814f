# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""tools/benchmarks/bench_mask_generator.py: a smoke run prints every row."""
import re
import sys

SCRIPT = 'tools/benchmarks/bench_mask_generator.py'


def test_smoke_run_prints_every_figure(run_tool):
    proc = run_tool(
        [sys.executable, SCRIPT, '--images', '2', '--repeats', '1'],
        timeout=300)
    text = proc.stdout
    assert 'one thread (a dataloader worker), 224 px' in text
    for name in ('SimMIMMaskGenerator', 'BEiTMaskGenerator',
                 'EHM depth 0', 'EHM depth 3', 'EHM depth 5'):
        row = re.search(rf'^{name} +(\d+) +(\d+) +([\d.]+)$', text,
                        re.MULTILINE)
        assert row, name
        assert int(row.group(1)) > 0 and int(row.group(2)) > 0
    # each grid's mmpretrain generator is its own baseline
    assert re.search(r'^SimMIMMaskGenerator .* 1\.00$', text, re.MULTILINE)
    assert re.search(r'^BEiTMaskGenerator .* 1\.00$', text, re.MULTILINE)


def test_options_reach_the_generator(run_tool):
    proc = run_tool(
        [sys.executable, SCRIPT, '--images', '2', '--repeats', '1',
         '--depth-unit', 'node_size', '--boundary', 'subtree'],
        timeout=300)
    assert 'depth_unit=node_size, boundary=subtree' in proc.stdout
    # the generators benchmarked are built with the options
    built = re.findall(r'^deepest EHM arm: (.*)$', proc.stdout, re.MULTILINE)
    assert len(built) == 2
    for line in built:
        assert "depth_unit='node_size'" in line
        assert "boundary='subtree'" in line
    assert re.search(r'^EHM depth 5 batched +\d+ +\d+ +[\d.]+$',
                     proc.stdout, re.MULTILINE)
