"""Setting a loaded scene up for gbuf: passes, Cycles settings, device, EXR output (bpy).

Everything here changes the scene in memory only; the .blend is never saved.
"""

from __future__ import annotations

from gbuf.errors import GbufError
from gbuf.render import convert
from gbuf.render.settings import (
    ADAPTIVE_MAX_SAMPLES,
    ADAPTIVE_THRESHOLD,
    DEVICES,
    LIGHT_PATHS,
    RenderSettings,
)

#: View-layer switch of every EXR layer gbuf reads (Combined is always on).
PASS_SWITCHES = {
    "Combined": "use_pass_combined",
    "Depth": "use_pass_z",
    "Normal": "use_pass_normal",
    "Vector": "use_pass_vector",
    "Diffuse Color": "use_pass_diffuse_color",
    "Glossy Color": "use_pass_glossy_color",
    "Emission": "use_pass_emit",
    "Environment": "use_pass_environment",
}


def needed_layers(buffers) -> set[str]:
    """EXR layers to render for ``buffers`` (the film is transparent when ``alpha`` is asked)."""
    layers = {"Combined"}
    for name in buffers:
        layers.update(convert.LAYERS[name])
    if transparent_film(buffers):
        layers.add("Environment")
    return layers


def transparent_film(buffers) -> bool:
    return "alpha" in buffers


def enable_passes(view_layer, layers: set[str]) -> None:
    """Turn on exactly the passes gbuf reads; every other pass is off (less to render and write)."""
    for attr in dir(view_layer):
        if attr.startswith("use_pass_") and isinstance(getattr(view_layer, attr), bool):
            setattr(view_layer, attr, False)
    for attr in dir(view_layer.cycles):
        if attr.startswith("use_pass_") and isinstance(getattr(view_layer.cycles, attr), bool):
            setattr(view_layer.cycles, attr, False)
    view_layer.cycles.denoising_store_passes = False
    for name in layers:
        setattr(view_layer, PASS_SWITCHES[name], True)


def configure_scene(scene, settings: RenderSettings) -> None:
    """The settings shared by the HR and LR renders of every frame."""
    render = scene.render
    render.engine = "CYCLES"
    # Motion blur makes Cycles' Vector pass all zeros; real-time G-buffers have none either.
    render.use_motion_blur = False
    render.resolution_percentage = 100
    render.use_border = False
    render.use_single_layer = True      # only the active view layer
    render.use_compositing = False
    render.use_sequencer = False
    render.film_transparent = transparent_film(settings.buffers)
    # Keeps the synced scene (BVH, shaders) between the HR and LR renders and frames.
    render.use_persistent_data = True
    render.use_file_extension = True

    cycles = scene.cycles
    for key, value in LIGHT_PATHS.items():
        setattr(cycles, key, value)
    cycles.seed = int(settings.seed)
    cycles.use_animated_seed = True     # a new noise pattern each frame, as a real render sequence
    cycles.denoiser = "OPENIMAGEDENOISE"
    cycles.denoising_input_passes = "RGB_ALBEDO_NORMAL"
    cycles.denoising_prefilter = "ACCURATE"
    cycles.time_limit = 0.0

    image = render.image_settings
    # Blender 5: the media type first, then the format it allows.
    image.media_type = "MULTI_LAYER_IMAGE"
    image.file_format = "OPEN_EXR_MULTILAYER"
    image.color_depth = "32"            # depth and motion need float32
    image.exr_codec = "NONE"            # a temporary file: fastest to write and read

    configure_device(scene, settings.device)


def configure_device(scene, device: str) -> None:
    """CPU, or every GPU of the asked kind; a missing kind raises ``GbufError``."""
    import bpy

    kind = DEVICES[device]
    if kind is None:
        scene.cycles.device = "CPU"
        scene.cycles.denoising_use_gpu = False
        return
    prefs = bpy.context.preferences.addons["cycles"].preferences
    try:
        prefs.compute_device_type = kind
    except TypeError:
        raise GbufError(f"device {device!r}: this Blender build has no {kind} support") from None
    prefs.refresh_devices()
    found = [d for d in prefs.devices if d.type == kind]
    if not found:
        raise GbufError(f"device {device!r}: no {kind} device found on this machine")
    for d in prefs.devices:
        d.use = d.type == kind
    scene.cycles.device = "GPU"
    scene.cycles.denoising_use_gpu = True


def configure_resolution(scene, settings: RenderSettings, group: str) -> None:
    """Size, sampling, filter and denoising of the HR render or the LR render."""
    cycles = scene.cycles
    render = scene.render
    width, height = settings.hr_size if group == "hr" else settings.lr_size
    render.resolution_x, render.resolution_y = width, height
    if group == "lr" and settings.lr_mode == "aliased":
        # One sample per pixel: Cycles puts it at the pixel centre; the camera jitter moves it.
        cycles.samples = 1
        cycles.use_adaptive_sampling = False
        cycles.use_denoising = False
        cycles.pixel_filter_type = "BOX"
        cycles.filter_width = 1.0
        return
    if settings.samples is None:
        cycles.samples = ADAPTIVE_MAX_SAMPLES
        cycles.use_adaptive_sampling = True
        cycles.adaptive_threshold = ADAPTIVE_THRESHOLD
        cycles.adaptive_min_samples = 0
    else:
        cycles.samples = settings.samples
        cycles.use_adaptive_sampling = False
    cycles.use_denoising = settings.denoise
    cycles.pixel_filter_type = "BLACKMAN_HARRIS"
    cycles.filter_width = 1.5
