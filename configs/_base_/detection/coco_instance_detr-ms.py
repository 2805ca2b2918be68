# COCO 2017 instance segmentation with the DETR / Sparse R-CNN multi-scale training pipeline
# (a random choice between a multi-scale resize and a resize-crop-resize), as in the detection
# configs of the KernelWarehouse release and mmdet's ConvNeXt configs. Test: 1333x800.
#
# The data root defaults to data/coco; set the environment variable COCO_ROOT to use another
# (mmengine substitutes it when the config is read):
#   COCO_ROOT=/datasets/coco tools/dist_train.sh configs/mask-rcnn_kw-r50_1x_coco.py 8
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

data_root = '{{$COCO_ROOT:data/coco}}/'
backend_args = None

ms_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333), (640, 1333),
             (672, 1333), (704, 1333), (736, 1333), (768, 1333), (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]

train_dataloader = dict(
    batch_size=2,  # x 8 GPUs = 16, the paper's batch size
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
