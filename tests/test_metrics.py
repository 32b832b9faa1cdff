"""SSIM and LPIPS of ``gbuf.train.metrics`` against independent implementations, on real photographs.

SSIM: scikit-image's ``structural_similarity`` with the Wang et al. (2004) settings (11x11
Gaussian window of sigma 1.5 -- skimage truncates at 3.5 sigma, radius 5 --, population
covariances, K1 = 0.01, K2 = 0.03, the mean over the window-valid region and the channels).
LPIPS: the ``lpips`` package (the authors' code) built without pretrained weights and loaded
with the same locally made weights as gbuf's; nothing is downloaded.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from gbuf.errors import GbufError
from gbuf.train import metrics

skimage_data = pytest.importorskip("skimage.data")
from skimage.metrics import structural_similarity  # noqa: E402


def _photo(name: str, h: int = 96, w: int = 128, top: int = 0, left: int = 0) -> np.ndarray:
    """A crop of one of scikit-image's bundled photographs, (H, W, 3) uint8."""
    image = getattr(skimage_data, name)()
    return np.ascontiguousarray(image[top:top + h, left:left + w, :3])


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _blur_noise(image: np.ndarray, seed: int) -> np.ndarray:
    from PIL import ImageFilter

    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float64)
    noisy = blurred + np.random.default_rng(seed).normal(0, 6, image.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _down_up(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    small = Image.fromarray(image).resize((w // 4, h // 4), Image.Resampling.BICUBIC)
    return np.array(small.resize((w, h), Image.Resampling.BICUBIC))


def _pairs():
    """(reference, distorted) uint8 pairs: a face, a cat and a mug, each degraded differently."""
    astronaut = _photo("astronaut", top=40, left=180)
    chelsea = _photo("chelsea", top=80, left=120)
    coffee = _photo("coffee", top=100, left=200)
    return [
        ("astronaut/jpeg20", astronaut, _jpeg(astronaut, 20)),
        ("astronaut/blur+noise", astronaut, _blur_noise(astronaut, 0)),
        ("chelsea/down-up x4", chelsea, _down_up(chelsea)),
        ("coffee/jpeg50", coffee, _jpeg(coffee, 50)),
        ("coffee vs chelsea", coffee, chelsea),
    ]


def _tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> (3, H, W) float64 in [0, 1] (exact 8-bit levels, so gbuf's rounding is a no-op)."""
    return torch.from_numpy(image.astype(np.float64) / 255.0).permute(2, 0, 1)


def _skimage_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    return float(structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                       data_range=data_range, channel_axis=-1 if a.ndim == 3 else None))


def _luma(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma on the 16..235 scale, written out here independently of gbuf."""
    rgb = image.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


@pytest.mark.parametrize("label, ref, dist", _pairs(), ids=lambda v: v if isinstance(v, str) else "")
def test_ssim_matches_scikit_image(label, ref, dist):
    want = _skimage_ssim(ref.astype(np.float64) / 255.0, dist.astype(np.float64) / 255.0, data_range=1.0)
    got = metrics.ssim(_tensor(dist), _tensor(ref))
    # float64 both ways: only summation order differs. A window sigma of 4 instead of 1.5, or C1 and
    # C2 swapped, moves these values by 1e-3 or more.
    assert got == pytest.approx(want, abs=1e-9, rel=0), label
    assert -1.0 < got < 0.995
    # Border crop: the same as SSIM of the cropped images.
    c = 7
    want_crop = _skimage_ssim(ref[c:-c, c:-c].astype(np.float64) / 255.0,
                              dist[c:-c, c:-c].astype(np.float64) / 255.0, data_range=1.0)
    assert metrics.ssim(_tensor(dist), _tensor(ref), crop=c) == pytest.approx(want_crop, abs=1e-9, rel=0)
    # Y channel: SSIM of the BT.601 luma, on its 0..255 scale.
    want_y = _skimage_ssim(_luma(ref), _luma(dist), data_range=255.0)
    assert metrics.ssim(_tensor(dist), _tensor(ref), y_channel=True) == pytest.approx(want_y, abs=1e-9, rel=0)


def test_ssim_rounds_to_8_bits_first_and_knows_its_window():
    ref, dist = _pairs()[0][1:]
    # Values a third of a level off round to the same 8-bit images: SSIM does not see them.
    nudged = (_tensor(dist) + 0.3 / 255).clamp(0, 1)
    assert metrics.ssim(nudged, _tensor(ref)) == metrics.ssim(_tensor(dist), _tensor(ref))
    assert metrics.ssim(_tensor(ref), _tensor(ref)) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(GbufError, match="smaller than the 11x11 window"):
        metrics.ssim(_tensor(ref[:10, :10]), _tensor(ref[:10, :10]))


# --- LPIPS --------------------------------------------------------------------------------------

ALEX_CHANNELS = (64, 192, 384, 256, 256)  # the five ReLU taps of AlexNet's features


@pytest.fixture(scope="module")
def lpips_weights(tmp_path_factory):
    """A weights folder in the layout gbuf reads: torchvision AlexNet + LPIPS v0.1 linear layers,
    made here from a seed (random backbone, non-negative linear weights as LPIPS learns them)."""
    import torchvision

    folder = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(weights=None)
    torch.save(alexnet.state_dict(), folder / metrics.LPIPS_BACKBONE_FILE)
    g = torch.Generator().manual_seed(1)
    linear = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(ALEX_CHANNELS)}
    torch.save(linear, folder / metrics.LPIPS_LINEAR_FILE)
    return folder, alexnet.features.state_dict(), linear


def _reference_lpips(features: dict, linear: dict):
    """The lpips package's LPIPS (AlexNet, v0.1) with our weights: no pretrained file, no download."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's notice about the legacy 'pretrained' argument
        model = lpips.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=True, verbose=False)
    own = model.state_dict()
    state = {}
    for name, value in features.items():  # torchvision "features.<i>.<p>" is lpips "net.slice<k>.<i>.<p>"
        (key,) = [k for k in own if k.startswith("net.") and k.split(".", 2)[2] == name]
        state[key] = value
    state.update(linear)
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert all(not k.startswith(("net.", "lin0", "lin1", "lin2", "lin3", "lin4")) for k in result.missing_keys)
    return model.eval()


def test_lpips_matches_the_reference_implementation(lpips_weights):
    folder, features, linear = lpips_weights
    gbuf_lpips = metrics.LPIPS(folder)
    reference = _reference_lpips(features, linear)
    values = []
    for label, ref, dist in _pairs():
        a, b = _tensor(dist).float(), _tensor(ref).float()
        with torch.no_grad():
            want = float(reference(a[None] * 2 - 1, b[None] * 2 - 1))
        got = gbuf_lpips(a, b)
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7), label
        values.append(got)
    assert all(v > 0 for v in values)
    # identity is exactly 0; the metric is symmetric
    ref = _tensor(_pairs()[0][1]).float()
    assert gbuf_lpips(ref, ref) == 0.0
    a, b = _tensor(_pairs()[1][2]).float(), ref
    assert gbuf_lpips(a, b) == pytest.approx(gbuf_lpips(b, a), rel=1e-6)


def test_lpips_weights_are_checked(lpips_weights, tmp_path):
    folder, _, linear = lpips_weights
    with pytest.raises(GbufError, match="LPIPS weights file not found"):
        metrics.LPIPS(tmp_path)
    (tmp_path / metrics.LPIPS_BACKBONE_FILE).write_bytes((folder / metrics.LPIPS_BACKBONE_FILE).read_bytes())
    torch.save({k: v for k, v in linear.items() if not k.startswith("lin4")}, tmp_path / metrics.LPIPS_LINEAR_FILE)
    with pytest.raises(GbufError, match="missing lin4.model.1.weight"):
        metrics.LPIPS(tmp_path)
