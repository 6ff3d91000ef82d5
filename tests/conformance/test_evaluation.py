"""The evaluation against chainercv's / IRN's / SEAM's numbers (../shared/conformance, README.md there)."""
from __future__ import annotations

import numpy as np

from pipeline.metrics import ThresholdSweep, confusion_matrix, iou_per_class, mean_iou, scores_to_label

from ._fixtures import check, load

VOID = 255


def test_eval_miou():
    f = load("eval_miou")
    n = int(f["param_num_classes"])
    conf = sum(confusion_matrix(p, g, n) for p, g in zip(f["in_pred"], f["in_gt"]))
    check("eval_miou", "out_confusion_chainercv", f["out_confusion_chainercv"], conf)
    check("eval_miou", "out_iou_irn", f["out_iou_irn"], iou_per_class(conf))
    check("eval_miou", "out_miou_irn", f["out_miou_irn"], mean_iou(conf))
    # The project reports IRN's convention only. SEAM's (every class counts, an absent one as 0; a predicted
    # void matches no class) follows from our confusion matrix of the pixels not predicted void (TP, P) and
    # the ground-truth counts, which a predicted void does not change (T).
    seen = f["in_pred"] != VOID
    hit = sum(confusion_matrix(p[s], g[s], n) for p, g, s in zip(f["in_pred"], f["in_gt"], seen))
    tp, predicted, truth = np.diag(hit), hit.sum(axis=0), conf.sum(axis=1)
    seam = np.mean(tp / (truth + predicted - tp + 1e-10))
    check("eval_miou", "out_miou_seam", f["out_miou_seam"], seam)


def test_eval_cam_threshold_sweep():
    f = load("eval_cam_threshold_sweep")
    cams, keys, gt, thresholds = f["in_cams"], f["in_keys"], f["in_gt"], f["param_thresholds"]
    num_classes = 16  # MSRC: any number above the largest class id gives the same mIoU
    sweep = ThresholdSweep(thresholds, num_classes)
    sweep.update(cams, keys, gt)
    check("eval_cam_threshold_sweep", "out_miou_irn", f["out_miou_irn"], sweep.miou_curve())
    one_by_one = [mean_iou(confusion_matrix(scores_to_label(cams, keys, t), gt, num_classes)) for t in thresholds]
    check("eval_cam_threshold_sweep", "out_miou_irn", f["out_miou_irn"], np.array(one_by_one))
