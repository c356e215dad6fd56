"""The frozen image tower's features as a run computes them, and the key that names them.

A module that declares `image_frozen` hands a `FrozenImageEncoder` to the data side
(`PetlModule.frozen_image_encoder`), which caches test image features under its `key`
(datamodules/multidomain.py). Kept apart from the method module so that the data side reads the
key without importing it.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext

import torch
from torch import nn


class FrozenImageEncoder:
    """The frozen backbone's image features as this run computes them (its device and precision),
    and a key naming everything they depend on besides the images: model, weights, activation, precision,
    device (and TF32), torch version. `module` is the run's PetlModule."""

    def __init__(self, module):
        self.module = module
        self.dim = module.backbone.embed_dim
        trainer = module._trainer
        self.precision = str(trainer.precision) if trainer is not None else "32-true"
        device = module.device
        where = (f"{torch.cuda.get_device_name(device)} tf32={torch.backends.cuda.matmul.allow_tf32}"
                 if device.type == "cuda" else device.type)
        self.key = hashlib.sha256("\0".join([
            module.backbone.name, weights_digest(module.backbone.model.visual),
            "quickgelu" if module.backbone.quick_gelu else "gelu", self.precision, where,
            torch.__version__]).encode()).hexdigest()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Features [batch, dim] of normalised images, on the CPU in the precision's dtype."""
        trainer = self.module._trainer
        context = trainer.precision_plugin.forward_context() if trainer is not None else nullcontext()
        with torch.inference_mode(), context:
            return self.module.backbone.encode_image(images.to(self.module.device)).cpu()


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, dtypes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
