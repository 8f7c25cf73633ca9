"""Batched image augmentation as a handful of tensor ops per batch, on the GPU when there is one.

Images arrive as uint8 (B, C, H, W) at any resolution (a data set's native one included); `to_unit` scales them to
[0, 1], the augmentations work there, and `normalize` applies the same mean/std as the image processor saved with
every checkpoint. Every random choice is drawn for the whole batch at once on the images' device: no per-sample
Python, no host synchronisation, and the same seed gives the same batch. The random resized crop (with its flip)
is one `grid_sample` that also resizes to the model's size, so data can stay at its native resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """0..255 integers (uint8 from Arrow, or int64 after a torch format) -> floats in [0, 1]."""
    if pixels.dtype.is_floating_point:
        return pixels.float()
    return pixels.float().div_(255.0)


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (images - mean) / std


def fit_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grayscale stored once -> the model's channels (a view, no copy); RGB -> gray by the mean."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, channels, -1, -1)
    return images.mean(1, keepdim=True).expand(-1, channels, -1, -1)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Evaluation: the whole image at the model's size."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _uniform(low, high, shape, device) -> torch.Tensor:
    return torch.rand(shape, device=device) * (high - low) + low


class RandomResizedCropFlip(nn.Module):
    """Random resized crop (area in `scale`, aspect ratio in `ratio`, log-uniform) with an optional horizontal
    flip, resampled bilinearly to `size` in one `grid_sample` for the whole batch."""

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = False):
        super().__init__()
        self.size, self.scale, self.log_ratio, self.hflip = size, scale, (math.log(ratio[0]), math.log(ratio[1])), hflip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, device = images.shape[0], images.device
        area = _uniform(*self.scale, (b,), device)
        aspect = torch.exp(_uniform(*self.log_ratio, (b,), device))
        width = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the source side
        height = torch.sqrt(area / aspect).clamp(max=1.0)
        center_x = (torch.rand(b, device=device) * (1 - width) + width / 2) * 2 - 1  # in [-1, 1] coordinates
        center_y = (torch.rand(b, device=device) * (1 - height) + height / 2) * 2 - 1
        sign = torch.ones(b, device=device)
        if self.hflip:
            sign = torch.where(torch.rand(b, device=device) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=device)
        theta[:, 0, 0], theta[:, 0, 2] = width * sign, center_x
        theta[:, 1, 1], theta[:, 1, 2] = height, center_y
        grid = F.affine_grid(theta, [b, images.shape[1], self.size, self.size], align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _boxes(b: int, height: int, width: int, box_h: torch.Tensor, box_w: torch.Tensor, device) -> torch.Tensor:
    """(B, 1, H, W) masks of boxes of the given sizes (in pixels) at uniform positions inside the image."""
    top = torch.rand(b, device=device) * (height - box_h)
    left = torch.rand(b, device=device) * (width - box_w)
    ys = torch.arange(height, device=device, dtype=torch.float32)[None, :, None]
    xs = torch.arange(width, device=device, dtype=torch.float32)[None, None, :]
    top, left = top.floor()[:, None, None], left.floor()[:, None, None]
    inside = (ys >= top) & (ys < top + box_h.round()[:, None, None]) & (xs >= left) & (xs < left + box_w.round()[
        :, None, None])
    return inside[:, None]


class RandomErasing(nn.Module):
    """Erase (to 0) one box per image with probability `p`: area in `scale` of the image, aspect in `ratio`."""

    def __init__(self, p: float, scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3)):
        super().__init__()
        self.p, self.scale, self.log_ratio = p, scale, (math.log(ratio[0]), math.log(ratio[1]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        device = images.device
        area = _uniform(*self.scale, (b,), device) * (h * w)
        aspect = torch.exp(_uniform(*self.log_ratio, (b,), device))
        box_h = torch.sqrt(area * aspect).clamp(1, h)
        box_w = torch.sqrt(area / aspect).clamp(1, w)
        erase = _boxes(b, h, w, box_h, box_w, device) & (torch.rand(b, device=device) < self.p)[:, None, None, None]
        return images.masked_fill(erase, 0.0)


def supervised_augment(size: int, crop_scale_min: float, hflip: bool, random_erasing: float) -> nn.Module:
    ops: list[nn.Module] = [RandomResizedCropFlip(size, (crop_scale_min, 1.0), hflip=hflip)]
    if random_erasing > 0:
        ops.append(RandomErasing(random_erasing))
    return nn.Sequential(*ops)


def _gray(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = images.new_tensor([0.299, 0.587, 0.114])[None, :, None, None]
    return (images * weights).sum(1, keepdim=True)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values[:, None, None, None]


class ColorJitter(nn.Module):
    """Brightness, contrast and saturation factors in [1 - s, 1 + s] and a hue rotation in [-hue, hue] turns, drawn
    per image and applied (in that order) to the images drawn with probability `p`."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, p: float = 1.0):
        super().__init__()
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, device = images.shape[0], images.device
        out = images
        if self.brightness > 0:
            out = (out * _per_sample(_uniform(1 - self.brightness, 1 + self.brightness, (b,), device))).clamp(0, 1)
        if self.contrast > 0:
            mean = _gray(out).mean((1, 2, 3), keepdim=True)
            factor = _per_sample(_uniform(1 - self.contrast, 1 + self.contrast, (b,), device))
            out = ((out - mean) * factor + mean).clamp(0, 1)
        if images.shape[1] == 3 and self.saturation > 0:
            gray = _gray(out)
            factor = _per_sample(_uniform(1 - self.saturation, 1 + self.saturation, (b,), device))
            out = ((out - gray) * factor + gray).clamp(0, 1)
        if images.shape[1] == 3 and self.hue > 0:
            out = _rotate_hue(out, _uniform(-self.hue, self.hue, (b,), device) * 2 * math.pi).clamp(0, 1)
        apply = _per_sample(torch.rand(b, device=device) < self.p)
        return torch.where(apply, out, images)


_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _rotate_hue(images: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Hue rotation by `angle` radians per image, as a rotation of the chroma plane in YIQ space."""
    to_yiq = _TO_YIQ.to(images.device)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(angle.shape[0], 3, 3, device=images.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrix, images)


class RandomGrayscale(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        apply = _per_sample(torch.rand(images.shape[0], device=images.device) < self.p)
        return torch.where(apply, _gray(images).expand_as(images), images)


class RandomGaussianBlur(nn.Module):
    """Separable Gaussian blur with a per-image sigma in `sigma`, applied with probability `p` (reflect padding)."""

    def __init__(self, kernel: int, sigma: tuple[float, float], p: float):
        super().__init__()
        self.kernel, self.sigma, self.p = kernel, sigma, p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, c, h, w = images.shape
        device, radius = images.device, self.kernel // 2
        sigma = _uniform(*self.sigma, (b,), device)
        offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
        weights = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
        weights = (weights / weights.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, k)
        flat = images.reshape(1, b * c, h, w)
        flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), weights[:, None, None, :], groups=b * c)
        flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), weights[:, None, :, None], groups=b * c)
        apply = _per_sample(torch.rand(b, device=device) < self.p)
        return torch.where(apply, flat.reshape(b, c, h, w), images)


def simclr_augment(size: int, channels: int, crop_scale_min: float, hflip: bool, jitter: float) -> nn.Module:
    """The SimCLR view: random resized crop, flip, colour jitter (hue only on RGB), grayscale, blur."""
    hue = 0.1 * jitter if channels == 3 else 0.0
    ops: list[nn.Module] = [RandomResizedCropFlip(size, (crop_scale_min, 1.0), hflip=hflip),
                            ColorJitter(0.8 * jitter, 0.8 * jitter, 0.8 * jitter, hue, p=0.8)]
    if channels == 3:
        ops.append(RandomGrayscale(p=0.2))
    kernel = max(3, (size // 10) | 1)
    ops.append(RandomGaussianBlur(kernel, (0.1, 2.0), p=0.5))
    return nn.Sequential(*ops)


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long()[:, None], 1.0 - smoothing + off)


class BatchMixer(nn.Module):
    """Soft targets with label smoothing, mixed by mixup (Beta(alpha, alpha) blend with a permuted batch) or by
    cutmix (a box from the permuted batch, the weight corrected to the box's area per image), switching between the
    two per batch like timm. The per-batch choices use the host generator; every tensor draw stays on the device."""

    def __init__(self, num_classes: int, smoothing: float, mixup_alpha: float, cutmix_alpha: float,
                 prob: float = 1.0, switch_prob: float = 0.5):
        super().__init__()
        self.num_classes, self.smoothing = num_classes, smoothing
        self.mixup_alpha, self.cutmix_alpha, self.prob, self.switch_prob = mixup_alpha, cutmix_alpha, prob, switch_prob

    def _beta(self, alpha: float, shape: tuple[int, ...], device) -> torch.Tensor:
        concentration = torch.tensor(alpha, device=device)
        return torch.distributions.Beta(concentration, concentration).sample(shape)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = soft_targets(labels, self.num_classes, self.smoothing)
        if (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0) or torch.rand(()) >= self.prob:
            return images, targets
        b, _, h, w = images.shape
        device = images.device
        perm = torch.randperm(b, device=device)
        if self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or torch.rand(()) < self.switch_prob):
            cut = torch.sqrt(1 - self._beta(self.cutmix_alpha, (b,), device))  # box side / image side
            box = _boxes(b, h, w, cut * h, cut * w, device)
            lam = 1 - box.float().mean((1, 2, 3))  # the share of the image that stays, per image
            return torch.where(box, images[perm], images), lam[:, None] * targets + (1 - lam[:, None]) * targets[perm]
        lam = self._beta(self.mixup_alpha, (), device)
        return lam * images + (1 - lam) * images[perm], lam * targets + (1 - lam) * targets[perm]
