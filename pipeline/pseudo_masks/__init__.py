"""Pseudo masks: CAMs (or a propagation method's walk) turned into label maps, refined by the dense CRF
(:mod:`.crf`, also the relation labels' and the segmentation inference's CRF)."""
