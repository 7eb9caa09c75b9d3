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
    assert (widths >= 120).all()  # enlarged from 80 px to stay readable
    assert ((img == (200, 35, 45)).all(-1)).sum() > 100  # the legend swatch
    text_rows = img[:26].min(axis=(1, 2))
    assert text_rows.min() < 100  # the title is drawn
    with pytest.raises(ValueError, match="one caption per frame"):
        episode_image([frame], [], "t")
