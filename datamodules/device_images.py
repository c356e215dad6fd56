"""Training images on the GPU: the loaders read bytes, the device decodes and augments them.

`read_encoded` hands a JPEG's bytes to the device (other formats decoded by PIL here),
`decode_on` decodes a batch there (nvJPEG on a GPU), and `RandomResizedCropFlip` does the training
crop and flip on the decoded tensors, drawing from the same RNG calls as the CPU transform
(`multidomain.train_transform`).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

from .images import to_rgb

JPEG_MAGIC = b"\xff\xd8\xff"


def read_encoded(path: str | Path) -> torch.Tensor:
    """A JPEG's bytes as a 1-D uint8 tensor, to decode on the GPU; any other image decoded here,
    as a [3, H, W] uint8 tensor. Raises what reading or PIL raises."""
    data = Path(path).read_bytes()
    if data[:3] == JPEG_MAGIC:
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return pil_to_tensor(to_rgb(image))


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def decode_on(payloads: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """[3, H, W] uint8 RGB images on `device` from `read_encoded` payloads: JPEG bytes decoded on
    the device in one batch (nvJPEG on a GPU), others moved there. An image that fails to decode
    there is decoded by PIL; None where that fails too."""
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [i for i, p in enumerate(payloads) if p.dim() == 1]
    images: list[torch.Tensor | None] = [p.to(device) if p.dim() == 3 else None for p in payloads]
    try:
        decoded = decode_jpeg([payloads[i] for i in encoded], mode=ImageReadMode.RGB, device=device)
    except RuntimeError:  # one bad or unusual JPEG (CMYK, a cut body) fails the batch: one by one
        decoded = [_decode_one(payloads[i], device) for i in encoded]
    for i, image in zip(encoded, decoded, strict=True):
        images[i] = image
    return images


def _decode_one(payload: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(payload, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        pass
    try:
        with Image.open(io.BytesIO(payload.numpy().tobytes())) as image:
            image.load()
            return pil_to_tensor(to_rgb(image)).to(device)
    except Exception:  # undecodable: the caller skips it
        return None


class RandomResizedCropFlip:
    """`train_transform` on decoded uint8 tensors [3, H, W] on any device: the same random resized
    crop (torchvision's parameters, drawn by the same calls on the global torch RNG) and horizontal
    flip, bicubic antialiased resizing, then scaling to [0, 1] and normalising. Given the same RNG
    state it picks the crops and flips the CPU transform picks; pixels agree within the resampling
    difference between PIL and torch (tests/test_images.py states the tolerance)."""

    def __init__(
        self, size: int, scale: tuple[float, float], mean, std, ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    ):
        self.size, self.scale, self.ratio = size, scale, ratio
        self.mean, self.std = tuple(mean), tuple(std)

    def crop_flip(self, image: torch.Tensor) -> torch.Tensor:
        """One image's crop, resized to size x size, flipped with probability 1/2 (uint8)."""
        top, left, height, width = T.RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        out = F.resize(
            image[:, top : top + height, left : left + width],
            [self.size, self.size],
            interpolation=T.InterpolationMode.BICUBIC,
            antialias=True,
        )
        if torch.rand(1) < 0.5:  # RandomHorizontalFlip's draw
            out = out.flip(-1)
        return out

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        batch = torch.stack([self.crop_flip(image) for image in images]).float().div(255)
        mean = torch.tensor(self.mean, device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, -1, 1, 1)
        return batch.sub(mean).div(std)
