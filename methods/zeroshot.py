"""Zero-shot CLIP: each task's template (CoOp's per-dataset one, else "a photo of a {class}.") and nothing trained."""

from petl_bench.module import PetlModule
from petl_bench.registry import register_method

from .configs import ZeroShotConfig


@register_method("zeroshot", ZeroShotConfig)
class ZeroShot(PetlModule):
    """Zero-shot CLIP with the dataset's template ("a photo of a {class}." by default); nothing trains."""

    text_frozen = True
    image_frozen = True
    text_depends_on_task = False
