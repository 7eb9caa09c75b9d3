"""Readable episode images for TensorBoard's Images tab: one picture per episode.

Frames are enlarged (nearest neighbour), laid out row by row with white separators, each captioned with its step
counter (and the action and reward that led to it); a title gives the episode's return and outcome, and a legend
names the cell colours (for CatGrid: the lecture's words, cat / empty / broom / bathtub / meat).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SEP = 6  # px between frames
CAPTION_FONT = 20  # px text: TensorBoard shows images at their own size, so text stays this large on screen
TITLE_FONT = 22
CAPTION = CAPTION_FONT + 8  # px of caption band above each frame
MIN_FRAME = 160  # frames are enlarged to at least this width (a caption line fits it)
MAX_WIDTH = 880  # frames per row are chosen to stay under this width (one TensorBoard card, no downscaling)


def _font(size: int) -> Any:
    """PIL's default font at ``size`` px where Pillow can scale it (>= 10.1), else its fixed default."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


def episode_image(
    frames: Sequence[np.ndarray],
    captions: Sequence[str],
    title: str,
    legend: Sequence[tuple[str, tuple[int, int, int]]] = (),
) -> np.ndarray:
    """One (H, W, 3) uint8 image: ``frames`` (each (h, w, 3)) in rows with ``captions``, a ``title`` and a
    colour ``legend`` of (words, RGB) pairs."""
    from PIL import Image, ImageDraw

    if not frames or len(frames) != len(captions):
        raise ValueError(f"need one caption per frame, got {len(frames)} frames and {len(captions)} captions")
    h, w = frames[0].shape[:2]
    scale = max(1, -(-MIN_FRAME // w))  # ceil
    fh, fw = h * scale, w * scale
    per_row = max(1, min(len(frames), (MAX_WIDTH - SEP) // (fw + SEP)))
    rows = -(-len(frames) // per_row)
    title_h, legend_h = TITLE_FONT + 12, CAPTION_FONT + 14 if legend else 0
    width = SEP + per_row * (fw + SEP)
    height = title_h + rows * (CAPTION + fh + SEP) + SEP + legend_h
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((SEP, 5), title, fill=(0, 0, 0), font=_font(TITLE_FONT))
    small = _font(CAPTION_FONT)
    for i, (frame, caption) in enumerate(zip(frames, captions)):
        r, c = divmod(i, per_row)
        x, y = SEP + c * (fw + SEP), title_h + r * (CAPTION + fh + SEP)
        draw.text((x + 2, y + 2), _fit(draw, caption, small, fw - 4), fill=(0, 0, 0), font=small)
        big = np.repeat(np.repeat(np.asarray(frame, dtype=np.uint8), scale, 0), scale, 1)  # (fh, fw, 3)
        canvas.paste(Image.fromarray(big), (x, y + CAPTION))
        draw.rectangle((x - 1, y + CAPTION - 1, x + fw, y + CAPTION + fh), outline=(60, 60, 60))
    x, y = SEP, height - legend_h + 4
    for words, rgb in legend:
        swatch = (x, y, x + CAPTION_FONT, y + CAPTION_FONT)
        draw.rectangle(swatch, fill=tuple(int(v) for v in rgb), outline=(60, 60, 60))
        draw.text((x + 24, y + 2), words, fill=(0, 0, 0), font=small)
        x += 24 + int(draw.textlength(words, font=small)) + 18
    return np.asarray(canvas)


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text`` cut (with an ellipsis) to at most ``width`` px in ``font``: a caption never runs into the next
    frame."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
