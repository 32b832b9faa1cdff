"""The buffer conventions, checked on real Cycles renders against analytic values.

Each scene is tiny (128x72 HR, 32x18 LR, emission shaders so there is no lighting
noise), built with bpy here, rendered once per module through ``gbuf.render.render``
into a real Zarr store and read back through ``gbuf.datasets``.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("bpy")

import render_helpers as rh

import gbuf.datasets as gd
from gbuf.render import render

HR_SIZE = (128, 72)
SCALE = 4
LR_SIZE = (HR_SIZE[0] // SCALE, HR_SIZE[1] // SCALE)
TOLERANCE_PX = 0.05
PAN_DEG = 3.0   # camera pan per frame, degrees
ORTHO_SCALE = 4.0  # world units across the image's width


def _render(blend, store, **options):
    options = {"resolution": HR_SIZE, "scale": SCALE, "samples": 16, "denoise": False, "quiet": True,
               **options}
    render(blend, store, **options)
    ds = gd.open(store)
    return ds[ds.sequences[0]]


def _read(seq, group, *buffers):
    return seq[group].read_many(list(buffers))


# ------------------------------------------------------------------------------------- scenes


@pytest.fixture(scope="module")
def translating(tmp_path_factory):
    """Static camera looking down at a grey floor (z=0); a textured card at z=2 moves each frame.

    The card is keyed only at frames 1 and 4, the first rendered frame included, so
    frame 0's backward motion exists only because gbuf continues the curve backwards.
    """
    tmp = tmp_path_factory.mktemp("translating")
    rh.new_scene((1, 3))
    rh.add_camera((0.0, 0.0, 10.0))
    rh.add_plane(40.0, material=rh.emission_material("Floor", "grey"))
    card = rh.add_plane(2.0, location=(0.0, 0.0, 2.0), material=rh.emission_material("Card", "noise", scale=1.5, strength=3.0))
    step = np.array([0.2, -0.1, 0.0])    # world units per frame
    rh.key_linear(card, "location", {1: (-0.3, 0.1, 2.0), 4: tuple(np.array([-0.3, 0.1, 2.0]) + 3 * step)})
    blend = rh.save(tmp / "translating.blend")
    seq = _render(blend, tmp / "out.zarr")
    return seq, step


@pytest.fixture(scope="module")
def panning(tmp_path_factory):
    """A camera 2 m above a textured ground, looking at the horizon, panning PAN_DEG degrees per frame.

    Keyed from frame 0 to frame 5 (beyond both ends of the rendered 1..3, as the
    recipes do). Pure rotation: every pixel's motion is known without depth, sky included.
    """
    tmp = tmp_path_factory.mktemp("panning")
    rh.new_scene((1, 3))
    cam = rh.add_camera((0.0, 0.0, 2.0), (90.0, 0.0, 0.0))
    rh.add_plane(400.0, material=rh.emission_material("Ground", "noise", scale=0.3, strength=4.0))
    rh.key_linear(cam, "rotation_euler", {0: (np.pi / 2, 0.0, 0.0), 5: (np.pi / 2, 0.0, np.radians(5 * PAN_DEG))})
    blend = rh.save(tmp / "panning.blend")
    return _render(blend, tmp / "out.zarr")


@pytest.fixture(scope="module")
def planes(tmp_path_factory):
    """A floor facing +Z and a wall facing -Y, seen by a tilted, turned camera."""
    tmp = tmp_path_factory.mktemp("planes")
    rh.new_scene((1, 1))
    rh.add_camera((1.0, -6.0, 3.0), (70.0, 0.0, 12.0))
    rh.add_plane(60.0, material=rh.emission_material("Floor", "grey"))
    rh.add_plane(60.0, location=(0.0, 6.0, 0.0), rotation_deg=(90.0, 0.0, 0.0),
                 material=rh.emission_material("Wall", "grey"))
    blend = rh.save(tmp / "planes.blend")
    return _render(blend, tmp / "out.zarr", samples=4)


@pytest.fixture(scope="module")
def trucking_aliased(tmp_path_factory):
    """A camera looking straight down, trucking right over a plane whose colour is its own XYZ position.

    Rendered with ``lr_mode="aliased"``: each LR pixel's colour says exactly where
    its one sample landed.
    """
    tmp = tmp_path_factory.mktemp("trucking")
    rh.new_scene((1, 4))
    cam = rh.add_camera((0.0, 0.0, 10.0))
    rh.add_plane(50.0, material=rh.emission_material("Coordinates", "object"))
    rh.key_linear(cam, "location", {0: (0.0, 0.0, 10.0), 10: (1.0, 0.0, 10.0)})
    blend = rh.save(tmp / "trucking.blend")
    return _render(blend, tmp / "out.zarr", samples=4, lr_mode="aliased")


@pytest.fixture(scope="module")
def orthographic(tmp_path_factory):
    """Orthographic cameras (scale ORTHO_SCALE) looking down at a textured floor: one still while a
    card moves in front of it, one trucking right over the still scene."""
    tmp = tmp_path_factory.mktemp("ortho")
    rh.new_scene((1, 3))
    rh.add_camera((0.0, 0.0, 10.0), ortho_scale=ORTHO_SCALE)
    rh.add_plane(40.0, material=rh.emission_material("Floor", "noise", scale=2.0))
    card = rh.add_plane(1.0, location=(0.0, 0.0, 2.0), material=rh.emission_material("Card", "noise", scale=1.5))
    card_step = np.array([0.15, -0.075, 0.0])
    rh.key_linear(card, "location", {0: (-0.3, 0.1, 2.0), 5: tuple(np.array([-0.3, 0.1, 2.0]) + 5 * card_step)})
    still = _render(rh.save(tmp / "still.blend"), tmp / "still.zarr")
    rh.new_scene((1, 3))
    cam = rh.add_camera((0.0, 0.0, 10.0), ortho_scale=ORTHO_SCALE)
    rh.add_plane(40.0, material=rh.emission_material("Floor", "noise", scale=2.0))
    cam_step = np.array([0.1, 0.05, 0.0])
    rh.key_linear(cam, "location", {0: (0.0, 0.0, 10.0), 5: tuple(np.array([0.0, 0.0, 10.0]) + 5 * cam_step)})
    trucking = _render(rh.save(tmp / "trucking.blend"), tmp / "trucking.zarr")
    return still, card_step, trucking, cam_step


# -------------------------------------------------------------------------------------- motion


@pytest.mark.slow
@pytest.mark.parametrize("group", ["hr", "lr"])
def test_translating_object_motion_equals_projection(translating, group):
    seq, step = translating
    width, _height = HR_SIZE if group == "hr" else LR_SIZE
    data = _read(seq, group, "motion", "depth")
    motion, depth = data["motion"], data["depth"][..., 0]
    # The card (depth 8) moved by `step` from t-1 to t: at t-1 it was `step` back, i.e. its
    # pixels were displaced by -step projected at depth 8 (image y points down, world y up).
    k = rh.focal_pixels(width) / 8.0
    expected = np.array([-step[0] * k, step[1] * k])
    for t in range(seq[group].num_frames):   # frame 0 included: its motion is real
        # Two pixels in from the edge at both sizes: the 1.5 px pixel filter takes samples up to
        # 0.75 px beyond a pixel, so a pixel next to an edge pixel can mix in the floor's zero motion
        # (seen on 5.3.0 at LR with one pixel of erosion), while Depth there still reads the card's.
        card = rh.erode(np.abs(depth[t] - 8.0) < 1e-3, 2)
        floor = rh.erode(np.abs(depth[t] - 10.0) < 1e-3, 3 if group == "hr" else 2)
        assert card.sum() > 10 and floor.sum() > 10
        err_card = np.abs(motion[t][card] - expected).max()
        assert err_card < TOLERANCE_PX, f"frame {t} {group}: card motion off by {err_card:.4f} px"
        assert np.abs(motion[t][floor]).max() < TOLERANCE_PX, f"frame {t} {group}: static floor moves"


@pytest.mark.slow
@pytest.mark.parametrize("group", ["hr", "lr"])
def test_panning_camera_motion_equals_projection(panning, group):
    width, height = HR_SIZE if group == "hr" else LR_SIZE
    data = _read(panning, group, "motion", "depth")
    motion, depth = data["motion"], data["depth"][..., 0]
    assert np.isinf(depth).any() and np.isfinite(depth).any(), "the view should hold ground and sky"
    for t in range(panning[group].num_frames):
        frame = 1 + t
        expected = rh.rotation_motion(width, height, (90.0, 0.0, frame * PAN_DEG), (90.0, 0.0, (frame - 1) * PAN_DEG))
        err = np.abs(motion[t] - expected)
        # Every pixel: ground (Cycles' Vector) and sky (gbuf's camera motion at infinity).
        assert err.max() < TOLERANCE_PX, f"frame {t} {group}: motion off by {err.max():.4f} px"
        assert np.abs(expected[..., 0]).mean() > 0.5, "the test scene should move"


@pytest.mark.slow
def test_backward_warp_with_motion_reproduces_the_frame(translating, panning):
    torch = pytest.importorskip("torch")
    from gbuf.train.ops import backward_warp

    for seq, name in ((panning, "panning"), (translating[0], "translating")):
        for group in ("hr", "lr"):
            data = _read(seq, group, "image", "motion", "depth")
            image = torch.from_numpy(data["image"].astype(np.float32)).permute(0, 3, 1, 2)
            motion = torch.from_numpy(data["motion"]).permute(0, 3, 1, 2)
            depth = data["depth"][..., 0]
            for t in range(1, image.shape[0]):
                warped = backward_warp(image[t - 1:t], motion[t:t + 1])[0]
                height, width = depth.shape[1:]
                ys, xs = np.mgrid[0:height, 0:width]
                mv = data["motion"][t]
                inside = ((xs + mv[..., 0] >= 0) & (xs + mv[..., 0] <= width - 1)
                          & (ys + mv[..., 1] >= 0) & (ys + mv[..., 1] <= height - 1))
                # Far ground near the horizon holds detail finer than a pixel (aliased at LR):
                # resampling it is no test of the motion, so it is left out.
                steady = ~(np.isfinite(depth[t]) & (depth[t] > 15.0))
                if name == "translating":
                    # Occluded pixels see another surface at t-1: the warped depth then disagrees
                    # (the camera is still, so a surface keeps its depth).
                    prev_depth = torch.from_numpy(np.nan_to_num(depth[t - 1], posinf=1e3))[None, None]
                    warped_depth = backward_warp(prev_depth, motion[t:t + 1])[0, 0].numpy()
                    steady = rh.erode(np.abs(warped_depth - depth[t]) < 1e-2, 1)
                moving = np.linalg.norm(mv, axis=-1) > 0.25     # still pixels would flatter the warp
                mask = torch.from_numpy(inside & steady & moving)
                assert mask.sum() > 20
                target = image[t]
                warp_err = (warped - target).abs().mean(0)[mask].mean().item()
                still_err = (image[t - 1] - target).abs().mean(0)[mask].mean().item()
                assert still_err > 0.01, f"{name} {group}: frames barely change; the test is void"
                assert warp_err < 0.3 * still_err, (
                    f"{name} {group} frame {t}: warped error {warp_err:.4f} vs unwarped {still_err:.4f}")


# ------------------------------------------------------------------------------ depth, normal


@pytest.mark.slow
@pytest.mark.parametrize("group", ["hr", "lr"])
def test_depth_is_planar_distance_and_normals_are_world_space(planes, group):
    width, height = HR_SIZE if group == "hr" else LR_SIZE
    data = _read(planes, group, "depth", "normal")
    depth, normal = data["depth"][0, ..., 0], data["normal"][0].astype(np.float32)

    # Analytic: intersect every pixel's ray with the floor (z=0) and the wall (y=6).
    rotation = rh.euler_xyz((70.0, 0.0, 12.0))
    origin = np.array([1.0, -6.0, 3.0])
    rays = rh.pixel_rays(width, height) @ rotation.T           # world directions, camera z = -1
    t_floor = np.where(rays[..., 2] < 0, -origin[2] / np.where(rays[..., 2] < 0, rays[..., 2], -1), np.inf)
    t_wall = np.where(rays[..., 1] > 0, (6.0 - origin[1]) / np.where(rays[..., 1] > 0, rays[..., 1], 1), np.inf)
    # The ray parameter is the planar depth: the camera-space direction has z = -1.
    expected = np.minimum(t_floor, t_wall)
    on_floor = t_floor < t_wall
    interior = rh.erode(np.isfinite(depth), 1)
    # Away from the floor/wall crease, where a pixel mixes two depths and two normals.
    crease = np.abs(t_floor - t_wall) / np.minimum(t_floor, t_wall) < 0.15
    check = interior & ~crease
    assert check.sum() > 0.5 * depth.size
    rel = np.abs(depth[check] - expected[check]) / expected[check]
    assert rel.max() < 2e-3, f"{group}: depth off by {rel.max():.2e} (relative)"
    # Radial distance would differ from planar depth by far more than that off-centre.
    radial = expected * np.linalg.norm(rh.pixel_rays(width, height), axis=-1)
    assert (np.abs(radial - expected)[check] / expected[check]).max() > 0.05

    floor_px, wall_px = check & on_floor, check & ~on_floor
    assert floor_px.sum() > 10 and wall_px.sum() > 10
    assert np.abs(normal[floor_px] - [0.0, 0.0, 1.0]).max() < 2e-3, f"{group}: floor normal is not (0,0,1)"
    assert np.abs(normal[wall_px] - [0.0, -1.0, 0.0]).max() < 2e-3, f"{group}: wall normal is not (0,-1,0)"
    assert np.allclose(np.linalg.norm(normal[np.isfinite(depth)], axis=-1), 1.0, atol=2e-3)


# ------------------------------------------------------------------------------------ aliased


@pytest.mark.slow
def test_aliased_lr_samples_jittered_pixel_centres_and_motion_excludes_jitter(trucking_aliased):
    seq = trucking_aliased
    lr = seq["lr"]
    jitter = np.array(lr.attrs["jitter"])
    assert jitter.shape == (4, 2) and len({tuple(j) for j in jitter}) == 4
    assert np.all(np.abs(jitter) < 0.5)
    width, height = LR_SIZE
    pixel = 10.0 / rh.focal_pixels(width)               # world units per LR pixel on the plane
    data = lr.read_many(["image", "motion"])
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    for t in range(lr.num_frames):
        camera_x = 0.1 * (1 + t)
        where_x = camera_x + (xs + jitter[t, 0] - width / 2) * pixel
        where_y = -(ys + jitter[t, 1] - height / 2) * pixel
        image = data["image"][t].astype(np.float32)
        err = max(np.abs(image[..., 0] - where_x).max(), np.abs(image[..., 1] - where_y).max()) / pixel
        # float16 storage alone allows ~0.01 px here; a sample anywhere in the pixel would be 0.5.
        assert err < 0.03, f"frame {t}: the sample is {err:.3f} px from centre + jitter"
        # The camera trucks +0.1 per frame: content was 0.1 to the right at t-1; no jitter in it.
        assert np.abs(data["motion"][t] - [0.1 / pixel, 0.0]).max() < TOLERANCE_PX
    hr_motion = seq["hr"].read("motion")
    assert np.abs(hr_motion - [0.1 / (10.0 / rh.focal_pixels(HR_SIZE[0])), 0.0]).max() < TOLERANCE_PX
    assert seq["hr"].attrs.get("jitter") is None


@pytest.mark.slow
@pytest.mark.parametrize("group", ["hr", "lr"])
def test_orthographic_camera_motion_is_exact_still_or_moving(orthographic, group):
    # Measured on 5.3.0: a still orthographic camera and a trucking one both get the exact Vector
    # (on 5.0.1 the trucking one was off by tens of pixels, so gbuf refused every one).
    still, card_step, trucking, cam_step = orthographic
    width = HR_SIZE[0] if group == "hr" else LR_SIZE[0]
    ppu = width / ORTHO_SCALE            # pixels per world unit; world y up, image y down
    card_expected = np.array([-card_step[0] * ppu, card_step[1] * ppu])
    world_expected = np.array([cam_step[0] * ppu, -cam_step[1] * ppu])
    still_data = _read(still, group, "motion", "depth")
    moving_data = _read(trucking, group, "motion")
    for t in range(still[group].num_frames):
        depth = still_data["depth"][t, ..., 0]
        card = rh.erode(np.abs(depth - 8.0) < 1e-3, 2)
        floor = rh.erode(np.abs(depth - 10.0) < 1e-3, 3)
        assert card.sum() > 10 and floor.sum() > 10
        motion = still_data["motion"][t]
        assert np.abs(motion[card] - card_expected).max() < TOLERANCE_PX, f"frame {t}: card"
        assert np.abs(motion[floor]).max() < TOLERANCE_PX, f"frame {t}: the still floor moves"
        err = np.abs(moving_data["motion"][t] - world_expected).max()
        assert err < TOLERANCE_PX, f"frame {t} {group}: trucking orthographic camera off by {err:.3f} px"


@pytest.mark.slow
@pytest.mark.parametrize("animated", ["ortho_scale", "shift_x"])
def test_orthographic_zoom_or_shift_is_refused_before_writing(tmp_path, animated):
    # Measured on 5.3.0: Cycles leaves Vector at zero while an orthographic camera's scale or
    # lens shift is animated (the image zooms or slides), so gbuf refuses, naming the frame.
    from gbuf.errors import GbufError

    rh.new_scene((1, 3))
    cam = rh.add_camera((0.0, 0.0, 10.0), ortho_scale=ORTHO_SCALE)
    rh.add_plane(40.0, material=rh.emission_material("Floor", "noise", scale=2.0))
    start = getattr(cam.data, animated)
    rh.key_linear(cam.data, animated, {2: start, 3: start + 0.25})
    blend = rh.save(tmp_path / "zoom.blend")
    with pytest.raises(GbufError, match=r"changes its orthographic scale or lens shift \(frame 3\)"):
        _render(blend, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
    # Without motion there is nothing wrong to write.
    seq = _render(blend, tmp_path / "nomotion.zarr", passes=["image", "depth"])
    assert seq["hr"].num_frames == 3
