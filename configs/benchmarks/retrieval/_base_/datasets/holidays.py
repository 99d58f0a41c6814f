# INRIA Holidays: data/holidays/jpg/GGGGNN.jpg (NN=00: the group query).
# Every image is in the database; the query is excluded from its own ranking.
# Many works fix the rotated images first: point image_folder at that copy.
holidays_long_edge = 224
holidays_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=holidays_long_edge,
        edge='long',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='PackRetrievalInputs'),
]
holidays_test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='INRIAHolidays',
        data_root='data/holidays',
        image_folder='jpg',
        pipeline=holidays_pipeline))
holidays_test_evaluator = dict(type='InstanceMAP', prefix='holidays')
