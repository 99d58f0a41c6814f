# Copydays: data/copydays/{original,strong,jpegqual/<q>,crops/<pct>}/*.jpg.
# Protocol of DINO's eval_copy_detection.py: square resize, originals as the
# database, mAP over the top 20 results, one mAP per query block. Optional
# (DINO: 10k YFCC100M distractors and 20k YFCC100M whitening images):
#   dataset: distractor_folder='data/yfcc_distractors',
#            whitening_folder='data/yfcc_whitening'
#   evaluator: whitening=dict(dim=None, power=0.5)
copydays_img_size = 320
copydays_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='Resize',
        scale=(copydays_img_size, copydays_img_size),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='PackRetrievalInputs'),
]
copydays_test_dataloader = dict(
    batch_size=16,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='Copydays',
        data_root='data/copydays',
        pipeline=copydays_pipeline))
copydays_test_evaluator = dict(
    type='InstanceMAP', topk=20, prefix='copydays')
