"""The blur kernels of the Real-ESRGAN degradation model (float64 numpy, deterministic).

Every kernel is sampled on the integer grid ``-(k//2) .. k//2`` (k odd) and
normalised to sum 1. With ``Q(p) = p^T Sigma^-1 p`` and
``Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T``:

- ``iso`` / ``aniso``: Gaussian ``exp(-Q/2)`` (iso: sigma_y = sigma_x, theta = 0);
- ``generalized_iso`` / ``generalized_aniso``: ``exp(-Q^beta / 2)``;
- ``plateau_iso`` / ``plateau_aniso``: ``1 / (1 + Q^beta)``;
- ``sinc``: the ideal circular low-pass of cut-off omega (rad/pixel),
  ``omega J1(omega r) / (2 pi r)`` (``omega^2 / 4 pi`` at r = 0), which makes
  ringing and overshoot artefacts.
"""

from __future__ import annotations

import math

import numpy as np

GAUSSIAN_FAMILY = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
KERNEL_TYPES = GAUSSIAN_FAMILY + ("sinc",)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    return np.meshgrid(ax, ax, indexing="xy")          # xx varies along columns


def quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """``Q(p) = p^T Sigma^-1 p`` over the kernel grid."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    sigma = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(sigma)
    xx, yy = _grid(size)
    return inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy


def gaussian_family_kernel(kind: str, size: int, sigma_x: float, sigma_y: float, theta: float,
                           beta: float = 1.0) -> np.ndarray:
    if kind.endswith("iso") and not kind.endswith("aniso"):
        sigma_y, theta = sigma_x, 0.0
    q = quadratic_form(size, sigma_x, sigma_y, theta)
    if kind in ("iso", "aniso"):
        k = np.exp(-0.5 * q)
    elif kind.startswith("generalized"):
        k = np.exp(-0.5 * np.power(q, beta))
    elif kind.startswith("plateau"):
        k = 1.0 / (np.power(q, beta) + 1.0)
    else:
        raise ValueError(f"unknown kernel type {kind!r}")
    return k / k.sum()


def bessel_j1(x: np.ndarray, nodes: int = 2048) -> np.ndarray:
    """Bessel J1 from Bessel's integral ``(1/pi) int_0^pi cos(t - x sin t) dt`` (float64).

    The midpoint rule on this periodic, analytic integrand converges
    exponentially once ``nodes`` exceeds |x|, so this is exact to rounding for
    kernel radii (|x| < 50); torch's ``special.bessel_j1`` is off by ~1e-8.
    """
    x = np.asarray(x, dtype=np.float64)
    t = (np.arange(nodes, dtype=np.float64) + 0.5) * (math.pi / nodes)
    flat = x.reshape(-1, 1)
    return np.cos(t[None, :] - flat * np.sin(t)[None, :]).mean(axis=1).reshape(x.shape)


def sinc_kernel(size: int, omega: float) -> np.ndarray:
    """Circular low-pass ``omega J1(omega r) / (2 pi r)``, normalised."""
    xx, yy = _grid(size)
    r2 = (xx * xx + yy * yy).astype(np.int64)
    radii2, inverse = np.unique(r2, return_inverse=True)   # few distinct radii on the grid
    r = np.sqrt(radii2.astype(np.float64))
    values = np.empty_like(r)
    values[r == 0] = omega * omega / (4.0 * math.pi)
    nz = r > 0
    values[nz] = omega * bessel_j1(omega * r[nz]) / (2.0 * math.pi * r[nz])
    k = values[inverse].reshape(r2.shape)
    return k / k.sum()


def make_kernel(kind: str, size: int, params: dict) -> np.ndarray:
    """The kernel of one frame from its drawn parameters (see ``realworld.sample_plan``)."""
    if kind == "sinc":
        return sinc_kernel(size, params["omega"])
    return gaussian_family_kernel(kind, size, params["sigma_x"], params.get("sigma_y", params["sigma_x"]),
                                  params.get("theta", 0.0), params.get("beta", 1.0))
