"""``gbuf experiment run``: an experiment file end to end at a tiny size, its rerun, its errors.

One module-scoped run of ``experiments/tiny.toml`` (2 tiny renders, 2 models x 4 iterations,
the authors' RDG-s zero-shot, bicubic) serves every test that reads its output.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from gbuf.errors import GbufError
from gbuf.experiments import load_experiment, run_experiment
from gbuf.experiments.run import TIME_KINDS

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "experiments" / "tiny.toml"
AUTHORS = REPO.parent / "shared" / "reference" / "rdg" / "RDG_Small.pth"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    work = tmp_path_factory.mktemp("experiment") / "tiny"
    started = time.perf_counter()
    result = run_experiment(TINY, workdir=work)
    return result, time.perf_counter() - started


def test_the_experiment_runs_end_to_end(tiny):
    result, _ = tiny
    labels = [r.label for r in result.rows]
    expected = ["bicubic", "rdg-s", "rdg-s-image"] + (["rdg-s-authors"] if AUTHORS.is_file() else [])
    assert labels == expected
    assert result.test_sequences == ["default-s1-c0"] and result.train_sequences == ["default-s0-c0"]
    for row in result.rows:
        assert math.isfinite(row.average("psnr")) and row.average("psnr") > 0, row
        assert set(row.psnr) == set(result.test_sequences)
        assert row.latency_ms > 0 and row.params is not None
    rows = {r.label: r for r in result.rows}
    assert rows["bicubic"].params == 0 and rows["rdg-s"].params == 303_680
    assert rows["rdg-s-image"].inputs == ["image"] and rows["rdg-s"].kind == "trained"
    if AUTHORS.is_file():  # scored as they are (no claim on quality at 1 spp and 64x36)
        assert rows["rdg-s-authors"].kind == "zero-shot" and rows["rdg-s-authors"].weights == "params"
        assert Path(rows["rdg-s-authors"].checkpoint) == AUTHORS.resolve()
    else:
        assert any("rdg-s-authors: skipped" in n for n in result.notes)

    table = result.table.read_text()
    for label in labels:
        assert sum(line.startswith(f"| {label} ") for line in table.splitlines()) == 1, (label, table)
    assert "default-s1-c0 PSNR / SSIM" in table and "Average PSNR / SSIM" in table
    svg = ET.parse(result.plot).getroot()
    bars = [e for e in svg.iter() if e.tag.endswith("rect")]
    assert len(bars) == len(labels)

    # where the time went: every kind, in the table, the summary and the stage records
    assert set(result.timings) == set(TIME_KINDS)
    assert result.timings["render"] > 0 and result.timings["train"] > 0 and result.timings["eval"] > 0
    assert "Time by stage" in table and "render" in table
    summary = json.loads(result.summary.read_text())
    assert summary["timings"].keys() == set(TIME_KINDS) and summary["skipped"] == []
    record = json.loads((result.workdir / "stages" / "train-rdg-s.json").read_text())
    assert record["seconds"]["train"] > 0 and record["seconds"]["load"] >= 0

    # the image-only row trained a model that reads only the image
    ckpt = torch.load(result.workdir / rows["rdg-s-image"].checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["model_options"] == {"inputs": ["image"]}


def test_a_rerun_skips_every_finished_stage(tiny):
    result, first_seconds = tiny
    started = time.perf_counter()
    again = run_experiment(TINY, workdir=result.workdir)
    seconds = time.perf_counter() - started
    assert again.ran == [] and set(again.skipped) == set(result.ran)
    assert seconds < first_seconds / 2, (seconds, first_seconds)
    assert [(r.label, r.psnr) for r in again.rows] == [(r.label, r.psnr) for r in result.rows]
    assert again.timings == pytest.approx(result.timings)  # the recorded times, not this call's


def test_an_interrupted_training_resumes_from_its_checkpoint(tiny, tmp_path):
    result, _ = tiny
    work = tmp_path / "copy"
    shutil.copytree(result.workdir, work)
    # as if the run had stopped after its last checkpoint, before writing its result
    (work / "stages" / "train-rdg-s.json").unlink()
    again = run_experiment(TINY, workdir=work)
    assert again.ran == ["train-rdg-s"], again.ran  # its evaluation still holds: same run, same key
    record = json.loads((work / "stages" / "train-rdg-s.json").read_text())
    assert record["result"]["resumed"] is True and record["result"]["step"] == 4


def test_trainings_side_by_side_give_the_weights_of_trainings_one_by_one(tiny, tmp_path):
    result, _ = tiny
    work = tmp_path / "jobs"
    shutil.copytree(result.workdir, work)
    for label in ("rdg-s", "rdg-s-image"):  # as if neither had trained: no record, no checkpoint
        (work / "stages" / f"train-{label}.json").unlink()
        shutil.rmtree(work / "runs" / label)
    text = TINY.read_text().replace("../../shared", str(REPO.parent / "shared"))
    assert "[run]" not in text
    side_by_side = tmp_path / "tiny.toml"
    side_by_side.write_text(text + "\n[run]\njobs = 2\n")
    again = run_experiment(side_by_side, workdir=work)
    assert sorted(again.ran) == ["train-rdg-s", "train-rdg-s-image"], again.ran
    for label in ("rdg-s", "rdg-s-image"):
        records = [json.loads((w / "stages" / f"train-{label}.json").read_text()) for w in (result.workdir, work)]
        one, two = (torch.load(w / r["result"]["checkpoint"], map_location="cpu", weights_only=True)
                    for w, r in zip((result.workdir, work), records))
        for name, tensor in one["params"].items():
            assert torch.equal(tensor, two["params"][name]), (label, name)
    # the evaluations recorded before still hold (same weights, same key): nothing else reran
    assert [(r.label, r.psnr) for r in again.rows] == [(r.label, r.psnr) for r in result.rows]


def test_changed_settings_are_refused_not_mixed(tiny, tmp_path):
    result, _ = tiny
    changed = tmp_path / "tiny.toml"
    changed.write_text(TINY.read_text().replace("iters = 4", "iters = 5"))
    # the init path is relative to the experiment file: keep it pointing at the same file
    changed.write_text(changed.read_text().replace("../../shared", str(REPO.parent / "shared")))
    with pytest.raises(GbufError, match=r"train-rdg-s.json: stage train-rdg-s finished with other settings "
                                        r"\(schedule.iters\)"):
        run_experiment(changed, workdir=result.workdir)


def test_bad_experiment_files_are_one_line_errors(tmp_path, gbuf_cli):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.read_text().replace("[budget]\n", "[budget]\nepochs = 3\n"))
    proc = gbuf_cli("experiment", "run", bad, "-o", tmp_path / "work")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{bad}: unknown option budget.epochs" in proc.stderr
    assert not (tmp_path / "work" / "stages").exists()

    for text, message in [
        (TINY.read_text().replace("[models.rdg-s]\n", "[models.rdg-s]\nmodel = \"rdg-xl\"\n"),
         r"models.rdg-s.model 'rdg-xl': unknown model"),
        (TINY.read_text().replace("[models.rdg-s-image]\n", "[models.rdg-s-image]\nlayers = 2\n"),
         r"unknown option models.rdg-s-image.layers"),
        (TINY.read_text().replace('split = "test"', 'split = "val"'), r"no source in split \"test\""),
        (TINY.read_text().replace('resolution = "64x36"', 'resolution = "64 by 36"'), r"\[dataset\].*resolution"),
        (TINY.read_text().replace("[budget]\n", "[budget]\nloss = { fft = \"big\" }\n"),
         r"budget: loss.fft must be a number, got 'big'"),
        (TINY.read_text().replace("[budget]\n", "[budget]\nloss = { ffft = 0.0 }\n"),
         r"budget: unknown option loss.ffft"),
        (TINY.read_text() + "\n[run]\njobs = 0\n", r"run.threads and run.jobs must be >= 1"),
    ]:
        bad.write_text(text)
        with pytest.raises(GbufError, match=message):
            load_experiment(bad)


def test_the_image_only_rdg_reads_no_g_buffer():
    from gbuf.train import inference, models

    torch.manual_seed(0)
    full, image_only = models.create("rdg-s"), models.create("rdg-s", inputs=["image"])
    image_only.load_state_dict(full.state_dict())  # same parameters, same state dict
    assert inference.model_buffers(image_only) == (["image"], ["image"])
    clip = inference.example_clip(full, (8, 12), frames=2)
    zeroed = {k: v if k == "image" else torch.zeros_like(v) for k, v in clip.items()}
    with torch.no_grad():
        assert torch.equal(image_only({"image": clip["image"]}), full(zeroed))
        assert not torch.equal(full(clip), full(zeroed))  # the G-buffers do reach the full model
    with pytest.raises(GbufError, match="rdg: inputs must hold image"):
        models.create("rdg-s", inputs=["depth"])


def test_the_dataset_may_be_a_spec_file_beside_the_experiment(tmp_path):
    text = TINY.read_text()
    start, end = text.index("[dataset]\n"), text.index("[budget]\n")
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "tiny_spec.toml").write_text(
        text[start:end].replace("[dataset]\n", "").replace("[dataset.", "[").replace("[[dataset.", "[["))
    exp_file = tmp_path / "exp.toml"
    exp_file.write_text(text[:start] + 'dataset = { spec = "specs/tiny_spec.toml" }\n\n' + text[end:])
    exp = load_experiment(exp_file)
    assert exp.spec_file == tmp_path / "specs" / "tiny_spec.toml"
    assert exp.dataset_spec().splits == load_experiment(TINY).dataset_spec().splits
    assert exp.resolve(exp.models["rdg-s-authors"].init) == tmp_path / "../../shared/reference/rdg/RDG_Small.pth"
    exp_file.write_text(text[:start] + 'dataset = { spec = "nowhere.toml" }\n\n' + text[end:])
    with pytest.raises(GbufError, match=r"dataset.spec: .*nowhere.toml: no such file"):
        load_experiment(exp_file)


def test_the_budget_s_loss_weights_and_a_row_s_iterations_reach_its_training(tmp_path):
    from gbuf.experiments import run as experiment_run

    changed = tmp_path / "tiny.toml"
    changed.write_text(TINY.read_text().replace("[budget]\n", "[budget]\nloss = { fft = 0.0, temporal = 0.5 }\n")
                       .replace("[models.rdg-s-image]\n", "[models.rdg-s-image]\niters = 3\n"))
    exp = load_experiment(changed)
    splits = {"train": ["a"], "test": ["b"]}
    for label, spec in exp.models.items():
        config = experiment_run._train_config(exp, label, spec, tmp_path / "data.zarr", splits, tmp_path)
        assert (config.loss.fft, config.loss.temporal, config.loss.charbonnier) == (0.0, 0.5, 1.0)
        # a row's own iterations (a costly model may get fewer), else the budget's
        assert config.schedule.iters == (3 if label == "rdg-s-image" else 4)
        # part of what decides the weights: a changed loss is a changed stage, never a silent mix
        assert experiment_run._trajectory(config)["loss.fft"] == 0.0


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_experiment_file_is_valid(path):
    exp = load_experiment(path)
    spec = exp.dataset_spec()
    assert spec.splits["test"] and exp.models
    train, test = set(spec.splits["train"]), set(spec.splits["test"])
    assert not train & test
    # held out means held out: no recipe of the test split is trained on (the smoke test's
    # tiny.toml holds out a seed of its one recipe; its numbers mean nothing)
    recipes = {s.name: s.scene for s in spec.sequences}
    if path.name != "tiny.toml":
        assert not {recipes[n] for n in train} & {recipes[n] for n in test}
