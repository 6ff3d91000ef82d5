"""PPL: progressive patch learning (Li et al., "Weakly supervised semantic segmentation via progressive
patch learning", IEEE TMM 2022). The authors' code was never released and the paper text we hold is the
abstract; every choice the abstract leaves open is listed here as ours.

Patch learning (the abstract: "destructs the feature maps into patches and independently processes each
local patch in parallel before the final aggregation"): the backbone runs up to an intermediate stage
(``split_stages``, default -3, the input of the last two stages); that feature map is cut into a k x k grid
of patches which are folded into the batch, (B*k*k, D, h/k, w/k), and the remaining backbone stages run on
each patch as on an image of its own. Zero padding at the patch borders gives every patch its own receptive
field: nothing outside a patch reaches its output. Each patch is average-pooled and classified by the
shared 1x1 classifier (patch logits (B, C, k, k)); the patch logits are aggregated into the image logit.

Our choices where the abstract is silent:

- Where to split: ``split_stages`` lists backbone stages (negative from the end, any but the last). One
  stage is patch learning; several are the "multi-level" variant: the same granularity at each listed
  level, each run through the remaining stages and the shared classifier, the loss is their mean.
- k not dividing the map: the map is zero-padded at the bottom/right to a multiple of k (the padded cells
  look like the image border to the convolutions); each patch's pooling averages only the output cells
  that see a real cell (the padding mask, max-pooled to the output size), and every patch counts once in
  the aggregation. ``k`` larger than the map is a ConfigError.
- Dilated late stages (output stride 16/8): their dilations are kept. On a patch smaller than the dilation
  a dilated 3x3 convolution reads only zero padding off its centre, i.e. it acts as a 1x1 convolution;
  this is the receptive field confined to the patch, which is the point of the method, not an error.
- Batch statistics: in training mode BatchNorm normalises over all patches of the batch, as it would over
  the images of any batch; outputs are independent per patch in evaluation mode.
- Aggregation (``aggregation``): ``"mean"`` (default) is reassembling the processed patches and classifying
  the whole by global average pooling, our reading of "the final aggregation" (with a linear classifier
  the GAP logit is the mean of the patch logits). ``"lse"``: ``(1/r) log mean_p exp(r s_p)``, a smooth
  maximum (a class is present if some patch shows it); ``"max"``: the hard maximum (only the best patch
  receives gradient).
- Progressive schedule: ``granularities`` (e.g. [1, 2, 4]) split the training epochs into equal stages
  (:func:`stage_epochs`); each stage continues from the previous weights. The paper gives each stage its
  own optimisation schedule: with ``restart_schedule`` (default) the trainer restarts its poly lr decay at
  every stage (:meth:`PPL.stage_span`); without it one poly schedule spans all epochs.
- ``cam()`` is the unsplit forward of the whole image (the paper's inference on the whole image).

Explicit fusion (``fusion=True``, one split stage only): all granularities at once in one model. For each
granularity g the remaining stages run on g x g patches; a branch (1x1 conv-BN-ReLU to ``fusion_dim``
channels, per cell so it keeps the patches independent) with its own classifier is trained by patch
learning at g. The branch maps are stitched back into whole maps (padding cropped, resized bilinearly to
the first granularity's size where the patch strides round differently), concatenated and classified by the
fused classifier on their global average; its CAM is what ``cam()`` returns, with every branch applied to
the unsplit features. Loss = mean of the branch losses + the fused loss.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.cam.methods.base import CamMethod
from pipeline.errors import ArgumentError
from pipeline.models.backbones.base import Backbone

AGGREGATIONS = ("lse", "max", "mean")


def stage_epochs(num_stages: int, num_epochs: int) -> list[range]:
    """Epochs of each of ``num_stages`` progressive stages: stage s covers [s E / S, (s + 1) E / S).

    With fewer epochs than stages some stages get no epoch (an empty range)."""
    if num_epochs < 1:
        raise ArgumentError("num_epochs", f"must be positive, got {num_epochs}")
    bounds = [-(-s * num_epochs // num_stages) for s in range(num_stages + 1)]
    return [range(bounds[s], bounds[s + 1]) for s in range(num_stages)]


def pad_for_patches(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (B, D, h, w) at the bottom/right to multiples of ``k``; also the validity mask (1, 1, H, W),
    on the CPU: it depends on the shape alone, and its sums then need no sync with a GPU."""
    h, w = features.shape[-2:]
    if k < 1 or k > min(h, w):
        raise ArgumentError("granularities", f"granularity {k} does not fit a {h}x{w} feature map")
    pad_h, pad_w = -h % k, -w % k
    mask = torch.ones(1, 1, h, w)
    if pad_h or pad_w:
        features = F.pad(features, (0, pad_w, 0, pad_h))
        mask = F.pad(mask, (0, pad_w, 0, pad_h))
    return features, mask


def split_patches(features: torch.Tensor, k: int) -> torch.Tensor:
    """(B, D, h, w), h and w multiples of k -> (B*k*k, D, h/k, w/k); patch (i, j) of image b at b*k*k + i*k + j."""
    b, d, h, w = features.shape
    if h % k or w % k:
        raise ValueError(f"split_patches: a {h}x{w} map does not split into {k}x{k} equal patches; pad it first")
    patches = features.view(b, d, k, h // k, k, w // k).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b * k * k, d, h // k, w // k)


def merge_patches(patches: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of :func:`split_patches`: (B*k*k, D, p, q) -> (B, D, k*p, k*q)."""
    n, d, p, q = patches.shape
    merged = patches.view(n // (k * k), k, k, d, p, q).permute(0, 3, 1, 4, 2, 5)
    return merged.reshape(n // (k * k), d, k * p, k * q)


def aggregate_patch_logits(
    patch_logits: torch.Tensor, aggregation: str = "mean", lse_r: float = 1.0
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
    raise ArgumentError("aggregation", f"unknown {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")


class PatchOutput:
    """The remaining stages' output on k x k patches: ``features`` (B*k*k, D, p, q) and the mask of output
    cells that see a real (unpadded) cell, ``valid`` (k*k, 1, p, q) shared by all images."""

    def __init__(self, features: torch.Tensor, valid: torch.Tensor, k: int):
        self.features, self.valid, self.k = features, valid, k

    def pooled(self, features: torch.Tensor | None = None) -> torch.Tensor:
        """Per-patch average over the valid cells: (B*k*k, D, 1, 1)."""
        x = self.features if features is None else features
        n = x.shape[0] // self.valid.shape[0]
        valid = self.valid.repeat(n, 1, 1, 1).to(x.device, x.dtype)
        return (x * valid).sum(dim=(2, 3), keepdim=True) / valid.sum(dim=(2, 3), keepdim=True)

    def stitched(self, features: torch.Tensor) -> torch.Tensor:
        """Per-patch maps (B*k*k, D, p, q) reassembled into whole maps, the padded border cropped."""
        merged = merge_patches(features, self.k)
        valid = merge_patches(self.valid.float(), self.k)[0, 0]
        return merged[..., : int(valid.amax(dim=1).sum()), : int(valid.amax(dim=0).sum())]


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
        split_stages: Sequence[int] = (-3,),
        aggregation: str = "mean",
        lse_r: float = 1.0,
        fusion: bool = False,
        fusion_dim: int = 256,
        restart_schedule: bool = True,
    ):
        super().__init__(backbone, num_classes)
        granularities = [int(g) for g in granularities]
        if not granularities or min(granularities) < 1:
            raise ArgumentError("granularities", f"need positive integers, got {granularities}")
        num_stages = len(backbone.stage_channels)
        split_stages = [int(s) for s in split_stages]
        if not split_stages or any(not -num_stages <= s < num_stages or s % num_stages == num_stages - 1
                                   for s in split_stages):
            raise ArgumentError("split_stages",
                                f"need backbone stages before the last (-{num_stages}..-2), got {split_stages}")
        if aggregation not in AGGREGATIONS:
            raise ArgumentError("aggregation", f"unknown {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")
        if not lse_r > 0:
            raise ArgumentError("lse_r", f"must be positive, got {lse_r}")
        if fusion and fusion_dim < 1:
            raise ArgumentError("fusion_dim", f"must be positive, got {fusion_dim}")
        if fusion and len(split_stages) != 1:
            raise ArgumentError("split_stages", f"fusion takes one split stage, got {split_stages}")
        self.granularities = granularities
        self.split_stages = sorted({s % num_stages for s in split_stages})
        self.aggregation, self.lse_r = aggregation, float(lse_r)
        self.fusion = fusion
        self.restart_schedule = restart_schedule
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

    def stage_span(self, epoch: int, num_epochs: int) -> range:
        """The epochs of the progressive stage that ``epoch`` belongs to: the trainer restarts its poly lr
        schedule over them (``restart_schedule``; otherwise one schedule spans all epochs)."""
        if not self.restart_schedule or self.fusion:  # fusion trains every granularity at once
            return range(num_epochs)
        spans = stage_epochs(len(self.granularities), num_epochs)
        return next((span for span in spans if epoch in span), spans[-1])

    def set_progress(self, epoch: int, num_epochs: int) -> None:
        spans = stage_epochs(len(self.granularities), num_epochs)
        stage = next((s for s, span in enumerate(spans) if epoch in span), len(spans) - 1)
        self.current = self.granularities[stage]

    def run_patches(self, state: torch.Tensor, k: int, level: int) -> PatchOutput:
        """The backbone stages after ``level`` run on each of the k x k patches of ``state`` on its own."""
        padded, mask = pad_for_patches(state, k)
        features = self.backbone.forward_from(split_patches(padded, k), level)[-1]
        valid = F.adaptive_max_pool2d(split_patches(mask, k), features.shape[-2:]) > 0
        return PatchOutput(features, valid, k)

    def patch_logits(
        self, patches: PatchOutput, classifier: nn.Module, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Each patch pooled and classified on its own: (B, C, k, k)."""
        logits = classifier(patches.pooled(features)).flatten(1)  # (B*k*k, C)
        k = patches.k
        return logits.view(-1, k, k, logits.shape[1]).permute(0, 3, 1, 2)

    def _loss(self, patch_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = aggregate_patch_logits(patch_logits, self.aggregation, self.lse_r)
        return F.multilabel_soft_margin_loss(logits, labels)

    def training_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        first = self.split_stages[0]
        # one pass per split stage (the shallow stages run again for each extra level)
        states = {s: self.backbone.forward_until(images, s)[1] for s in self.split_stages}
        terms: dict[str, torch.Tensor] = {}
        if self.fusion:
            outputs = [self.run_patches(states[first], g, first) for g in self.granularities]
            branch_maps = [branch(out.features) for branch, out in zip(self.branches, outputs)]
            branch_losses = [
                self._loss(self.patch_logits(out, clf, maps), labels)
                for out, clf, maps in zip(outputs, self.branch_classifiers, branch_maps)
            ]
            terms["patch"] = torch.stack(branch_losses).mean()
            stitched = [out.stitched(maps) for out, maps in zip(outputs, branch_maps)]
            size = stitched[0].shape[-2:]
            stitched = [m if m.shape[-2:] == size else F.interpolate(m, size, mode="bilinear", align_corners=False)
                        for m in stitched]
            fused_logits = self.classifier(torch.cat(stitched, dim=1)).mean(dim=(2, 3))
            terms["fused"] = F.multilabel_soft_margin_loss(fused_logits, labels)
        else:
            losses = [
                self._loss(self.patch_logits(self.run_patches(states[s], self.current, s), self.classifier), labels)
                for s in self.split_stages
            ]
            terms["patch"] = torch.stack(losses).mean()
        loss = sum(terms.values())
        logged = {name: value.detach() for name, value in terms.items()}
        if not self.fusion:
            logged["granularity"] = torch.tensor(float(self.current), device=loss.device)
        return {"loss": loss, **logged}

    def classifier_features(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)[-1]
        if self.fusion:
            features = torch.cat([branch(features) for branch in self.branches], dim=1)
        return features

    def cam(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.classifier_features(images))
