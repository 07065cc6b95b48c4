"""The one image preparation path: centre square crop, then resize (data.images)."""

import cv2
import numpy as np
import pytest
from video2reward.data.images import crop_square, prepare_frame, prepare_frames


def _frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("side", [40, 84, 96, 128])
@pytest.mark.parametrize("size", [32, 84, 100])
def test_square_frames_resize_as_plain_cv2(side: int, size: int) -> None:
    # Square frames: exactly cv2.resize, area when shrinking, bilinear when enlarging,
    # untouched at the size (what the reward models, the learner and import always did).
    f = _frames(3, side, side)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    want = np.stack([cv2.resize(x, (size, size), interpolation=interp) for x in f])
    got = prepare_frames(f, size)
    assert got.shape == (3, size, size, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(prepare_frame(f[1], size), want[1])
    assert got.flags.c_contiguous


def test_square_frames_at_the_size_come_back_unchanged() -> None:
    f = _frames(2, 84, 84)
    out = prepare_frames(f, 84)
    assert np.array_equal(out, f) and np.shares_memory(out, f)  # contiguous already: no copy
    np.testing.assert_array_equal(prepare_frame(f[0], 84), f[0])


@pytest.mark.parametrize(("h", "w"), [(480, 640), (640, 480), (101, 150), (150, 101)])
def test_non_square_frames_are_centre_cropped_then_resized(h: int, w: int) -> None:
    f = _frames(2, h, w)
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    square = f[:, y0 : y0 + s, x0 : x0 + s]
    assert np.array_equal(crop_square(f), square)
    want = np.stack([cv2.resize(x, (84, 84), interpolation=cv2.INTER_AREA) for x in square])
    np.testing.assert_array_equal(prepare_frames(f, 84), want)
    np.testing.assert_array_equal(prepare_frame(f[0], 84), want[0])


def test_a_wide_frame_keeps_its_centre_and_drops_the_sides() -> None:
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, 80:560] = 200  # the centre 480x480 square
    out = prepare_frame(img, 84)
    assert out.min() == 200  # no black side bar squashed in


def test_shapes_other_than_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="one"):
        prepare_frame(np.zeros((2, 8, 8, 3), np.uint8), 4)
    with pytest.raises(ValueError, match="T, H, W"):
        prepare_frames(np.zeros((8, 8, 3), np.uint8), 4)
