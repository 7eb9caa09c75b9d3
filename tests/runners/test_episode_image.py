"""runners.common.episode_image: readable episode images (separators, enlarged frames, captions, legend)."""

from __future__ import annotations

import numpy as np
import pytest

from runners.common.episode_image import episode_image


def test_episode_image_has_separators_captions_and_legend():
    frame = np.full((80, 80, 3), 128, dtype=np.uint8)
    img = episode_image([frame] * 3, ["t=0 start", "t=1 Down +0", "t=2 Right +100"], "title",
                        [("meat +100", (200, 35, 45))])
    assert img.dtype == np.uint8 and img.ndim == 3
    rows = img[:, :, 0]
    frame_cols = np.flatnonzero((rows == 128).any(axis=0))
    gaps = np.flatnonzero(np.diff(frame_cols) > 1)
    assert len(gaps) == 2  # three frames side by side, white separators between them
    widths = np.diff(np.r_[-1, gaps, len(frame_cols) - 1])
    assert (widths >= 160).all()  # enlarged from 80 px to stay readable
    assert img.shape[1] <= 880  # fits one TensorBoard card: shown at its own size, so text is not shrunk
    band = img[34:34 + 28, : widths[0]].min(axis=2)  # the first frame's caption band
    ink = np.flatnonzero((band < 100).any(axis=1))
    assert ink.size and ink[-1] - ink[0] >= 12  # caption glyphs at least 12 px tall (was 9: unreadable)
    assert ((img == (200, 35, 45)).all(-1)).sum() > 100  # the legend swatch
    text_rows = img[:26].min(axis=(1, 2))
    assert text_rows.min() < 100  # the title is drawn
    long = episode_image([frame] * 3, ["t=12 Right -10 bathtub, episode over"] * 3, "t")
    first_gap = np.flatnonzero((long[:, :, 0] == 128).any(axis=0))
    sep = first_gap[np.flatnonzero(np.diff(first_gap) > 1)[0]] + 1  # first white column after frame 1
    assert long[34:60, sep + 1:sep + 5].min() == 255  # a long caption is cut before it runs into the next frame
    with pytest.raises(ValueError, match="one caption per frame"):
        episode_image([frame], [], "t")
