#!/bin/bash
# Study v2: the exploratory arms at seeds 0-3 (config header's second command), then the report of all arms with baselines.
cd /work/study_runs/v2_main
export PYTHONPATH=/work/study_runs/v2_main/code OMP_NUM_THREADS=1
date -u > explore.started
/work/main/.venv/bin/python code/tools/analysis/masking_study.py code/configs/study/masking_study_v2.py --out /work/study_runs/v2_main/out --seeds 0 1 2 3 --jobs 2 --threads 1 --arms pixel_tree_node_size colormae_green block_beit block > explore.log 2>&1
echo rc=$? >> explore.log
date -u > explore.done
/work/main/.venv/bin/python code/tools/analysis/masking_study.py code/configs/study/masking_study_v2.py --out /work/study_runs/v2_main/out --seeds $(seq 0 24) --report-only --baselines --arms mae ehm_node_size shuffled_attention random_tree_node_size pixel_tree_node_size colormae_green block_beit block > final_report.log 2>&1
echo rc=$? >> final_report.log
date -u > final_report.done
