"""wsss-pipe library, laid out along the pipeline: data/ (datasets, image files) -> cam/ (CAM methods,
read-out, ReCAM) -> propagation/ (relation labels, networks, random walks) -> pseudo_masks/ (dense CRF)
-> segmentation/ (DeepLab, the single stage); models/ (backbones) and engine/ (training loop, atomic
writes, distributed, streaming) serve every step, report/ shows the artifacts; errors, metrics and the
params bases (settings) are shared.

Pure code: nothing here reads params.yaml, knows DVC or decides paths.
"""
from pipeline.errors import ConfigError, DataError, WsssError

__all__ = ["WsssError", "DataError", "ConfigError"]
