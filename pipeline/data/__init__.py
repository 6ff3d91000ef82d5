"""Datasets: the VOC-layout reader (:mod:`.voc`), VOC + SBD ``train_aug`` preparation (:mod:`.sbd`), COCO's
conversion (:mod:`.coco`) and the synthetic demo generator (:mod:`.synthetic`). Import the module you need:
this package imports none of them, so that a stage loads only what it reads (issue 19)."""
