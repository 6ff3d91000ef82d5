"""What every stage does before its work: seed the random generators, and resolve the ``device`` param
(joining the process group under torchrun)."""
from __future__ import annotations

import random

import numpy as np
import torch

from pipeline.engine import distributed


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for data loaders."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def resolve_device(name: str) -> torch.device:
    """The device named by the ``device`` param; under torchrun this also joins the process group and a
    CUDA device becomes this rank's GPU (:func:`pipeline.engine.distributed.setup`)."""
    if name == "auto":
        return distributed.setup(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if name.startswith("cuda") and not torch.cuda.is_available():
        from pipeline.errors import ConfigError

        raise ConfigError("device: cuda was asked for but no CUDA device is available; use auto or cpu")
    return distributed.setup(torch.device(name))
