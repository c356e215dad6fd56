"""The frozen image tower's features as a run computes them, and the key that names them.

A module that declares `image_frozen` makes a `FrozenImageEncoder` (`PetlModule.frozen_image_encoder`)
from what the runner knows of its Trainer: the device, the precision and the precision's forward
context. The runner hands it to the data module, which caches test image features under its `key`
(datamodules/testsets.py). Kept apart from the method module so that the data side reads the key
without importing it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import cached_property

import torch
from torch import nn


class FrozenImageEncoder:
    """The frozen backbone's image features as a run computes them (on `device`, in `precision`,
    each batch under `forward_context()`: Lightning's `precision_plugin.forward_context`), and a
    key naming everything they depend on besides the images: model, weights, activation,
    precision, device (and TF32), torch version."""

    def __init__(
        self,
        backbone,
        device: torch.device | str | None = None,
        precision: str = "32-true",
        forward_context: Callable[[], AbstractContextManager] = nullcontext,
    ):
        self.backbone, self.precision, self.forward_context = backbone, str(precision), forward_context
        self._device = None if device is None else torch.device(device)
        self.dim = backbone.embed_dim

    @property
    def device(self) -> torch.device:
        """The device given, else wherever the backbone is when asked (the Trainer moves it)."""
        return self._device if self._device is not None else next(self.backbone.parameters()).device

    @cached_property
    def key(self) -> str:
        """Computed when the test set first asks, from the weights as the run tests them."""
        device = self.device
        where = (
            f"{torch.cuda.get_device_name(device)} tf32={torch.backends.cuda.matmul.allow_tf32}"
            if device.type == "cuda"
            else device.type
        )
        return hashlib.sha256(
            "\0".join(
                [
                    self.backbone.name,
                    weights_digest(self.backbone.model.visual),
                    "quickgelu" if self.backbone.quick_gelu else "gelu",
                    self.precision,
                    where,
                    torch.__version__,
                ]
            ).encode()
        ).hexdigest()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Features [batch, dim] of normalised images, on the CPU in the precision's dtype."""
        with torch.inference_mode(), self.forward_context():
            return self.backbone.encode_image(images.to(self.device)).cpu()


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, dtypes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
