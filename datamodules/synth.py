"""A small, learnable, synthetic multi-domain image set in the real dataset layouts.

Class i is a shape (one of 12) in a colour (one of 11), injective for up to 132 classes; each
domain draws it in its own style (background, outline or fill, colour shift, noise). Separate
`pretrain_style`s, none of them a benchmark domain's, is what `petl-bench data tiny-clip` learns from, so
that zero-shot transfer to the benchmark domains is imperfect and tuning has room.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .datasets import SPECS
from .records import MINIDOMAINNET_DOMAINS, OFFICEHOME_DOMAINS, SYNTHETIC_MARKER, canonical_classes

SHAPES = ["circle", "square", "triangle", "cross", "ring", "hbar", "vbar", "diamond", "star", "dots", "frame", "wedge"]
COLOURS = [
    (220, 40, 40),
    (40, 180, 60),
    (50, 80, 220),
    (230, 200, 40),
    (200, 60, 200),
    (40, 200, 210),
    (240, 140, 30),
    (130, 70, 30),
    (120, 120, 120),
    (250, 250, 250),
    (20, 20, 20),
]
SIZE = 48  # pixels; the model's transform resizes, as it does real photos
FOLDER_CLASSES = [
    "anchor",
    "bicycle",
    "candle",
    "dolphin",
    "easel",
    "falcon",
    "guitar",
    "hammer",
    "igloo",
    "jacket",
    "kettle",
    "ladder",
    "magnet",
    "needle",
    "orange",
    "parrot",
]


@dataclass(frozen=True)
class Style:
    background: tuple[int, int, int]
    stripes: bool = False  # textured background
    outline: bool = False  # draw the shape's outline only
    hue_shift: int = 0  # rotate colour channels by this many places (0-2)
    grey: bool = False
    noise: float = 0.0  # std of additive pixel noise
    blur: float = 0.0


def pretrain_style(rng: random.Random) -> tuple[Style, str]:
    """A random style, each attribute (noisy, blurry, grey, striped, outlined) drawn on its own, on
    a plain background of random colour, and the words that describe it ("a noisy picture of a").
    The benchmark domains combine attributes on their own backgrounds, so none of them is seen as
    such; the words let prompts describe a domain."""
    outline, stripes, noise = rng.random() < 0.3, rng.random() < 0.3, rng.random() < 0.3
    grey, blur = rng.random() < 0.2, rng.random() < 0.2
    style = Style(
        background=(rng.randrange(256), rng.randrange(256), rng.randrange(256)),
        stripes=stripes,
        outline=outline,
        grey=grey,
        noise=16 if noise else 0,
        blur=0.8 if blur else 0,
    )
    words = [
        w
        for w, on in (("noisy", noise), ("blurry", blur), ("grey", grey), ("striped", stripes), ("outlined", outline))
        if on
    ]
    noun = rng.choice(["picture", "image", "rendering", "drawing"])
    return style, " ".join(["a", *words, noun, "of", "a"])


# Every benchmark domain is noisy and blurred (a shift shared by all tasks, which a multi-task
# prompt can learn) and adds a look of its own (which task-specific parameters can learn).
STYLES = {
    "art": Style(background=(200, 180, 150), stripes=True, noise=16, blur=0.8),
    "clipart": Style(background=(255, 255, 255), outline=True, noise=16, blur=0.8),
    "product": Style(background=(240, 240, 240), noise=20, blur=0.8),
    "real world": Style(background=(90, 110, 90), noise=20, blur=0.8),
    "painting": Style(background=(170, 150, 120), stripes=True, noise=16, blur=1.0),
    "real": Style(background=(90, 110, 90), noise=20, blur=0.8),
    "sketch": Style(background=(255, 255, 255), outline=True, grey=True, noise=16, blur=0.8),
}


def style_for(domain: str) -> Style:
    """The named domains' styles; any other domain gets one derived from its name."""
    key = domain.lower().replace("_", " ")
    if key in STYLES:
        return STYLES[key]
    rng = random.Random(zlib.crc32(key.encode()))
    return Style(
        background=(rng.randrange(60, 240), rng.randrange(60, 240), rng.randrange(60, 240)),
        stripes=rng.random() < 0.5,
        outline=rng.random() < 0.3,
        noise=16,
        blur=0.8,
    )


def class_look(label: int) -> tuple[str, tuple[int, int, int]]:
    # (label mod 12, 5*label mod 11) is injective for label < 132 (12 and 11 are coprime).
    return SHAPES[label % len(SHAPES)], COLOURS[(5 * label) % len(COLOURS)]


def permuted_look(label: int, n_classes: int) -> int:
    """The look the second pair of related domains draws class `label` in: another class's."""
    return (label + n_classes // 2) % n_classes


def render(look: int, style: Style, rng: random.Random) -> Image.Image:
    """An image of class look `look` (a shape in a colour) in `style`."""
    colour: tuple[int, ...]  # a rotation of the class's RGB
    shape, colour = class_look(look)
    if style.hue_shift:
        colour = colour[style.hue_shift :] + colour[: style.hue_shift]
    image = Image.new("RGB", (SIZE, SIZE), style.background)
    draw = ImageDraw.Draw(image)
    if style.stripes:
        shade = tuple(max(0, c - 40) for c in style.background)
        for x in range(rng.randrange(6), SIZE, 6):
            draw.line([(x, 0), (x - 12, SIZE)], fill=shade, width=2)
    radius = rng.uniform(0.28, 0.42) * SIZE
    cx, cy = (SIZE / 2 + rng.uniform(-4, 4) for _ in range(2))
    _draw_shape(draw, shape, cx, cy, radius, colour, style.outline, rng.uniform(-0.3, 0.3))
    if style.blur:
        image = image.filter(ImageFilter.GaussianBlur(style.blur))
    pixels: np.ndarray = np.asarray(image, dtype=np.float32)  # float64 once noise is added
    if style.noise:
        noise = np.random.default_rng(rng.randrange(2**32)).normal(0, style.noise, pixels.shape)
        pixels = pixels + noise
    if style.grey:
        pixels = pixels.mean(axis=2, keepdims=True).repeat(3, axis=2)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour, outline: bool, angle: float
) -> None:
    fill, line = (None, colour) if outline else (colour, colour)
    width = max(2, int(r / 5))
    box = [cx - r, cy - r, cx + r, cy + r]

    def polygon(points):
        draw.polygon(points, fill=fill, outline=line, width=width)

    def rotated(n: int, radius: float, offset: float = 0.0):
        return [
            (
                cx + radius * math.cos(angle + offset + 2 * math.pi * k / n),
                cy + radius * math.sin(angle + offset + 2 * math.pi * k / n),
            )
            for k in range(n)
        ]

    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=line, width=width)
    elif shape == "square":
        polygon(rotated(4, r, math.pi / 4))
    elif shape == "triangle":
        polygon(rotated(3, r, -math.pi / 2))
    elif shape == "diamond":
        polygon(rotated(4, r))
    elif shape == "star":
        points = rotated(5, r, -math.pi / 2)
        polygon([points[k * 2 % 5] for k in range(5)])
    elif shape == "wedge":
        draw.pieslice(box, 200, 340, fill=fill, outline=line, width=width)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(3, int(r / 3)))
    elif shape == "frame":
        draw.rectangle(box, outline=colour, width=max(3, int(r / 3)))
    elif shape == "cross":
        draw.line([(cx - r, cy), (cx + r, cy)], fill=colour, width=int(r / 2))
        draw.line([(cx, cy - r), (cx, cy + r)], fill=colour, width=int(r / 2))
    elif shape == "hbar":
        draw.rectangle([cx - r, cy - r / 3, cx + r, cy + r / 3], fill=fill, outline=line, width=width)
    elif shape == "vbar":
        draw.rectangle([cx - r / 3, cy - r, cx + r / 3, cy + r], fill=fill, outline=line, width=width)
    elif shape == "dots":
        for px, py in rotated(3, r * 0.6):
            draw.ellipse([px - r / 3, py - r / 3, px + r / 3, py + r / 3], fill=colour)


CLASS_SUBDIR = {"office31": "images"}  # the original archive's {domain}/images/{class}/


def layout_classes(layout: str, n_classes: int) -> list[str]:
    """Class folder names, in label order."""
    if layout == "folder":
        return FOLDER_CLASSES[:n_classes]
    return canonical_classes(layout)


def write_synthetic(
    out: Path,
    layout: str,
    per_class: int = 10,
    n_classes: int = 10,
    domains: list[str] | None = None,
    seed: int = 0,
    related_pairs: bool = False,
) -> int:
    """Write the image set under `out` in `layout`; return the number of images written.

    `related_pairs`: the domains form two halves (e.g. Art+Clipart, Product+Real World), each in
    one style. The first half draws each class in its own look, the second in another class's
    (`permuted_look`), so that tasks agree within a half and their gradients conflict across
    halves: a known answer for task grouping."""
    out = Path(out)
    classes = layout_classes(layout, n_classes)
    domains = (
        domains
        or {
            "officehome": OFFICEHOME_DOMAINS,
            "minidomainnet": MINIDOMAINNET_DOMAINS,
            "folder": ["art", "clipart", "product", "real world"],
            **{name: list(spec.domains) for name, spec in SPECS.items()},
        }[layout]
    )
    rng = random.Random(seed)
    lists: dict[str, list[str]] = {d: [] for d in domains}
    half = len(domains) // 2
    for index, domain in enumerate(domains):
        permuted = related_pairs and index >= half
        # Related domains share their half's first style: they differ only in the images drawn.
        style = style_for(domains[half if permuted else 0] if related_pairs else domain)
        for label, cls in enumerate(classes):
            folder = out / domain / CLASS_SUBDIR.get(layout, "") / cls
            folder.mkdir(parents=True, exist_ok=True)
            look = permuted_look(label, len(classes)) if permuted else label
            for k in range(per_class):
                name = f"{cls.lower()}_{k:03d}.jpg"
                render(look, style, rng).save(folder / name, quality=95)
                lists[domain].append(f"{domain}/{cls}/{name} {label}")
    if layout in ("minidomainnet", "domainnet"):  # Dassl's splits_mini/; DomainNet's beside the folders
        _write_lists(out / "splits_mini" if layout == "minidomainnet" else out, lists)
    pairs = f"; related pairs {domains[: len(domains) // 2]} / {domains[len(domains) // 2 :]}" if related_pairs else ""
    (out / SYNTHETIC_MARKER).write_text(
        f"Synthetic images from `petl-bench data synth` (layout {layout}, {per_class} per class, "
        f"seed {seed}{pairs}). Accuracies on them are not comparable with the paper's.\n",
        encoding="utf-8",
    )
    return sum(len(v) for v in lists.values())


def _write_lists(folder: Path, lists: dict[str, list[str]]) -> None:
    """DomainNet's list format (Dassl's too): `domain/class/file.jpg label`, split 70/30 per domain."""
    folder.mkdir(parents=True, exist_ok=True)
    for domain, lines in lists.items():
        cut = int(len(lines) * 0.7)
        (folder / f"{domain}_train.txt").write_text("\n".join(lines[:cut]) + "\n", encoding="utf-8")
        (folder / f"{domain}_test.txt").write_text("\n".join(lines[cut:]) + "\n", encoding="utf-8")
