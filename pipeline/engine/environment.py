"""What ``wsss-pipe doctor`` checks about the machine: Python, torch, the device and mixed precision, the
dense CRF (pydensecrf, run on a tiny image, not only imported) and the backbones' ImageNet weights.

Each check is a :class:`Check`: what it looked at, what it found, and a problem (one line) or None.
"""
from __future__ import annotations

import platform
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    name: str
    found: str
    problem: str | None = None


def python_and_torch() -> list[Check]:
    import torch

    checks = [Check("python", f"{platform.python_version()} ({sys.executable})",
                    None if sys.version_info >= (3, 10) else "python: 3.10 or newer is needed")]
    checks.append(Check("torch", f"{torch.__version__} (threads: {torch.get_num_threads()})"))
    return checks


def device(requested: str) -> list[Check]:
    """The device the ``device`` param resolves to and whether mixed precision (AMP, CUDA only) runs on it:
    a float16 autocast matmul is actually computed."""
    import torch

    if not torch.cuda.is_available():
        problem = (f"device: {requested} was asked for but torch sees no CUDA device (torch {torch.__version__}, "
                   f"built for CUDA {torch.version.cuda or 'none'})" if requested.startswith("cuda") else None)
        return [Check("device", "cpu (no CUDA device visible)", problem),
                Check("amp", "off: mixed precision runs on CUDA only; CPU training is float32")]
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    found = f"cuda: {len(names)} x {names[0]}" + (f" (+ {', '.join(names[1:])})" if len(set(names)) > 1 else "")
    checks = [Check("device", f"{found}, CUDA {torch.version.cuda}" + (" (device: cpu forces the CPU)"
                                                                       if requested == "cpu" else ""))]
    try:
        with torch.autocast("cuda", dtype=torch.float16):
            out = torch.ones(8, 8, device="cuda") @ torch.ones(8, 8, device="cuda")
        ok = out.dtype == torch.float16 and float(out[0, 0]) == 8.0
        checks.append(Check("amp", "float16 autocast works" if ok else "float16 autocast gave a wrong result",
                            None if ok else "amp: float16 autocast is broken on this GPU; set amp: false"))
    except RuntimeError as exc:
        checks.append(Check("amp", "fails", f"amp: float16 autocast fails on cuda ({str(exc).splitlines()[0]})"))
    return checks


def dense_crf() -> Check:
    """pydensecrf imported and run: mean field on an 8x8 two-class image must keep the confident labels."""
    import numpy as np

    try:
        from pipeline.pseudo_masks.crf import dense_crf as run_crf
    except ImportError as exc:
        return Check("dense CRF", "pydensecrf not importable",
                     f"dense CRF: pydensecrf does not import ({exc}); pip install pydensecrf2 (a wheel of "
                     "pydensecrf, pyproject.toml) for this Python")
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:, 4:] = 255
    probs = np.full((2, 8, 8), 0.2, dtype=np.float32)
    probs[0, :, :4] = probs[1, :, 4:] = 0.8
    try:
        post = run_crf(image, probs, iterations=5)
    except Exception as exc:  # a broken native build fails in any way
        return Check("dense CRF", "fails", f"dense CRF: pydensecrf imports but fails to run ({exc})")
    labels = post.argmax(0)
    if post.shape != (2, 8, 8) or not (labels[:, :4] == 0).all() or not (labels[:, 4:] == 1).all():
        return Check("dense CRF", "wrong result", "dense CRF: pydensecrf runs but gives a wrong posterior")
    import pydensecrf

    return Check("dense CRF", f"pydensecrf runs ({getattr(pydensecrf, '__file__', '')})")


def backbone_weights(selected: str, pretrained: str | None) -> list[Check]:
    """One line: which backbones have their ImageNet weights on this machine, which would download them,
    which need a weights file; a problem when ``backbone.pretrained`` needs weights that are not there."""
    from pathlib import Path

    from pipeline.models.backbones import BACKBONES
    from pipeline.models.backbones.weights import imagenet_weights

    groups: dict[str, list[str]] = {"offline": [], "missing (downloaded on first use)": [], "no imagenet": []}
    problems = []
    for name in BACKBONES:
        available, where = imagenet_weights(name)
        group = {True: "offline", False: "missing (downloaded on first use)", None: "no imagenet"}[available]
        groups[group].append(name + (" (selected)" if name == selected else ""))
        if name == selected and pretrained == "imagenet" and available is not True:
            problems.append(f"backbone: {name} with pretrained: imagenet, but its weights are not here: {where}")
    if pretrained not in (None, "none", "imagenet") and not Path(pretrained).is_file():
        problems.append(f"backbone.pretrained: weights file {pretrained} not found")
    found = "; ".join(f"{group}: {', '.join(names)}" for group, names in groups.items() if names)
    return [Check("imagenet weights", found, problems[0] if problems else None)] + \
        [Check("weights file", pretrained, problem) for problem in problems[1:]]
