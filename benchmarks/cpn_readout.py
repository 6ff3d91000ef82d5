"""CAM mIoU of a trained CPN read out from its PRCM-refined map instead of the raw CAM (every third MSRC
train image), from the checkpoint of `bash benchmarks/msrc.sh methods`.

    python benchmarks/cpn_readout.py
"""
import numpy as np
import torch

from pipeline.cam import multiscale_cam
from pipeline.data.transforms import to_image_tensor
from pipeline.data.voc import VOCDataset
from pipeline.metrics import ThresholdSweep
from stages.checkpoints import load_method

method, ckpt = load_method(__import__('pathlib').Path('bench_outputs/msrc_methods/train_cls/cpn/model.pt'), torch.device('cpu'))
method.cam_source = 'refined'
ds = VOCDataset('../shared/data/msrc_objects', 'train')
th = np.round(np.arange(0, 0.6, 0.01), 2)
sweep = ThresholdSweep(th, 16)
for i in ds.ids[::3]:
    keys = np.asarray(ds.label_indices(i))
    cams = multiscale_cam(method, to_image_tensor(ds.load_image(i)), keys - 1, (1.0, 0.5, 1.5, 2.0), True).numpy()
    sweep.update(cams, keys, ds.load_mask(i))
curve = sweep.miou_curve(); b = int(np.nanargmax(curve)); print('refined', curve[b], th[b])
