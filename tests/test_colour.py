"""``gbuf.datasets.colour``: the one sRGB curve and 8-bit conversion, for numpy and torch alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gbuf.datasets import colour


def _reference_encode(v: float) -> float:
    """IEC 61966-2-1, written out per value."""
    v = min(max(v, 0.0), 1.0)
    return 12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055


def test_srgb_curve_against_its_definition_numpy_and_torch():
    x = np.concatenate([np.linspace(-0.5, 1.5, 2001), [0.0031308, 0.04045, 0.18, 0.5]])
    want = np.array([_reference_encode(v) for v in x])
    got_np = colour.srgb_encode(x)
    got_t = colour.srgb_encode(torch.from_numpy(x))
    assert isinstance(got_np, np.ndarray) and isinstance(got_t, torch.Tensor)
    np.testing.assert_allclose(got_np, want, rtol=0, atol=1e-15)
    np.testing.assert_allclose(got_t.numpy(), got_np, rtol=0, atol=1e-15)   # pow differs by an ulp
    assert colour.srgb_encode(0.18) == pytest.approx(0.4614, abs=1e-4)     # mid grey
    # the inverse, on the encoded range; values outside [0, 1] are clipped
    back = colour.srgb_decode(got_np)
    np.testing.assert_allclose(back, np.clip(x, 0, 1), atol=1e-12)
    np.testing.assert_allclose(colour.srgb_decode(torch.from_numpy(got_np)).numpy(), back, atol=1e-15)
    assert colour.srgb_decode(np.array([-1.0, 2.0])).tolist() == [0.0, 1.0]


def test_dtypes_and_devices_are_kept():
    for dtype in (np.float32, np.float16):
        x = np.linspace(0, 1, 7, dtype=dtype)
        assert colour.srgb_encode(x).dtype == dtype and colour.srgb_decode(x).dtype == dtype
    t = torch.linspace(0, 1, 7, dtype=torch.float32)
    assert colour.srgb_encode(t).dtype == torch.float32 and colour.quantize8(t).dtype == torch.float32
    # no NaN gradient near 0 (the power branch never sees 0)
    t = torch.tensor([0.0, 1e-4, 0.5], requires_grad=True)
    colour.srgb_encode(t).sum().backward()
    assert torch.isfinite(t.grad).all() and t.grad[1] == pytest.approx(12.92)


def test_8_bit_levels_clip_and_round_half_to_even():
    x = np.array([-0.2, 0.0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 127.5 / 255, 0.999, 1.0, 3.0])
    want = [0, 0, 0, 2, 2, 128, 255, 255, 255]
    assert colour.quantize8(x).tolist() == want and colour.quantize8(x).dtype == np.float64
    u8 = colour.to_uint8(x)
    assert u8.dtype == np.uint8 and u8.tolist() == want
    t8 = colour.to_uint8(torch.from_numpy(x))
    assert t8.dtype == torch.uint8 and t8.tolist() == want
