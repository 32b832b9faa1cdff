"""The model registry: ``create(name, **options)`` and ``names()``.

The registry is an explicit table (as in timm, unlike BasicSR's folder scan): one
line per model naming the module and its constructor. Modules are imported only
when a model is created, so ``import gbuf.train.models`` does not load torch.

Every model is one file with a plain constructor that reads like its paper; what
several models share is written once in ``_blocks.py`` (input checks, SPyNet, the
residual block, history bookkeeping), and every warp is ``gbuf.train.ops.backward_warp``.
``rdg_onednn.py`` is not a model: it is RDG's fused CPU inference path. A model
instance has ``model.inputs`` (the batch keys it reads, e.g. ``("image",
"depth", "motion")`` or ``"hr_normal"`` for HR G-buffers), ``model.scale`` and
``model.recurrent``; its ``forward(batch)`` takes a dict of ``(B, T, C, H, W)``
tensors named like the dataset's buffers and returns ``(B, T, 3, sH, sW)``.
Recurrent models also have ``step(frame, state) -> (output, state)``.
"""

from __future__ import annotations

import importlib

from gbuf.errors import GbufError

# name -> (module, constructor, keyword options fixed for this name)
_REGISTRY: dict[str, tuple[str, str, dict]] = {
    "rdg": ("gbuf.train.models.rdg", "RDG", {"num_feat": 36}),
    "rdg-s": ("gbuf.train.models.rdg", "RDG", {"num_feat": 16}),
    "safmn": ("gbuf.train.models.safmn", "SAFMN", {}),
    "smfanet": ("gbuf.train.models.smfanet", "SMFANet", {}),
    "basicvsr": ("gbuf.train.models.basicvsr", "BasicVSR", {}),
    "basicvsrpp": ("gbuf.train.models.basicvsrpp", "BasicVSRPlusPlus", {}),
    "nsrr": ("gbuf.train.models.nsrr", "NSRR", {}),
    "nsrd": ("gbuf.train.models.nsrd", "NSRD", {}),
    "fusesr": ("gbuf.train.models.fusesr", "FuseSR", {}),
    "dap": ("gbuf.train.models.dap", "DAP", {}),
    "dap-motion": ("gbuf.train.models.dap", "DAP", {"use_motion": True}),
}


def names() -> list[str]:
    """Every model name ``create`` accepts."""
    return list(_REGISTRY)


def create(name: str, **options):
    """Build model ``name`` with its paper configuration; ``options`` override it."""
    try:
        module_name, constructor, fixed = _REGISTRY[name]
    except KeyError:
        raise GbufError(f"unknown model {name!r}; known models: {', '.join(_REGISTRY)}") from None
    module = importlib.import_module(module_name)
    return getattr(module, constructor)(**{**fixed, **options})
