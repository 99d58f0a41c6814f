#!/bin/bash
# Study v2 main run, primary arms, registered command (configs/study/masking_study_v2.py), code = COMMIT.
cd /work/study_runs/v2_main
date -u >> main.started; uptime >> main.started
PYTHONPATH=/work/study_runs/v2_main/code OMP_NUM_THREADS=1 /work/main/.venv/bin/python code/tools/analysis/masking_study.py code/configs/study/masking_study_v2.py --out /work/study_runs/v2_main/out --seeds $(seq 0 24) --jobs 2 --threads 1 --arms mae ehm_node_size shuffled_attention random_tree_node_size > main.log 2>&1
echo rc=$? >> main.log
date -u > main.done
