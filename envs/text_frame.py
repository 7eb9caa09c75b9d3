"""``render_mode="rgb_array"`` of the text envs: the text so far drawn as an image (Pillow, imported when used).

Gymnasium tools (``RecordVideo``, SB3's ``make_vec_env``, which asks for ``rgb_array``) expect every env to draw
frames; for text a picture of the text is enough. Pillow ships with TensorBoard (a dependency of the project) and
with the ``interop`` / ``video`` extras.
"""

from __future__ import annotations

import textwrap

import numpy as np

WIDTH, HEIGHT, COLUMNS = 640, 240, 76  # frame size in pixels; characters per line


def text_frame(text: str) -> np.ndarray:
    """``text`` wrapped to :data:`COLUMNS` characters, black on white: a (HEIGHT, WIDTH, 3) uint8 frame (the end
    of the text is kept when it does not fit)."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as err:
        raise ImportError('render_mode="rgb_array" of the text envs needs Pillow: pip install pillow') from err
    font = ImageFont.load_default(size=14)
    lines = textwrap.wrap(text.replace("\n", " "), COLUMNS) or [""]
    lines = lines[-(HEIGHT - 10) // 18:]  # the last lines that fit
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((6, 5 + 18 * i), line, fill="black", font=font)
    return np.asarray(image, dtype=np.uint8).copy()
