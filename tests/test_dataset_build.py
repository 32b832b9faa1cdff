"""gbuf dataset build: specs (loading, bad input), one store with the split recorded, resuming,
and train / eval choosing sequences by split.

One module-scoped build renders 14 tiny sequences (3 recipes x 2 seeds x 2 clips, plus a .blend
file with 2 orbit clips; 64x32 HR, x4, 1 spp, 2 frames each), interrupted once and resumed.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gbuf.errors import GbufError
from gbuf.render.spec import load_spec

REPO = Path(__file__).resolve().parents[1]

RENDER = """
[render]
resolution = "64x32"
scale = 4
samples = 1
denoise = false
frames_per_shard = 2
[clips]
clips = 2
frames = 2
"""

SOURCES = """
[[sources]]
recipe = "default"
seeds = [0, 1]
split = "train"
[[sources]]
recipe = "showroom"
seed_range = [0, 2]
split = "val"
[[sources]]
recipe = "bar"
seeds = [0, 1]
split = "test"
[[sources]]
file = "scenes/hall.blend"
camera = "orbit"
split = "test"
"""

TRAIN = [f"default-s{s}-c{c}" for s in (0, 1) for c in (0, 1)]
VAL = [f"showroom-s{s}-c{c}" for s in (0, 1) for c in (0, 1)]
TEST = [f"bar-s{s}-c{c}" for s in (0, 1) for c in (0, 1)] + ["hall-s0-c0", "hall-s0-c1"]


def _write(folder: Path, text: str, name: str = "spec.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The spec built into one store: cut short after 5 sequences, resumed, then built again."""
    pytest.importorskip("bpy")
    from gbuf.render import dataset_build, pipeline, recipes

    folder = tmp_path_factory.mktemp("dataset_build")
    (folder / "scenes").mkdir()
    recipes.build_blend("default", folder / "scenes" / "hall.blend", seed=5, frames=4)
    spec = _write(folder, 'name = "tiny"\n' + RENDER + SOURCES)
    store = folder / "ds.zarr"

    real, calls = pipeline.render, []

    def cut_short(*args, **kwargs):
        if len(calls) == 5:
            raise GbufError("interrupted (test)")
        calls.append(kwargs["sequence"])
        return real(*args, **kwargs)

    pipeline.render = cut_short
    try:
        with pytest.raises(GbufError, match="interrupted"):
            dataset_build.build_dataset(spec, store)
    finally:
        pipeline.render = real
    import gbuf.datasets as gd

    partial = gd.open(store)
    state = {"partial_sequences": partial.sequences, "partial_splits": partial.splits,
             "blends_kept": sorted(p.name for p in (store / ".gbuf" / "dataset-build").glob("*.blend"))}
    frames = []
    resumed = dataset_build.build_dataset(spec, store, frame_progress=lambda *a: frames.append(a))
    again = dataset_build.build_dataset(spec, store)
    return {"spec": spec, "store": store, "calls": calls, "resumed": resumed, "again": again,
            "frames": frames, **state}


# --------------------------------------------------------------------------- the build


@pytest.mark.blender
def test_spec_builds_one_store_with_the_split_recorded(built):
    import gbuf.datasets as gd

    ds = gd.open(built["store"])
    assert sorted(ds.sequences) == sorted(TRAIN + VAL + TEST)
    assert ds.splits == {"train": TRAIN, "val": VAL, "test": TEST}
    record = ds.spec_record
    assert record["sha256"] == load_spec(built["spec"]).sha256() and record["name"] == "tiny"
    assert record["sequences"]["bar-s1-c0"] == {
        "split": "test", "source": 2, "kind": "recipe", "scene": "bar", "seed": 1, "clip": 0, "camera": "keep",
        "frames": [1, 2], "recipe_frames": 4}
    assert gd.verify(built["store"]).ok
    # Clip k is frames 1 + 2k .. 2 + 2k of the recipe built with 4 frames; the seed is the scene's.
    for name in ("default-s1-c0", "default-s1-c1"):
        attrs = ds[name].attrs
        assert attrs["frame_range"] == ([1, 2] if name.endswith("c0") else [3, 4])
        assert attrs["render_settings"]["seed"] == 1
        assert (ds[name]["hr"].width, ds[name]["hr"].height, ds[name]["lr"].width) == (64, 32, 16)
    # The recipe's own camera runs on across the clips: consecutive windows of one shot.
    w2c = [ds[f"default-s0-c{c}"]["hr"].read_camera()["world_to_camera"] for c in (0, 1)]
    assert not np.allclose(w2c[0][-1], w2c[1][0])
    # A scene file with a generated camera: each clip its own path, drawn for its clip index.
    paths = [ds[f"hall-s0-c{c}"].attrs["camera_path"] for c in (0, 1)]
    assert [p["clip"] for p in paths] == [0, 1] and paths[0] != paths[1]
    # The recipes' .blend files are gone once the dataset is complete.
    assert not (built["store"] / ".gbuf" / "dataset-build").exists()


@pytest.mark.blender
def test_an_interrupted_build_resumes_and_a_finished_one_renders_nothing(built, gbuf_cli):
    # Cut short: what was rendered is there, and nothing claims the dataset is complete.
    assert sorted(built["partial_sequences"]) == sorted(built["calls"]) == sorted(TRAIN + ["showroom-s0-c0"])
    assert built["partial_splits"] == {}
    assert built["blends_kept"] == ["default-s0-f4.blend", "default-s1-f4.blend", "showroom-s0-f4.blend"]
    resumed = built["resumed"]
    assert len(resumed.complete) == 5 and len(resumed.rendered) == 9
    assert resumed.frames_rendered == 18 and resumed.per_split() == {"train": 4, "val": 4, "test": 6}
    frames = [call for call in built["frames"] if call[0] == "dataset"]
    assert frames[0] == ("dataset", 10, 28) and frames[-1] == ("dataset", 28, 28)
    assert [d for _, d, _ in frames] == sorted(d for _, d, _ in frames)  # the whole dataset's count never goes back
    again = built["again"]
    assert again.rendered == [] and again.frames_rendered == 0 and len(again.complete) == 14
    proc = gbuf_cli("dataset", "build", built["spec"], "-o", built["store"], "--quiet", check=True)
    assert "14 sequences (4 train, 4 val, 6 test): 0 rendered (0 frames), 14 already complete" in proc.stdout


@pytest.mark.blender
def test_a_changed_spec_does_not_silently_reuse_sequences(built, tmp_path):
    from gbuf.render.dataset_build import build_dataset

    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "hall.blend").write_bytes((built["spec"].parent / "scenes" / "hall.blend").read_bytes())
    spec = _write(tmp_path, RENDER.replace("samples = 1", "samples = 2") + SOURCES)
    with pytest.raises(GbufError, match=r"sequence 'default-s0-c0' exists with a different render settings"):
        build_dataset(spec, built["store"])


# --------------------------------------------------------------------------- train and eval by split


@pytest.mark.blender
@pytest.mark.slow
def test_train_uses_the_train_split_and_validates_on_val(built, tmp_path, caplog):
    import logging

    from train_helpers import tiny_config

    from gbuf.train import trainer

    c = tiny_config(built["store"], tmp_path / "run", iters=2, frames=2, patch=16, batch=1)
    c.run.val_every = 2
    c.data.val_frames = 1
    with caplog.at_level(logging.INFO, logger="gbuf"):
        result = trainer.train(c)
    assert result.train_sequences == TRAIN and result.val_sequences == VAL
    assert "4 training / 4 validation sequence(s) (split 'train' / 'val')" in caplog.text
    logged = [json.loads(line) for line in (tmp_path / "run" / trainer.LOG_NAME).read_text().splitlines()]
    assert any(entry["step"] == 2 and any(k.startswith("val_") for k in entry) for entry in logged)

    import gbuf.datasets as gd

    ds = gd.open(built["store"])
    c.data.train_split, c.data.val_split = "test", "train"
    assert trainer.split_sequences(ds, c.data) == (TEST, TRAIN)
    # Sequences named in the config win over the split.
    c.data.train_sequences, c.data.val_sequences = ["bar-s0-c0"], []
    assert trainer.split_sequences(ds, c.data) == (["bar-s0-c0"], TRAIN)


@pytest.mark.blender
def test_train_cli_takes_the_split_options(built, tmp_path, gbuf_cli):
    from gbuf.train import trainer

    # Resolving only (no training): --split and --val-split reach the configuration.
    c = trainer.resolve_config(overrides={"data.path": str(built["store"]), "data.train_split": "val",
                                          "data.val_split": "test"})
    assert (c.data.train_split, c.data.val_split) == ("val", "test")
    with pytest.raises(GbufError, match="data.train_split and data.val_split must differ"):
        trainer.resolve_config(overrides={"data.train_split": "val"})
    proc = gbuf_cli("train", "rdg-s", "--data", built["store"], "--split", "nope")
    assert proc.returncode == 2 and "nope" in proc.stderr


@pytest.mark.blender
def test_eval_scores_the_test_split_by_default(built):
    from gbuf.train import evaluate

    report = evaluate.evaluate([("bicubic", None)], built["store"], vmaf="off")
    assert report.sequences == TEST and report.split == "test"
    report = evaluate.evaluate([("bicubic", None)], built["store"], split="val", vmaf="off")
    assert report.sequences == VAL and report.split == "val"
    report = evaluate.evaluate([("bicubic", None)], built["store"], sequences=["default-s0-c0"], vmaf="off")
    assert report.sequences == ["default-s0-c0"] and report.split is None
    with pytest.raises(GbufError, match="not both"):
        evaluate.evaluate([("bicubic", None)], built["store"], sequences=["default-s0-c0"], split="val")


def test_stores_without_a_split_behave_as_before(tmp_path):
    import gbuf.datasets as gd
    from train_helpers import synthetic_store

    from gbuf.train import config as cfg
    from gbuf.train import evaluate, trainer

    store = synthetic_store(tmp_path, sequences=3, frames=2, height=16, width=16)
    ds = gd.open(store)
    assert ds.splits == {} and ds.spec_record is None
    names = ds.sequences
    assert trainer.split_sequences(ds, cfg.DataConfig()) == (names[:-1], names[-1:])
    assert evaluate.select_sequences(ds) == (names, None)
    with pytest.raises(GbufError, match="records no split"):
        evaluate.select_sequences(ds, split="test")


def test_the_split_record_is_validated(tmp_path):
    import gbuf.datasets as gd
    from train_helpers import synthetic_store

    store = synthetic_store(tmp_path, sequences=3, frames=2, height=16, width=16)
    ds = gd.open(store, mode="r+")
    a, b, c = ds.sequences
    record = {"sha256": "0" * 64, "sequences": {}}
    for splits, problem in [
        ({"train": [a, b], "val": [b], "test": []}, f"lists '{b}', which is already in train"),
        ({"train": [a], "val": [], "test": [], "holdout": [c]}, "splits.holdout is not a split"),
        ({"train": [a, "nope"], "val": [], "test": []}, "'nope', which is not a sequence"),
        ({"train": a, "val": [], "test": []}, "splits.train must be a list"),
    ]:
        with pytest.raises(GbufError, match=problem):
            ds.write_splits(splits, record)
    with pytest.raises(GbufError, match="dataset_spec.sha256"):
        ds.write_splits({"train": [a], "val": [b], "test": [c]}, {"sha256": "x", "sequences": {}})
    assert gd.open(store).splits == {}
    ds.write_splits({"train": [a], "val": [b], "test": [c]}, record)
    assert gd.open(store).splits == {"train": [a], "val": [b], "test": [c]}
    with pytest.raises(GbufError, match="read-only"):
        gd.open(store).write_splits({"train": [a], "val": [], "test": []}, record)


# --------------------------------------------------------------------------- specs and bad input


def test_a_spec_lists_every_sequence_with_its_split_and_frames(tmp_path):
    (tmp_path / "levels").mkdir()
    (tmp_path / "levels" / "hall.glb").write_bytes(b"glTF")
    spec = load_spec(_write(tmp_path, """
        [render]
        resolution = "64x32"
        [clips]
        clips = 3
        frames = 4
        [[sources]]
        recipe = "bar"
        seed_range = [2, 4]
        clips = 1
        split = "val"
        [[sources]]
        file = "levels/hall.glb"
        name = "lobby"
        seeds = [7]
        camera = "flythrough"
        first_frame = 10
        split = "test"
        """))
    assert [s.name for s in spec.sequences] == ["bar-s2-c0", "bar-s3-c0", "lobby-s7-c0", "lobby-s7-c1", "lobby-s7-c2"]
    assert spec.splits == {"train": [], "val": ["bar-s2-c0", "bar-s3-c0"],
                           "test": ["lobby-s7-c0", "lobby-s7-c1", "lobby-s7-c2"]}
    lobby = spec.sequences[3]
    assert (lobby.frames, lobby.camera, lobby.seed, lobby.kind) == ((14, 17), "flythrough", 7, "file")
    assert lobby.scene == str((tmp_path / "levels" / "hall.glb").resolve())
    assert spec.sequences[0].recipe_frames == 4 and spec.settings.resolution == (64, 32)
    assert spec.settings_for(spec.sequences[1]).seed == 3
    assert spec.frames_total == 2 * 4 + 3 * 4
    # The hash follows what the dataset holds, not the file's comments or layout.
    before = spec.sha256()
    path = tmp_path / "spec.toml"
    path.write_text("# a comment\n" + path.read_text())
    assert load_spec(path).sha256() == before


def test_the_example_specs_load():
    examples = sorted((REPO / "examples").glob("*spec*.toml"))
    assert examples
    for path in examples:
        spec = load_spec(path)
        assert spec.sequences and all(spec.splits.values()), path


@pytest.mark.parametrize("text, problem", [
    ('[render]\nresolutoin = "64x32"\n' + SOURCES, r"unknown option render\.resolutoin"),
    ('colour = 1\n' + SOURCES, r"unknown option colour \(known here: clips, name, render, sources\)"),
    ('[[sources]]\nrecipe = "bar"\nsede = 3\n', r"unknown option sources\[0\]\.sede"),
    ('[[sources]]\nrecipe = "bar"\nseeds = [0, 1]\nsplit = "train"\n'
     '[[sources]]\nrecipe = "bar"\nseeds = [1]\nsplit = "test"\n',
     r"recipe bar seed 1 is in two splits: train \(sources\[0\]\) and test \(sources\[1\]\)"),
    ('[[sources]]\nrecipe = "bar"\n[[sources]]\nrecipe = "bar"\nname = "b2"\n', r"recipe bar seed 0 is listed twice"),
    ('[[sources]]\nfile = "scenes/hall.blend"\nsplit = "train"\n'
     '[[sources]]\nfile = "./scenes/../scenes/hall.blend"\nname = "h2"\nsplit = "val"\n',
     r"scene file ./scenes/../scenes/hall.blend is in two splits"),
    ('[[sources]]\nfile = "scenes/missing.glb"\n', r"sources\[0\]\.file: .*missing\.glb: no such file"),
    ('[[sources]]\nrecipe = "castle"\n', r"sources\[0\]\.recipe 'castle': unknown scene recipe"),
    ('[[sources]]\nrecipe = "bar"\nclips = 0\n', r"sources\[0\]: clips must be >= 1"),
    ('[clips]\nframes = 0\n[[sources]]\nrecipe = "bar"\n', r"frames \(per clip\) must be >= 1"),
    ('[[sources]]\nrecipe = "bar"\nfile = "x.glb"\n', r"give recipe = NAME or file = PATH"),
    ('[[sources]]\nrecipe = "bar"\ncamera = "drone"\n', r"camera 'drone': expected one of"),
    ('[[sources]]\nrecipe = "bar"\nsplit = "holdout"\n', r"sources\[0\]\.split must be one of train, val, test"),
    ('[[sources]]\nrecipe = "bar"\nseeds = [1]\nseed_range = [0, 2]\n', r"seeds or seed_range, not both"),
    ('[[sources]]\nfile = "scenes/hall.glb"\nclips = 2\n', r"camera auto with 2 clips of an imported file"),
    ('[render]\nresolution = "63x32"\n[[sources]]\nrecipe = "bar"\n', r"\[render\] resolution 63x32: not divisible"),
    ('name = "x"\n', r"no \[\[sources\]\]"),
    ('[[sources]]\nrecipe = "bar"\n[[sources]]\nrecipe = "default"\nname = "bar"\n',
     r"sources\[0\] and sources\[1\] both make sequence 'bar-s0-c0'"),
])
def test_bad_specs_are_one_line_naming_the_file(tmp_path, text, problem):
    (tmp_path / "scenes").mkdir()
    (tmp_path / "scenes" / "hall.blend").write_bytes(b"BLENDER-v500")
    (tmp_path / "scenes" / "hall.glb").write_bytes(b"glTF")
    path = _write(tmp_path, text)
    with pytest.raises(GbufError) as err:
        load_spec(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert __import__("re").search(problem, message), message


def test_cli_bad_spec_exits_2_and_writes_nothing(tmp_path, gbuf_cli):
    spec = _write(tmp_path, '[[sources]]\nrecipe = "bar"\nseeds = [0]\nsplit = "train"\n'
                            '[[sources]]\nrecipe = "bar"\nseeds = [0]\nsplit = "val"\n')
    proc = gbuf_cli("dataset", "build", spec, "-o", tmp_path / "ds.zarr")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "recipe bar seed 0 is in two splits" in proc.stderr
    assert str(spec) in proc.stderr and not (tmp_path / "ds.zarr").exists()
    # The same command in this process (no new interpreter): a missing spec, an output that is a file.
    from click.testing import CliRunner

    from gbuf.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["dataset", "build", str(tmp_path / "missing.toml"), "-o", str(tmp_path / "ds.zarr")])
    assert result.exit_code == 2 and "missing.toml: no such config file" in result.output
    (tmp_path / "file.zarr").write_text("")
    good = _write(tmp_path, '[[sources]]\nrecipe = "bar"\n', "good.toml")
    result = runner.invoke(main, ["dataset", "build", str(good), "-o", str(tmp_path / "file.zarr")])
    assert result.exit_code == 2 and "file.zarr: exists and is a file" in result.output
    assert not (tmp_path / "ds.zarr").exists()


# --------------------------------------------------------------------------- Ray


@pytest.mark.blender
def test_a_block_task_draws_the_path_of_the_clip_it_is_given(built, tmp_path, gbuf_cli):
    """``--ray`` runs every sequence as ``gbuf render --plan`` / ``--block K`` processes with
    ``--clip C``: such a process draws the very path the in-process build drew for that clip."""
    import gbuf.datasets as gd

    built_attrs = gd.open(built["store"])["hall-s0-c1"].attrs
    start, end = built_attrs["frame_range"]
    paths = {}
    for clip in (1, 0):
        store = tmp_path / f"clip{clip}.zarr"
        gbuf_cli("render", built["spec"].parent / "scenes" / "hall.blend", "-o", store, "--resolution", "64x32",
                 "--scale", "4", "--samples", "1", "--no-denoise", "--frames", f"{start}:{end}",
                 "--frames-per-shard", "2", "--camera", "orbit", f"--clip={clip}", "--sequence", "hall", "--plan",
                 check=True)
        paths[clip] = gd.open(store)["hall"].attrs["camera_path"]
    assert paths[1] == built_attrs["camera_path"]
    assert paths[0]["keyframes"] != paths[1]["keyframes"]


@pytest.mark.slow
@pytest.mark.blender
def test_ray_builds_the_clips_of_a_recipe_in_block_tasks(tmp_path):
    import os
    import subprocess
    import sys

    pytest.importorskip("ray", reason="ray is not installed (pip install 'gbuf[share]')")
    import gbuf.datasets as gd

    # One clip: a plan and a block task, each its own gbuf process with its own bpy (about 30 s).
    spec = _write(tmp_path, RENDER + '[[sources]]\nrecipe = "default"\nseeds = [3]\nclips = 1\nfirst_frame = 3\n'
                                     'split = "test"\n')
    store = tmp_path / "ds.zarr"
    # Ray sets RAY_AUTH_MODE in the process that first starts it; a CLI call starts from a clean slate.
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    proc = subprocess.run([sys.executable, "-m", "gbuf", "dataset", "build", str(spec), "-o", str(store),
                           "--quiet", "--ray"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "1 sequences (0 train, 0 val, 1 test): 1 rendered (2 frames)" in proc.stdout
    ds = gd.open(store)
    assert ds.splits == {"train": [], "val": [], "test": ["default-s3-c0"]}
    assert ds["default-s3-c0"].attrs["frame_range"] == [3, 4] and ds["default-s3-c0"].attrs["seed"] == 3
    assert gd.verify(store).ok
    assert not (store / ".gbuf" / "dataset-build").exists()
