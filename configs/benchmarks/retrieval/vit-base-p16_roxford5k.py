# roxford5k retrieval with a ViT-B/16 EHM (or MAE) encoder. One command:
#   python tools/retrieval.py configs/benchmarks/retrieval/vit-base-p16_roxford5k.py CKPT
# or, with the student backbone.* weights, through the generic test tool:
#   python tools/test.py configs/benchmarks/retrieval/vit-base-p16_roxford5k.py CKPT
_base_ = [
    './_base_/models/vit-base-p16_retrieval.py',
    './_base_/datasets/roxford5k.py',
    './_base_/retrieval_runtime.py',
]

test_dataloader = _base_.roxford5k_test_dataloader
test_evaluator = _base_.roxford5k_test_evaluator
