"""PPL: progressive patch learning (Li et al., "Weakly supervised semantic segmentation via progressive
patch learning", IEEE TMM 2022). The authors' code was never released; the choices below are ours.

Patch learning: the last feature map is split into a k x k grid of patches (an exact partition; patch
sizes differ by at most one cell when k does not divide the grid). Each patch is average-pooled and
classified on its own by the shared 1x1 classifier, giving patch logits (B, C, k, k).

Aggregation of patch logits into the image logit, per class (``aggregation``):

- ``"lse"`` (default): ``(1/r) log mean_p exp(r s_p)``, a smooth maximum (log-sum-exp pooling). Its
  gradient reaches every patch with softmax weights, so every local part is trained, and it keeps the
  multi-instance meaning of a patch classifier: a class is present if some patch shows it, and absent
  only if no patch does, so a false activation anywhere is penalised (global averaging tolerates it).
  It tends to the mean as r -> 0 and the max as r -> inf; at k = 1 it is plain CAM.
- ``"max"``: the hard maximum; only the best patch receives gradient (not recommended).
- ``"mean"``: the mean of patch logits. With a linear classifier and average pooling this equals global
  average pooling, i.e. plain CAM at every k; kept only as an ablation.

Progressive schedule: ``granularities`` (e.g. [1, 2, 4]) are spread evenly over the training epochs by
``set_progress``; each stage continues from the previous stage's weights (multi-stage optimisation).
``aux_stage`` (e.g. -2) applies the same patch learning at a second, earlier feature level through an
auxiliary classifier (loss weight ``aux_weight``); it shapes the backbone and does not enter ``cam()``.

Explicit fusion (``fusion=True``): all granularities at once in one model. Each granularity g has a
branch (1x1 conv-BN-ReLU to ``fusion_dim`` channels) with its own classifier trained by patch learning
at g; the branch features are concatenated and classified by a fused classifier trained on the global
average (its CAM is what ``cam()`` returns). Loss = mean of the branch losses + the fused loss.

``cam()`` is the classifier on the whole (unsplit) feature map.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError
from pipeline.methods.base import CamMethod
from pipeline.models.backbones.base import Backbone

AGGREGATIONS = ("lse", "max", "mean")


def patch_index(size: int, k: int, device: torch.device | None = None) -> torch.Tensor:
    """Patch row (or column) of each of ``size`` cells for an exact partition into ``k`` near-equal parts."""
    return torch.arange(size, device=device) * k // size


def patch_pool(features: torch.Tensor, k: int) -> torch.Tensor:
    """Average ``features`` (B, D, h, w) over each cell of a k x k patch grid: (B, D, k, k)."""
    b, d, h, w = features.shape
    if k < 1 or k > min(h, w):
        raise ConfigError(f"ppl.granularities: granularity {k} does not fit a {h}x{w} feature map")
    rows = patch_index(h, k, features.device)
    cols = patch_index(w, k, features.device)
    patch_of_cell = (rows[:, None] * k + cols[None, :]).flatten()  # (h*w,)
    assign = F.one_hot(patch_of_cell, k * k).to(features.dtype)  # (h*w, k*k)
    assign = assign / assign.sum(dim=0, keepdim=True)
    return (features.flatten(2) @ assign).view(b, d, k, k)


def aggregate_patch_logits(
    patch_logits: torch.Tensor, aggregation: str = "lse", lse_r: float = 1.0
) -> torch.Tensor:
    """Image logits (B, C) from patch logits (B, C, k, k); see the module docstring."""
    scores = patch_logits.flatten(2)
    if aggregation == "lse":
        count = torch.log(torch.tensor(float(scores.shape[-1]), dtype=scores.dtype, device=scores.device))
        return (torch.logsumexp(lse_r * scores, dim=-1) - count) / lse_r
    if aggregation == "max":
        return scores.amax(dim=-1)
    if aggregation == "mean":
        return scores.mean(dim=-1)
    raise ConfigError(f"ppl.aggregation: unknown {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")


def _branch(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
    )


class PPL(CamMethod):
    name = "ppl"

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        granularities: Sequence[int] = (1, 2, 4),
        aggregation: str = "lse",
        lse_r: float = 1.0,
        aux_stage: int | None = None,
        aux_weight: float = 1.0,
        fusion: bool = False,
        fusion_dim: int = 256,
    ):
        super().__init__(backbone, num_classes)
        granularities = [int(g) for g in granularities]
        if not granularities or min(granularities) < 1:
            raise ConfigError(f"ppl.granularities: need positive integers, got {granularities}")
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"ppl.aggregation: unknown {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")
        if not lse_r > 0:
            raise ConfigError(f"ppl.lse_r: must be positive, got {lse_r}")
        num_stages = len(backbone.stage_channels)
        earlier = -num_stages <= (aux_stage or 0) < num_stages and (aux_stage or 0) % num_stages != num_stages - 1
        if aux_stage is not None and not earlier:
            raise ConfigError(
                f"ppl.aux_stage: must index an earlier backbone stage (-{num_stages}..-2), got {aux_stage}"
            )
        if fusion and fusion_dim < 1:
            raise ConfigError(f"ppl.fusion_dim: must be positive, got {fusion_dim}")
        self.granularities = granularities
        self.aggregation, self.lse_r = aggregation, float(lse_r)
        self.aux_stage, self.aux_weight = aux_stage, aux_weight
        self.fusion = fusion
        self.current = granularities[0]
        channels = backbone.out_channels
        if fusion:
            self.branches = nn.ModuleList(_branch(channels, fusion_dim) for _ in granularities)
            self.branch_classifiers = nn.ModuleList(
                nn.Conv2d(fusion_dim, num_classes, 1, bias=False) for _ in granularities
            )
            self.classifier = nn.Conv2d(fusion_dim * len(granularities), num_classes, 1, bias=False)
        else:
            self.classifier = nn.Conv2d(channels, num_classes, 1, bias=False)
        if aux_stage is not None:
            self.aux_classifier = nn.Conv2d(backbone.stage_channels[aux_stage], num_classes, 1, bias=False)

    def set_progress(self, epoch: int, num_epochs: int) -> None:
        """Stage s of S covers epochs [s E / S, (s + 1) E / S)."""
        if num_epochs < 1:
            raise ConfigError(f"num_epochs: must be positive, got {num_epochs}")
        stage = min(len(self.granularities) - 1, max(0, epoch) * len(self.granularities) // num_epochs)
        self.current = self.granularities[stage]

    def patch_logits(self, features: torch.Tensor, classifier: nn.Module, k: int) -> torch.Tensor:
        """Each of the k x k patches pooled and classified independently: (B, C, k, k)."""
        return classifier(patch_pool(features, k))

    def _patch_loss(
        self, features: torch.Tensor, classifier: nn.Module, k: int, labels: torch.Tensor
    ) -> torch.Tensor:
        logits = aggregate_patch_logits(self.patch_logits(features, classifier, k), self.aggregation, self.lse_r)
        return F.multilabel_soft_margin_loss(logits, labels)

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        terms: dict[str, torch.Tensor] = {}
        if self.fusion:
            branch_features = [branch(features[-1]) for branch in self.branches]
            branch_losses = [
                self._patch_loss(f, clf, k, labels)
                for f, clf, k in zip(branch_features, self.branch_classifiers, self.granularities)
            ]
            terms["patch"] = torch.stack(branch_losses).mean()
            fused_logits = self.classifier(torch.cat(branch_features, dim=1)).mean(dim=(2, 3))
            terms["fused"] = F.multilabel_soft_margin_loss(fused_logits, labels)
            k_aux = self.granularities[-1]
        else:
            terms["patch"] = self._patch_loss(features[-1], self.classifier, self.current, labels)
            k_aux = self.current
        if self.aux_stage is not None:
            aux = self._patch_loss(features[self.aux_stage], self.aux_classifier, k_aux, labels)
            terms["aux"] = self.aux_weight * aux
        loss = sum(terms.values())
        logged = {name: value.detach() for name, value in terms.items()}
        if not self.fusion:
            logged["granularity"] = torch.tensor(float(self.current))
        return {"loss": loss, **logged}

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)[-1]
        if self.fusion:
            features = torch.cat([branch(features) for branch in self.branches], dim=1)
        return self.classifier(features)
