"""Blender scenes -> HR/LR G-buffer sequences (the only package, with ``gbuf.scenes``, that uses bpy).

``render(scene, output, ...)`` is the library form of ``gbuf render``. Importing
this package loads no bpy; the modules that need it import it when called:

* ``blend``: checking and safely opening a .blend (embedded scripts off by default)
* ``scenefiles``: glTF/FBX/OBJ/USD through Blender's importers; default lights
* ``camera_paths``: generated cameras (flythrough, walk, orbit), pure functions of file, seed and clip
* ``settings``: the options, checked before Blender starts; RDG light-path defaults
* ``passes``: passes, Cycles settings, device and EXR output of a loaded scene
* ``animation``: making frame ``start - 1`` exist so frame 0 has backward motion
* ``exr``: reading Blender's multilayer EXR with the OpenEXR package
* ``convert``: Blender's passes -> gbuf buffers (the conventions, measured)
* ``pipeline``: the render loop, resumable through ``gbuf.datasets.SequenceWriter``
* ``job``: ``render``/``render_scenes``, one call of ``gbuf render`` (a local store or a URL)
* ``publish``: rendering to a URL: a local working store, pushed when complete
* ``blocks``: shard-aligned blocks of frames, run as separate processes or Ray tasks
* ``recipes``: the procedural scene recipes (``gbuf/scenes/``)
* ``spec``: dataset specs (TOML: scenes, cameras, clips, split), read and checked without bpy
* ``dataset_build``: ``build_dataset``, a whole spec into one store with its split recorded
"""

from __future__ import annotations

from gbuf.render.job import RenderRun, render, render_scenes
from gbuf.render.pipeline import RenderResult
from gbuf.render.settings import RenderSettings, ScaleOut, make_settings

__all__ = ["RenderResult", "RenderRun", "RenderSettings", "ScaleOut", "make_settings", "render", "render_scenes"]
