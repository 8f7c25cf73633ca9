"""Batched image augmentation with kornia: runs on whole batches, on the GPU when there is one.

Images arrive as uint8 (B, C, H, W); `to_unit` scales them to [0, 1], the augmentations work there, and
`normalize` applies the same mean/std as the image processor saved with every checkpoint.
"""

from __future__ import annotations

import torch
from kornia import augmentation as K
from torch import nn


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """0..255 integers (uint8 from Arrow, or int64 after a torch format) -> floats in [0, 1]."""
    if pixels.dtype.is_floating_point:
        return pixels.float()
    return pixels.float().div_(255.0)


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (images - mean) / std


def supervised_augment(size: int, crop_scale_min: float, hflip: bool, random_erasing: float) -> nn.Module | None:
    ops: list[nn.Module] = [K.RandomResizedCrop((size, size), scale=(crop_scale_min, 1.0))]
    if hflip:
        ops.append(K.RandomHorizontalFlip())
    if random_erasing > 0:
        ops.append(K.RandomErasing(p=random_erasing, scale=(0.02, 0.33)))
    return K.AugmentationSequential(*ops)


def simclr_augment(size: int, channels: int, crop_scale_min: float, hflip: bool, jitter: float) -> nn.Module:
    """The SimCLR view: random resized crop, flip, colour jitter (hue only on RGB), grayscale, blur."""
    hue = 0.1 * jitter if channels == 3 else 0.0
    ops: list[nn.Module] = [K.RandomResizedCrop((size, size), scale=(crop_scale_min, 1.0))]
    if hflip:
        ops.append(K.RandomHorizontalFlip())
    ops.append(K.ColorJitter(0.8 * jitter, 0.8 * jitter, 0.8 * jitter, hue, p=0.8))
    if channels == 3:
        ops.append(K.RandomGrayscale(p=0.2))
    kernel = max(3, (size // 10) | 1)
    ops.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=0.5))
    return K.AugmentationSequential(*ops)


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long()[:, None], 1.0 - smoothing + off)


class BatchMixer(nn.Module):
    """Soft targets with label smoothing, mixed by mixup (Beta(alpha, alpha) blend with a permuted batch) or by
    kornia's CutMix, switching between the two per batch like timm."""

    def __init__(self, num_classes: int, smoothing: float, mixup_alpha: float, cutmix_alpha: float,
                 prob: float = 1.0, switch_prob: float = 0.5):
        super().__init__()
        self.num_classes, self.smoothing = num_classes, smoothing
        self.mixup_alpha, self.cutmix_alpha, self.prob, self.switch_prob = mixup_alpha, cutmix_alpha, prob, switch_prob
        self.cutmix = (K.RandomCutMixV2(beta=cutmix_alpha, use_correct_lambda=True, data_keys=["input", "class"])
                       if cutmix_alpha > 0 else None)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = soft_targets(labels, self.num_classes, self.smoothing)
        if (self.mixup_alpha <= 0 and self.cutmix is None) or torch.rand(()) >= self.prob:
            return images, targets
        if self.cutmix is not None and (self.mixup_alpha <= 0 or torch.rand(()) < self.switch_prob):
            images, mixed = self.cutmix(images, labels.float())
            partner, lam = mixed[0, :, 1].long(), mixed[0, :, 2:3].to(targets.dtype)
            return images, lam * targets + (1 - lam) * soft_targets(partner, self.num_classes, self.smoothing)
        lam = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
        perm = torch.randperm(images.shape[0], device=images.device)
        return lam * images + (1 - lam) * images[perm], lam * targets + (1 - lam) * targets[perm]
