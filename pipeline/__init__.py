"""wsss-pipe library: datasets, backbones, methods, losses, CRF, random walk, metrics, artifact formats.

Pure code: nothing here reads params.yaml, knows DVC or decides paths.
"""
from pipeline.errors import ConfigError, DataError, WsssError

__all__ = ["WsssError", "DataError", "ConfigError"]
