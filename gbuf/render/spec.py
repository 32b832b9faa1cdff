"""Dataset specs: one TOML file that says which scenes, cameras, clips and split make a dataset.

``load_spec(path)`` reads and checks a spec (no bpy, nothing rendered) and returns a
``DatasetSpec`` whose ``sequences`` list every sequence the dataset holds, in order;
``gbuf.render.dataset_build.build_dataset`` renders them (``gbuf dataset build``).
docs/datasets.md documents the file; ``examples/small_spec.toml`` is one.

A spec::

    name = "small"                 # optional, recorded in the store

    [render]                       # the options of `gbuf render`, for every sequence
    resolution = "64x32"           # HR, WIDTHxHEIGHT
    scale = 4
    samples = 2                    # leave out for adaptive sampling
    denoise = false
    passes = ["image", "depth", "normal", "motion", "brdf"]
    lr_mode = "render"
    frames_per_shard = 2           # leave out for the writer's choice

    [clips]                        # defaults of every source
    camera = "auto"                # gbuf.render.scenefiles.CAMERA_MODES
    clips = 2                      # clips per scene
    frames = 2                     # frames per clip

    [[sources]]
    recipe = "default"             # a scene recipe (`gbuf scene list`) ...
    seeds = [0, 1]                 # ... one scene per seed (or seed_range = [0, 10]: 0..9)
    split = "train"

    [[sources]]
    file = "levels/hall.glb"       # ... or a scene file, relative to the spec
    camera = "flythrough"
    split = "test"

Rules (each broken one is a one-line ``GbufError`` naming the spec file):

* Unknown keys are refused (the house loader ``gbuf.config_files``), so are values of the
  wrong type, a source with both or neither of ``recipe`` and ``file``, an unknown recipe, a
  missing or unreadable scene file, zero clips or frames, an unknown camera mode.
* **A scene** is a recipe with one seed (seeds change a recipe's layout and materials), or a
  scene file whatever the seed (seeds only change its camera paths and noise). Each scene
  belongs to exactly one split, so no scene leaks from train into val or test: one listed in
  two splits is refused, and so is one listed twice.
* **Sequence names**: ``<name>-s<seed>-c<clip>``, where ``<name>`` is the source's ``name``,
  else the recipe's name, else the file's stem (characters other than letters, digits,
  ``_ . -`` become ``_``). Two sources that would make the same name are refused.
* **Clip k** of a scene renders Blender frames ``first_frame + k * frames`` to
  ``first_frame + (k + 1) * frames - 1`` (``first_frame``: 1 unless the source says). With a
  generated camera (``flythrough``, ``walk``, ``orbit``) it also gets its own camera path,
  drawn for clip index k; with ``keep`` (the scene's own animated camera, what recipes
  have) clip k is the k-th window of that animation: consecutive, non-overlapping parts
  of one shot, each its own sequence (the pipeline is asked for clip 0: the camera is the
  scene's). A recipe is built with enough frames for all its clips
  (``first_frame - 1 + clips * frames``).
* ``camera = "auto"`` is resolved here where it can be: a recipe or a .blend keeps its own
  camera (``keep``; a .blend without one is then refused by the render: name a generated
  mode for it, as ``gbuf render``'s auto would fly through it). For an imported file it stays ``auto`` (the pipeline keeps an animated
  camera, else flies through), which is refused with more than one clip: say which.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from gbuf import config_files
from gbuf.datasets import format as fmt
from gbuf.errors import GbufError
from gbuf.render.settings import RenderSettings, make_settings

#: The splits a spec assigns scenes to (``gbuf.datasets.format.SPLITS``).
SPLITS = fmt.SPLITS


@dataclasses.dataclass
class RenderSpec:
    """``[render]``: the render settings of every sequence (those of ``gbuf render``)."""

    #: HR size, ``WIDTHxHEIGHT``.
    resolution: str = "1920x1080"
    #: LR = HR / scale.
    scale: int = 4
    #: Fixed samples per pixel; leave out for adaptive sampling (max 1000, threshold 0.01).
    samples: int | None = None
    denoise: bool = True
    passes: list[str] = dataclasses.field(default_factory=lambda: list(fmt.RDG_BUFFERS))
    lr_mode: Literal["render", "aliased"] = "render"
    device: str = "cpu"
    #: Frames per shard of each new sequence; leave out for the writer's choice.
    frames_per_shard: int | None = None


@dataclasses.dataclass
class ClipDefaults:
    """``[clips]``: what a source that does not say gets."""

    #: Camera mode (``gbuf.render.scenefiles.CAMERA_MODES``).
    camera: str = "auto"
    #: Clips per scene.
    clips: int = 1
    #: Frames per clip.
    frames: int = 48


@dataclasses.dataclass
class _SpecFile:
    """The top level of a spec file, less ``[[sources]]`` (read one by one: a list of tables)."""

    name: str = ""
    render: RenderSpec = dataclasses.field(default_factory=RenderSpec)
    clips: ClipDefaults = dataclasses.field(default_factory=ClipDefaults)


@dataclasses.dataclass
class SourceSpec:
    """One ``[[sources]]`` table: a recipe with its seeds, or a scene file."""

    #: A scene recipe (``gbuf scene list``) ...
    recipe: str = ""
    #: ... or a scene file (.blend, .glb, .fbx, ...), relative to the spec file.
    file: str = ""
    #: The sequence names' stem (default: the recipe's name or the file's stem).
    name: str = ""
    #: Seeds, one scene each for a recipe (default: [0]).
    seeds: list[int] = dataclasses.field(default_factory=list)
    #: ``[start, stop]``: seeds start..stop-1 (as Python's ``range``); instead of ``seeds``.
    seed_range: list[int] = dataclasses.field(default_factory=list)
    #: Camera mode, clips per scene and frames per clip (default: ``[clips]``).
    camera: str | None = None
    clips: int | None = None
    frames: int | None = None
    #: Blender frame of clip 0's first frame.
    first_frame: int = 1
    split: Literal["train", "val", "test"] = "train"


@dataclasses.dataclass(frozen=True)
class SequencePlan:
    """One sequence of a dataset: which scene, seed, clip, camera and frames, and its split."""

    name: str
    split: str
    source: int                  # index of its ``[[sources]]`` table
    kind: Literal["recipe", "file"]
    scene: str                   # the recipe's name, or the scene file's absolute path
    seed: int
    clip: int
    camera: str
    frames: tuple[int, int]      # Blender frames, inclusive
    recipe_frames: int | None    # a recipe: the frames it is built with (1..N)

    def to_attrs(self) -> dict:
        """What the store records of this sequence (``dataset_spec.sequences[name]``)."""
        out = dataclasses.asdict(self)
        out["frames"] = list(self.frames)
        del out["name"]
        return out


@dataclasses.dataclass
class DatasetSpec:
    """A checked spec: its settings and every sequence it makes (``load_spec``)."""

    path: Path
    name: str
    render: RenderSpec
    clips: ClipDefaults
    sources: list[SourceSpec]
    #: Render settings shared by every sequence (each sequence's seed is set per sequence).
    settings: RenderSettings
    sequences: list[SequencePlan]

    @property
    def splits(self) -> dict[str, list[str]]:
        """``{"train": [names], "val": [...], "test": [...]}`` (every split, empty ones too)."""
        return {split: [s.name for s in self.sequences if s.split == split] for split in SPLITS}

    @property
    def frames_total(self) -> int:
        return sum(s.frames[1] - s.frames[0] + 1 for s in self.sequences)

    def settings_for(self, plan: SequencePlan) -> RenderSettings:
        """The render settings of one sequence (its seed is the scene's)."""
        return dataclasses.replace(self.settings, seed=plan.seed)

    def identity(self) -> dict:
        """What decides the dataset's pixels and split: rendering settings and every sequence."""
        settings = self.settings.to_attrs()
        settings.pop("seed")
        return {"render_settings": settings, "frames_per_shard": self.render.frames_per_shard,
                "sequences": {s.name: s.to_attrs() for s in self.sequences}}

    def sha256(self) -> str:
        """A hash of ``identity()``: equal for specs that make the same dataset (comments, order of
        keys and the spec's location do not count, except through scene files' absolute paths)."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).lstrip(".") or "scene"


def _seeds(source: SourceSpec, where: str) -> list[int]:
    if source.seeds and source.seed_range:
        raise GbufError(f"{where}: give seeds or seed_range, not both")
    if source.seed_range:
        if len(source.seed_range) != 2 or source.seed_range[1] <= source.seed_range[0]:
            raise GbufError(f"{where}.seed_range must be [start, stop] with stop > start "
                            f"(seeds start..stop-1), got {source.seed_range}")
        seeds = list(range(source.seed_range[0], source.seed_range[1]))
    else:
        seeds = list(source.seeds) or [0]
    if any(s < 0 for s in seeds):
        raise GbufError(f"{where}: seeds must be >= 0, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise GbufError(f"{where}.seeds names a seed twice: {seeds}")
    return seeds


def _read_sources(raw, path: Path) -> list[SourceSpec]:
    if raw is None:
        raise GbufError(f"{path}: no [[sources]]; a spec names at least one recipe or scene file")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise GbufError(f"{path}: sources must be a list of tables ([[sources]]), got {raw!r}")
    out = []
    for i, table in enumerate(raw):
        if not isinstance(table, dict):
            raise GbufError(f"{path}: sources[{i}] must be a table, got {table!r}")
        out.append(config_files.overlay(SourceSpec(), table, str(path), f"sources[{i}]."))
    return out


def _settings(render: RenderSpec, path: Path) -> RenderSettings:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", render.resolution)
    if not match:
        raise GbufError(f"{path}: render.resolution {render.resolution!r}: expected WIDTHxHEIGHT, e.g. 1920x1080")
    if render.frames_per_shard is not None and render.frames_per_shard < 1:
        raise GbufError(f"{path}: render.frames_per_shard must be >= 1, got {render.frames_per_shard}")
    try:
        return make_settings(resolution=(int(match.group(1)), int(match.group(2))), scale=render.scale,
                             samples=render.samples, denoise=render.denoise, lr_mode=render.lr_mode,
                             device=render.device.lower(), passes=render.passes, seed=0)
    except GbufError as err:
        raise GbufError(f"{path}: [render] {err}") from None


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and check the spec at ``path`` (TOML; see the module docstring); nothing is rendered.

    Every problem is a one-line ``GbufError`` naming ``path``.
    """
    from gbuf.render import recipes, scenefiles

    path = Path(path)
    if path.suffix.lower() != ".toml":
        raise GbufError(f"{path}: a dataset spec is a .toml file")
    data = config_files.read_config_file(path)
    known = sorted({f.name for f in dataclasses.fields(_SpecFile)} | {"sources"})
    for key in data:  # the house loader's message, with [[sources]] among the known keys
        if key not in known:
            raise GbufError(f"{path}: unknown option {key} (known here: {', '.join(known)})")
    raw_sources = data.pop("sources", None)
    top = config_files.overlay(_SpecFile(), data, str(path))
    sources = _read_sources(raw_sources, path)
    settings = _settings(top.render, path)
    defaults = top.clips
    known_recipes = None
    folder = path.resolve().parent

    sequences: list[SequencePlan] = []
    scenes: dict[tuple, tuple[int, str]] = {}     # scene -> (source index, split)
    names: dict[str, int] = {}
    for i, source in enumerate(sources):
        where = f"{path}: sources[{i}]"
        if bool(source.recipe) == bool(source.file):
            raise GbufError(f"{where}: give recipe = NAME or file = PATH (exactly one)")
        camera = defaults.camera if source.camera is None else source.camera
        clips = defaults.clips if source.clips is None else source.clips
        frames = defaults.frames if source.frames is None else source.frames
        if camera not in scenefiles.CAMERA_MODES:
            raise GbufError(f"{where}.camera {camera!r}: expected one of {', '.join(scenefiles.CAMERA_MODES)}")
        if clips < 1:
            raise GbufError(f"{where}: clips must be >= 1, got {clips} (a scene gives at least one clip)")
        if frames < 1:
            raise GbufError(f"{where}: frames (per clip) must be >= 1, got {frames}")
        seeds = _seeds(source, where)
        recipe_frames = None
        if source.recipe:
            known_recipes = known_recipes or recipes.names()
            if source.recipe not in known_recipes:
                raise GbufError(f"{where}.recipe {source.recipe!r}: unknown scene recipe; known: "
                                f"{', '.join(known_recipes)}")
            if source.first_frame < 1:
                raise GbufError(f"{where}.first_frame must be >= 1 for a recipe (its frames run 1..N)")
            kind, scene, stem = "recipe", source.recipe, source.name or source.recipe
            recipe_frames = source.first_frame - 1 + clips * frames
            keys = [(("recipe", scene, seed), f"recipe {scene} seed {seed}") for seed in seeds]
        else:
            file = Path(source.file).expanduser()
            file = file if file.is_absolute() else folder / file
            try:
                scenefiles.check_scene_file(file)
            except GbufError as err:
                raise GbufError(f"{where}.file: {err}") from None
            kind, scene, stem = "file", str(file.resolve()), source.name or file.stem
            if camera == "auto" and not scenefiles.is_blend(file) and clips > 1:
                # auto keeps an imported file's camera only when it is animated, which only
                # opening it tells; kept, it is one shot, while clips > 1 need to know now.
                raise GbufError(f"{where}: camera auto with {clips} clips of an imported file: say camera = "
                                f"\"keep\" (clips are windows of its own animation) or flythrough, walk or orbit")
            # A file is one scene whatever the seed: its seeds only move the camera.
            keys = [(("file", scene), f"scene file {source.file}")]
        stem = _stem(stem)
        if camera == "auto" and (kind == "recipe" or scenefiles.is_blend(scene)):
            camera = "keep"  # what auto does for a scene authored for rendering: its own camera
        for key, label in keys:
            if key in scenes:
                other, split = scenes[key]
                if split != source.split:
                    raise GbufError(f"{path}: {label} is in two splits: {split} (sources[{other}]) and "
                                    f"{source.split} (sources[{i}]); a scene belongs to one split")
                raise GbufError(f"{path}: {label} is listed twice (sources[{other}] and sources[{i}])")
            scenes[key] = (i, source.split)
        for seed in seeds:
            for k in range(clips):
                name = f"{stem}-s{seed}-c{k}"
                fmt.check_name(name, f"{where}", "sequence")
                if name in names:
                    raise GbufError(f"{path}: sources[{names[name]}] and sources[{i}] both make sequence "
                                    f"{name!r}; give one of them a name = \"...\"")
                names[name] = i
                start = source.first_frame + k * frames
                sequences.append(SequencePlan(name=name, split=source.split, source=i, kind=kind, scene=scene,
                                              seed=seed, clip=k, camera=camera,
                                              frames=(start, start + frames - 1), recipe_frames=recipe_frames))
    return DatasetSpec(path=path, name=top.name, render=top.render, clips=defaults, sources=sources,
                       settings=settings, sequences=sequences)
