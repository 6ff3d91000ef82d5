"""Class activation maps: the CAM methods (:mod:`.methods`, an interface and a registry), the maps'
shared operations (:mod:`.maps`), the multi-scale read-out (:mod:`.readout`), its archive format
(:mod:`.archive`) and ReCAM's fine-tuning of a trained classifier (:mod:`.recam`)."""
