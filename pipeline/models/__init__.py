"""Neural network modules: backbones, classifier heads, segmentation heads."""
