# All five retrieval benchmarks with a ViT-B/16 EHM (or MAE) encoder; prints
# one table per dataset:
#   python tools/retrieval.py configs/benchmarks/retrieval/vit-base-p16_retrieval-all.py CKPT
# Pick some with --benchmarks roxford5k copydays; use the EMA teacher with
# --weights teacher.
_base_ = [
    './_base_/models/vit-base-p16_retrieval.py',
    './_base_/datasets/roxford5k.py',
    './_base_/datasets/rparis6k.py',
    './_base_/datasets/copydays.py',
    './_base_/datasets/holidays.py',
    './_base_/datasets/ukbench.py',
    './_base_/retrieval_runtime.py',
]

# Each name N runs N_test_dataloader with N_test_evaluator (from the bases
# above), so they can be changed with --cfg-options, e.g.
#   roxford5k_test_dataloader.dataset.data_root=/datasets/roxford5k
retrieval_benchmarks = ['roxford5k', 'rparis6k', 'copydays', 'holidays',
                        'ukbench']
