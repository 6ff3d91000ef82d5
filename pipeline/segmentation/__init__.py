"""Semantic segmentation, the pipeline's last step: DeepLab (:mod:`.deeplab`) trained on pseudo masks
(:mod:`.training`) and its inference (:mod:`.inference`); the single-stage branch trained end to end from
scribbles (:mod:`.scribbles`) with partial cross entropy and a regularised loss (:mod:`.single_stage`,
:mod:`.losses`)."""
