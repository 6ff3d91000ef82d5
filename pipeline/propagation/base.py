"""The interface every propagation method (AffinityNet / PSA, IRN, ...) implements.

A propagation method turns a CAM method's class activation maps into label maps in three steps, each a
generic stage (stages/prop_labels.py, train_prop.py, walk.py; eval_walk.py measures the result):

1. **relation labels** from the CAMs (:meth:`PropagationMethod.relation_labels`): a per-pixel map of
   confident classes (0 background, k foreground, 255 ignore) from which pairs are labelled;
2. **the network and its loss** (:meth:`PropagationMethod.build_network`): an ``nn.Module`` on a shared
   backbone whose ``training_step(images, labels)`` returns loss terms (``"loss"`` back-propagated),
   trained by the shared trainer (:func:`pipeline.engine.epochs.train_method`);
3. **the walk** (:meth:`PropagationMethod.walk`): the trained network's affinities (or boundaries) turned
   into a sparse transition matrix and the CAMs propagated (:mod:`pipeline.propagation.sparse_walk`).

Each method owns its params section ``propagation.<name>`` (:attr:`PropagationMethod.Params`, with
``labels``, ``train`` and ``walk`` subsections); stages/config/ only composes them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np
from pydantic import Field

from pipeline.settings import ResumableParams, Section, TrainingParams

if TYPE_CHECKING:  # the label step and params validation run without torch
    import torch
    from torch import nn


class PropagationTraining(TrainingParams, ResumableParams):
    """What every propagation network's ``train`` subsection holds (SGD, augmentation, resume, epochs)."""

    epochs: int = Field(1, ge=1)


class PropagationParams(Section):
    """A method's ``propagation.<name>`` section: subclasses narrow the three subsections' types."""

    labels: Section = Section()
    train: PropagationTraining = PropagationTraining()
    walk: Section = Section()


@dataclass(frozen=True)
class StageContext:
    """What the stages know beyond the method's own section: ``cam_threshold()`` is eval_cam's best
    threshold for the CAM method (raises when eval_cam has not run; call it only for ``auto`` settings),
    ``crf_kernels`` the pseudo-mask CRF's kernels (``crf`` section; given to the label step only),
    ``backbone`` the backbone section (given to the network step only; None elsewhere)."""

    cam_threshold: Callable[[], float]
    crf_kernels: dict
    backbone: Any


class PropagationMethod:
    """Base class. Subclasses set ``name``, ``title``, ``Params`` and implement the five methods below.

    Settings handed to :meth:`relation_labels` and :meth:`walk` are plain picklable dicts (per-image work
    runs in worker processes, which resolve the method by name from the registry).
    """

    name: ClassVar[str] = ""
    #: Human name of the walk's label maps (reports, protocol descriptions), e.g. "AffinityNet walk".
    title: ClassVar[str] = ""
    Params: ClassVar[type[PropagationParams]] = PropagationParams
    #: Top-level params sections, besides ``propagation.<name>``, that the label step reads (IRN: ``crf``).
    label_reads: ClassVar[tuple[str, ...]] = ()
    #: The modules :meth:`build_network` and :meth:`walk` import when they run (torch): not at the method's
    #: import, so that the label step and params validation run without torch.
    torch_modules: ClassVar[tuple[str, ...]] = ()

    def import_torch_steps(self) -> None:
        """Import :attr:`torch_modules` now: a stage that walks in forked worker processes calls it first,
        so that its workers inherit them instead of each importing them again."""
        import importlib

        for module in self.torch_modules:
            importlib.import_module(module)

    def label_settings(self, cfg: PropagationParams, context: StageContext) -> tuple[dict, bool]:
        """(keyword arguments of :meth:`relation_labels`, whether they depend on eval_cam's threshold)."""
        raise NotImplementedError

    def relation_labels(self, image: np.ndarray, cams: np.ndarray, keys: np.ndarray, **settings) -> np.ndarray:
        """(H, W) uint8 label map of image (H, W, 3) from its CAMs (K, H, W) in [0, 1] for the 1-based
        class ``keys``: 0 background, a key, or 255 ignore."""
        raise NotImplementedError

    def network_spec(self, cfg: PropagationParams, context: StageContext) -> dict:
        """What rebuilds the network (stored in its checkpoint): backbone name and stride, head sizes."""
        raise NotImplementedError

    def build_network(self, spec: dict, pretrained: str | None) -> nn.Module:
        """The network of ``spec``; ``training_step(images, labels)`` gives its loss terms."""
        raise NotImplementedError

    def walk_settings(self, cfg: PropagationParams, context: StageContext) -> tuple[dict, bool]:
        """(keyword arguments of :meth:`walk`, whether they depend on eval_cam's threshold)."""
        raise NotImplementedError

    def walk(self, network: nn.Module, image: np.ndarray, cams: np.ndarray, keys: np.ndarray,
             device: torch.device | str, **settings) -> tuple[np.ndarray, np.ndarray]:
        """(label map (H, W) uint8 with 0 / keys, scores (1 + K, H, W) float32, channel 0 background)."""
        raise NotImplementedError

    def describe_walk(self, cfg: PropagationParams) -> str:
        """One line on how the walk ran, for the evaluation protocol (e.g. "beta 16, 2^5 steps")."""
        return ""
