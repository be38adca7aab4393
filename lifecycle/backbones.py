"""Backbones for fine-tuning and transfer learning: a pretrained model (``models/pretrain/<arch>``,
see :mod:`lifecycle.pretraining`) with its head replaced.

``finetune`` trains every layer (backbone and new head, each at its own learning
rate); ``transfer`` freezes everything but a new last layer, so the frozen features are
computed once (:func:`frozen_features`) and the head trains on them in seconds.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lifecycle.models import (
    ModelSpec,
    head_layer,
    image_preparer,
    load_model,
    predict_logits,
    replace_head,
    set_head,
)


def load_backbone(folder: Path, num_classes: int) -> nn.Module:
    """The pretrained model in ``folder`` with a fresh ``num_classes`` head (seed torch first)."""
    model, _ = load_model(folder)
    return replace_head(model.train(), num_classes)


def finetune_groups(model: nn.Module, lr_backbone: float, lr_head: float) -> list[dict]:
    """Adam parameter groups: the new head at ``lr_head``, every other layer at ``lr_backbone``."""
    head_ids = {id(p) for p in head_layer(model).parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    head = [p for p in model.parameters() if id(p) in head_ids]
    return [{"params": backbone, "lr": lr_backbone}, {"params": head, "lr": lr_head}]


def feature_extractor(model: nn.Module) -> nn.Module:
    """``model`` without its last layer, frozen, in eval mode: images in, penultimate features out."""
    body = set_head(model, nn.Identity())
    for parameter in body.parameters():
        parameter.requires_grad_(False)
    return body.eval()


def frozen_features(body: nn.Module, images: np.ndarray | torch.Tensor, spec: ModelSpec,
                    device: torch.device | str = "cpu", desc: str | None = None) -> torch.Tensor:
    """Penultimate features (N, D) of uint8 images (N, S, S, 3) or (N, 3, S, S): computed once, then cached.

    No random draw is involved (``body`` is in eval mode), so no seed is needed. Each batch
    goes in channels first and contiguous: a channels-last batch would run other convolution
    kernels, whose features differ in the last bits.
    """
    normalise = image_preparer(spec.mean, spec.std)
    return predict_logits(body, torch.as_tensor(images), lambda batch: normalise(batch).contiguous(),
                          batch_size=64, device=device, desc=desc)


@dataclasses.dataclass(frozen=True)
class FeatureScaling:
    """Standardise frozen features for training the head, then fold it into the head.

    Raw penultimate features have wildly different scales, which makes the head's
    training jumpy; the head trains on ``(x - mean) / std`` and :meth:`fold` rewrites
    it to take raw features (``W / std``, ``b - W @ (mean / std)``), so the saved model
    is still the backbone with one plain linear last layer.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def of(cls, features: torch.Tensor) -> "FeatureScaling":
        return cls(features.mean(0), features.std(0).clamp_min(1e-6))

    def apply(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std

    def fold(self, head: nn.Linear) -> nn.Linear:
        folded = nn.Linear(head.in_features, head.out_features)
        with torch.no_grad():
            weight = head.weight.detach().cpu().double()
            folded.weight.copy_(weight / self.std.double())
            folded.bias.copy_(head.bias.detach().cpu().double() - weight @ (self.mean.double() / self.std.double()))
        return folded


def attach_head(model: nn.Module, head: nn.Linear) -> nn.Module:
    """The full classifier: ``model`` (the pretrained backbone, any head) with ``head`` as its last layer."""
    return set_head(model, head)
