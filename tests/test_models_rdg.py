"""RDG / RDG-s: parameter counts, the official checkpoint, streaming, CycleFC forms, the fused
oneDNN inference path and its fallback, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gbuf.datasets import format as fmt
from gbuf.errors import GbufError
from gbuf.train import checkpoints, models
from gbuf.train.models import rdg as rdg_module
from gbuf.train.models import rdg_onednn
from gbuf.train.ops import backward_warp


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _clip(b=1, t=3, h=12, w=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    clip = {k: torch.rand(b, t, fmt.BUFFERS[k].channels, h, w, generator=g) for k in rdg_module.INPUTS}
    clip["motion"] = clip["motion"] * 4 - 2
    return clip


@pytest.mark.parametrize("name, expected", [("rdg", 1_473_600), ("rdg-s", 303_680)])
def test_parameter_counts_match_the_paper(name, expected):
    model = models.create(name)
    assert _count(model) == expected
    assert model.recurrent and model.scale == 4
    assert tuple(model.inputs) == ("image", "depth", "normal", "motion", "brdf")


def test_forward_backward_on_cpu_with_odd_size():
    torch.manual_seed(0)
    model = models.create("rdg-s")
    clip = _clip(b=2, t=2, h=10, w=14)  # not multiples of 4: padded inside, cropped back
    out = model(clip)
    assert out.shape == (2, 2, 3, 40, 56)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    # Every parameter but CTR's unused alphas gets a gradient.
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert all(n.endswith("ctr.alpha") for n in missing) and len(missing) == 3
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


def test_step_equals_sequence_forward():
    torch.manual_seed(0)
    model = models.create("rdg-s").eval()
    clip = _clip(t=3)
    with torch.no_grad():
        whole = model(clip)
        state, frames = None, []
        for t in range(3):
            out, state = model.step({k: v[:, t] for k, v in clip.items()}, state)
            frames.append(out)
        # An explicit initial state is the same as None (what the ONNX graph relies on).
        first = {k: v[:, 0] for k, v in clip.items()}
        out0, _ = model.step(first, model.initial_state(first))
    assert torch.equal(torch.stack(frames, 1), whole)
    assert torch.equal(out0, whole[:, 0])


def test_previous_hidden_state_is_warped_with_the_previous_frames_motion():
    """The official quirk: frame t's output depends on motion[t-1], not on motion[t]."""
    torch.manual_seed(0)
    model = models.create("rdg-s").eval()
    for p in model.skip_alphas:
        torch.nn.init.normal_(p)  # the zero-initialised skips would hide nothing here, but be sure
    clip = _clip(t=3, h=16, w=16)
    changed_last = {k: v.clone() for k, v in clip.items()}
    changed_last["motion"][:, 2] += 3.0
    changed_middle = {k: v.clone() for k, v in clip.items()}
    changed_middle["motion"][:, 1] += 3.0
    with torch.no_grad():
        base, last, middle = model(clip), model(changed_last), model(changed_middle)
    assert torch.equal(base, last)  # the last frame's own motion is never used
    assert torch.equal(base[:, :2], middle[:, :2])
    assert not torch.allclose(base[:, 2], middle[:, 2])
    current = models.create("rdg-s", motion_frame="current").eval()
    current.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(current(clip)[:, 2], current(changed_last)[:, 2])


def test_warp_follows_the_gbuf_motion_convention():
    """motion = displacement to frame t-1 (x right, y down): warp(prev, m)[p] = prev[p + m]."""
    prev = torch.zeros(1, 1, 8, 8)
    prev[0, 0, 5, 3] = 1.0  # y=5, x=3 in frame t-1
    motion = torch.zeros(1, 2, 8, 8)
    motion[:, 0], motion[:, 1] = 2.0, -1.0  # the surface moved 2 left and 1 down from t-1 to t
    warped = backward_warp(prev, motion, padding_mode="zeros")  # RDG's warp (the official motion_warp)
    assert warped[0, 0, 6, 1] == 1.0 and warped.sum() == 1.0


def test_cyclefc_fast_form_equals_deform_conv2d():
    torch.manual_seed(0)
    for channels, axis in ((16, "x"), (36, "y"), (5, "x")):
        fast = rdg_module.CycleFC(channels, axis, "fast")
        deform = rdg_module.CycleFC(channels, axis, "deform")
        deform.load_state_dict(fast.state_dict())
        x = torch.randn(2, channels, 9, 11)
        assert (fast(x) - deform(x)).abs().max() < 1e-5
    # Shifts cover -3..3 and run out of the image cleanly on tiny inputs.
    tiny = rdg_module.CycleFC(16, "x", "fast")
    assert tiny.shift(torch.ones(1, 16, 2, 2))[0, 3].sum() == 0  # channel 3 shifts by 3 > width


def test_fast_and_deform_models_agree():
    torch.manual_seed(0)
    fast = models.create("rdg-s").eval()
    deform = models.create("rdg-s", cyclefc="deform").eval()
    deform.load_state_dict(fast.state_dict())
    clip = _clip(t=2, h=12, w=16)
    with torch.no_grad():
        assert (fast(clip) - deform(clip)).abs().max() < 1e-5


def test_official_checkpoint_reproduces_the_reference_output(shared_reference):
    data = np.load(shared_reference / "rdg" / "rdg_small_io_seed0.npz")
    batch = {k: torch.from_numpy(data[k]) for k in rdg_module.INPUTS}
    expected = torch.from_numpy(data["output"])
    for form in ("fast", "deform"):
        model = models.create("rdg-s", cyclefc=form).eval()
        assert checkpoints.load(model, shared_reference / "rdg" / "RDG_Small.pth") == "params"
        with torch.no_grad():
            out = model(batch)
        assert out.shape == expected.shape
        assert (out - expected).abs().max() <= 1e-4, form


def test_checkpoint_round_trip_keeps_official_layout(shared_reference, tmp_path):
    official = torch.load(shared_reference / "rdg" / "RDG_Small.pth", weights_only=True)["params"]
    model = models.create("rdg-s")
    checkpoints.load(model, shared_reference / "rdg" / "RDG_Small.pth")
    path = checkpoints.save(model, tmp_path / "copy.pth", ema=model)
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"params", "params_ema", checkpoints.DIGEST_KEY}  # the digest: see checkpoints
    # Same keys as the authors' file (offset buffers included) and the same values.
    assert set(saved["params"]) == set(official)
    assert all(torch.equal(saved["params"][k], official[k]) for k in official)
    again = models.create("rdg-s")
    assert checkpoints.load(again, path) == "params_ema"
    assert checkpoints.load(again, path, key="params") == "params"


def test_wrong_checkpoints_are_named(shared_reference, tmp_path):
    with pytest.raises(GbufError, match=r"RDG_Small.pth: checkpoint does not fit RDG .*shape mismatches: "
                                        r"first_conv.weight \(16, 3, 3, 3\) in file vs \(36, 3, 3, 3\)"):
        checkpoints.load(models.create("rdg"), shared_reference / "rdg" / "RDG_Small.pth")
    with pytest.raises(GbufError, match="keys missing from file: to_feat.weight"):
        checkpoints.load(models.create("smfanet"), shared_reference / "rdg" / "RDG_Small.pth")
    bad_offset = torch.load(shared_reference / "rdg" / "RDG_Small.pth", weights_only=True)
    bad_offset["params"]["encoders.0.0.dfm.mlp_h.offset"] += 1
    torch.save(bad_offset, tmp_path / "bad.pth")
    with pytest.raises(GbufError, match="encoders.0.0.dfm.mlp_h.offset differs"):
        checkpoints.load(models.create("rdg-s"), tmp_path / "bad.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(GbufError, match="text.pth: not a PyTorch checkpoint"):
        checkpoints.load(models.create("rdg-s"), tmp_path / "text.pth")
    with pytest.raises(GbufError, match="missing.pth: checkpoint not found"):
        checkpoints.load(models.create("rdg-s"), tmp_path / "missing.pth")
    with pytest.raises(GbufError, match="no entry 'params_ema'"):
        checkpoints.load(models.create("rdg-s"), shared_reference / "rdg" / "RDG_Small.pth", key="params_ema")


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a checkpoint that would run code on load is an error, not executed."""
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"params": Evil()}, f, protocol=2)
    with pytest.raises(GbufError, match="evil.pth: not a PyTorch checkpoint"):
        checkpoints.load(models.create("rdg-s"), tmp_path / "evil.pth")
    assert not marker.exists()


def test_bad_input_names_the_problem():
    model = models.create("rdg-s")
    clip = _clip(t=1, h=8, w=8)
    del clip["brdf"]
    with pytest.raises(GbufError, match="missing buffer 'brdf'"):
        model(clip)
    clip = _clip(t=1, h=8, w=8)
    clip["depth"] = clip["depth"].repeat(1, 1, 3, 1, 1)
    with pytest.raises(GbufError, match=r"buffer 'depth' has shape \(1, 1, 3, 8, 8\)"):
        model(clip)
    with pytest.raises(GbufError, match="unknown model 'rdg-xl'; known models: rdg, rdg-s"):
        models.create("rdg-xl")
    with pytest.raises(GbufError, match="unknown form"):
        models.create("rdg-s", cyclefc="slow")


def test_fast_path_matches_the_official_computation_in_batches_and_gradients():
    """The fast form's rewrites (channels-last, folded CycleFC and attention) are exact up to
    rounding: outputs, state and gradients match the deform form, batch > 1 included."""
    torch.manual_seed(0)
    fast = models.create("rdg-s")
    for p in fast.skip_alphas:
        torch.nn.init.normal_(p)  # zero skips would hide the encoder paths
    deform = models.create("rdg-s", cyclefc="deform")
    deform.load_state_dict(fast.state_dict())
    clip = _clip(b=2, t=2, h=20, w=28)
    clip["image"][1] = clip["image"][1].flip(-1)  # different frames per batch item
    out_fast, out_deform = fast(clip), deform(clip)
    assert out_fast.is_contiguous()
    assert (out_fast - out_deform).abs().max() < 1e-5
    out_fast.square().mean().backward()
    out_deform.square().mean().backward()
    deform_params = dict(deform.named_parameters())
    for name, p in fast.named_parameters():
        if p.grad is None:
            assert deform_params[name].grad is None, name
            continue
        ref = deform_params[name].grad
        assert (p.grad - ref).abs().max() <= 1e-4 * ref.abs().max() + 1e-8, name


def test_fused_cpu_inference_kernels_match_the_official_computation(monkeypatch):
    """Without autograd on CPU the fast form runs oneDNN's fused conv/matmul kernels; they must
    actually run, and match the deform form and the autograd fast path, batch > 1 included."""
    if not rdg_onednn.ready():
        pytest.skip("this torch build has no oneDNN fused kernels (torch.ops.mkldnn); nothing to compare")
    calls = []
    real_linear = rdg_onednn.fused_linear
    monkeypatch.setattr(rdg_onednn, "fused_linear", lambda *a, **k: calls.append(1) or real_linear(*a, **k))
    torch.manual_seed(0)
    fast = models.create("rdg-s").eval()
    for p in fast.skip_alphas:
        torch.nn.init.normal_(p)
    deform = models.create("rdg-s", cyclefc="deform").eval()
    deform.load_state_dict(fast.state_dict())
    clip = _clip(b=2, t=3, h=21, w=30)  # odd size: padded inside
    clip["image"][1] = clip["image"][1].flip(-1)
    with torch.inference_mode():
        fused = fast(clip)
        assert calls, "the fused kernels were not used under inference_mode on CPU"
        reference = deform(clip)
    calls.clear()
    with torch.enable_grad():
        autograd_path = fast(clip)
    assert not calls, "the fused kernels (no backward) ran with autograd on"
    assert (fused - reference).abs().max() < 1e-5
    assert (fused - autograd_path.detach()).abs().max() < 1e-5


def test_channels_last_warp_is_identical_to_the_official_warp():
    """The fused path's embedding_bag warp reproduces grid_sample exactly: batches, motion that
    leaves the frame on every side, integer and fractional positions, odd sizes."""
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 5, 17, 23, generator=g).contiguous(memory_format=torch.channels_last)
    motion = torch.randn(2, 2, 17, 23, generator=g) * 9
    motion[:, :, :3] = motion[:, :, :3].round()  # exact pixel positions too
    expected = backward_warp(features, motion, padding_mode="zeros")
    got = rdg_onednn.warp_channels_last(features, motion)
    assert torch.equal(got, expected)
    assert (expected == 0).any() and (expected != 0).any()  # some samples fell outside, some inside


def test_without_the_fused_ops_inference_falls_back_to_the_autograd_fast_form(monkeypatch):
    """A torch without the private ``torch.ops.mkldnn`` ops (another release, a build without
    oneDNN): inference runs the autograd fast form, with the same values, and never calls them."""
    calls = []
    real_linear = rdg_onednn.fused_linear
    monkeypatch.setattr(rdg_onednn, "fused_linear", lambda *a, **k: calls.append(1) or real_linear(*a, **k))
    monkeypatch.setattr(torch.ops, "mkldnn", object())  # an op namespace without the ops
    monkeypatch.setattr(rdg_onednn, "_READY", None)  # forget an earlier check
    assert not rdg_onednn.ready()
    torch.manual_seed(0)
    fast = models.create("rdg-s").eval()
    for p in fast.skip_alphas:
        torch.nn.init.normal_(p)
    deform = models.create("rdg-s", cyclefc="deform").eval()
    deform.load_state_dict(fast.state_dict())
    clip = _clip(b=2, t=2, h=13, w=18)
    with torch.inference_mode():
        fallback = fast(clip)
        reference = deform(clip)
    assert not calls, "the fused kernels ran although the ops are missing"
    assert rdg_onednn._READY is False  # checked once, then remembered
    with torch.enable_grad():
        autograd_path = fast(clip).detach()
    assert torch.equal(fallback, autograd_path)
    assert (fallback - reference).abs().max() < 1e-5
