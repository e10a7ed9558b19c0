"""The style, shifts and PosNet recipes and the training command line on a tiny world."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.data.dataset import ReactDataset
from models.data.torch_windows import WindowDataset
from models.data.world import WorldConfig, make_world
from models.face import layout
from models.generator.checkpoint import load_generator
from models.generator.config import tiny_config
from models.generator.loss import diffusion_loss
from models.generator.predict import GeneratorPredictor
from models.generator.schedule import alphas_cumprod
from models.personal.checkpoint import load_personal
from models.personal.enrolment import enrol
from models.personal.hyper import to_shifts
from models.posnet.model import load_posnet
from models.train.__main__ import main as train_main
from models.train.generator import TrainGeneratorConfig, train_generator
from models.train.personal import TrainShiftsConfig, TrainStyleConfig, train_shifts, train_style
from models.train.posnet import TrainPosNetConfig, apply_posnet, train_posnet

TINY = dataclasses.replace(tiny_config(), context=12, prev=4)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("personal_world") / "world"
    make_world(WorldConfig(listeners=6, clips_per_listener=2, seconds=11, seed=2), root,
               progress=False, workers=1)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def runs(world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("personal_runs")
    train_generator(TrainGeneratorConfig(data_root=world, out_dir=base / "gen", generator=TINY,
                                         steps=40, batch_size=16, lr=3e-3, warmup=5, seed=0,
                                         device="cpu"), progress=False)  # fmt: skip
    style = train_style(TrainStyleConfig(data_root=world, out_dir=base / "style", steps=25,
                                         persons=4, device="cpu"), progress=False)  # fmt: skip
    shifts = train_shifts(TrainShiftsConfig(
        data_root=world, out_dir=base / "shifts", generator=base / "gen/generator.safetensors",
        style=base / "style/personal.safetensors", steps=60, batch_size=16, lr=3e-3, warmup=5,
        crops_per_clip=2, device="cpu"), progress=False)  # fmt: skip
    posnet = train_posnet(TrainPosNetConfig(
        data_root=world, out_dir=base / "posnet", generator=base / "gen/generator.safetensors",
        samples=4, val_samples=2, k=2, steps=40, batch_size=8, unroll=3, device="cpu"),
        progress=False)  # fmt: skip
    return {"base": base, "style": style, "shifts": shifts, "posnet": posnet}


def test_style_recipe_writes_a_style_only_checkpoint(runs: dict) -> None:
    summary = runs["style"]
    acc = summary["metrics"]["val_identification"]
    assert 0.0 <= acc <= 1.0 and summary["metrics"]["val_persons"] >= 2
    encoder, hyper, extra = load_personal(runs["base"] / "style/personal.safetensors")
    assert hyper is None and extra["recipe"] == "style" and extra["seed"] == 0
    styles = encoder(torch.rand(2, 250, layout.DIM))
    assert torch.allclose(styles.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_shifts_lower_the_loss_on_the_listeners_they_were_trained_on(world: Path,
                                                                     runs: dict) -> None:
    model, _ = load_generator(runs["base"] / "gen/generator.safetensors")
    encoder, hyper, extra = load_personal(runs["base"] / "shifts/personal.safetensors")
    assert hyper is not None and set(hyper.targets) == set(model.shift_targets())
    assert extra["recipe"] == "shifts" and extra["style_metrics"] is not None
    train = ReactDataset(world, "train")
    windows = WindowDataset(train, w=TINY.window, context=TINY.context, prev=TINY.prev)
    picks = list(range(0, len(windows), max(1, len(windows) // 48)))[:48]
    items = [windows[k] for k in picks]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if k not in ("index", "t")}
    rng = np.random.default_rng(0)
    factors = {}
    for i in sorted({int(it["index"]) for it in items}):
        factors[i] = enrol(encoder, hyper, train.history(i, 10.0, rng, same_clip_ok=True)).factors
    stacked = {name: (torch.stack([factors[int(it["index"])][name][0] for it in items]),
                      torch.stack([factors[int(it["index"])][name][1] for it in items]))
               for name in hyper.targets}  # fmt: skip
    ac = alphas_cumprod(TINY.diffusion_steps, TINY.schedule_offset)
    generic, personal = [], []
    with torch.no_grad():
        for seed in range(8):
            g = torch.Generator().manual_seed(seed)
            generic.append(diffusion_loss(model, batch, ac, g).item())
            g = torch.Generator().manual_seed(seed)
            personal.append(diffusion_loss(model, batch, ac, g, to_shifts(stacked)).item())
    assert np.mean(personal) < np.mean(generic), (personal, generic)
    assert any(float(a.abs().max()) > 0 for a, _ in factors[min(factors)].values())


def test_posnet_recipe_cuts_the_seam_jump_and_keeps_expression(runs: dict) -> None:
    report = runs["posnet"]["val"]
    assert report["seam_jump_cut"] > 1.0, report
    assert report["velocity_seam_after"] < report["velocity_seam_before"]
    posnet = load_posnet(runs["base"] / "posnet/posnet.safetensors")
    pose = np.cumsum(np.random.default_rng(0).normal(0, 0.01, (2, 40, 6)), axis=1)
    out = apply_posnet(posnet, pose.astype(np.float32))
    assert out.shape == (2, 40, 6) and np.array_equal(out[:, :8], pose[:, :8].astype(np.float32))


def test_personalised_predictor_uses_the_enrolment(world: Path, runs: dict) -> None:
    model, _ = load_generator(runs["base"] / "gen/generator.safetensors")
    encoder, hyper, _ = load_personal(runs["base"] / "shifts/personal.safetensors")
    test = ReactDataset(world, "test")
    sample = test[0]
    factors = enrol(encoder, hyper, test.history(0, 10.0, np.random.default_rng(0),
                                                 same_clip_ok=True)).factors  # fmt: skip
    generic = GeneratorPredictor(model, k=2)(sample, np.random.default_rng(1))
    personal = GeneratorPredictor(model, k=2, shifts_for=lambda s: factors)(
        sample, np.random.default_rng(1))
    assert generic.shape == personal.shape == (2, sample.speaker.frames, layout.DIM)
    assert not np.allclose(generic, personal)
    many = GeneratorPredictor(model, k=2, max_batch=3).predict_many([test[0], test[1]],
                                                                    np.random.default_rng(1))
    assert np.allclose(many[0], generic, atol=1e-5)


def test_training_cli_config_files_and_errors(world: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": 3, "colour": "blue"}))
    assert train_main(["style", "--data", str(world), "--out", str(tmp_path / "s"),
                       "--config", str(bad)]) == 2  # fmt: skip
    assert "unknown style config keys ['colour']" in caplog.text
    toml = tmp_path / "gen.toml"
    toml.write_text('steps = 3\nbatch_size = 4\nwarmup = 1\ndevice = "cpu"\n'
                    '[generator]\ncontext = 6\nprev = 2\nd_model = 16\nheads = 2\nff = 32\n')
    assert train_main(["generator", "--data", str(world), "--out", str(tmp_path / "g"),
                       "--config", str(toml), "--set", "seed=5", "-q"]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "g/summary.json").read_text())
    assert summary["steps"] == 3 and summary["seed"] == 5
    assert summary["config"]["generator"]["d_model"] == 16
    assert train_main(["generator", "--data", str(world), "--out", str(tmp_path / "h"),
                       "--set", "generator={\"depth\": 3}"]) == 2  # fmt: skip
    assert "unknown generator config keys" in caplog.text
    assert train_main(["default", "--data", str(world), "--out", str(tmp_path / "d"),
                       "--set", "optimiser=1"]) == 2  # fmt: skip


def test_rapport_train_runs_the_training_module(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "server.cli", "train", "style", "--data",
                          str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2
    assert "not a REACT-layout tree" in run.stderr


def test_sampler_tuning_writes_the_choice_into_the_checkpoint(world: Path, runs: dict,
                                                              tmp_path: Path) -> None:
    import shutil

    from models.train.tune import TuneSamplerConfig, tune_sampler

    path = tmp_path / "generator.safetensors"
    shutil.copyfile(runs["base"] / "gen/generator.safetensors", path)
    summary = tune_sampler(TuneSamplerConfig(data_root=world, out_dir=tmp_path / "tune",
                                             generator=path, steps_grid=(1, 2),
                                             guidance_grid=(1.0, 2.0), samples=2, k=2,
                                             device="cpu"), progress=False)  # fmt: skip
    assert len(summary["grid"]) == 8  # 2 steps x 2 guidance x feedback on/off
    assert {(r["steps"], r["guidance"], r["feedback"]) for r in summary["grid"]} == {
        (s, g, f) for s in (1, 2) for g in (1.0, 2.0) for f in (True, False)}
    chosen = summary["chosen"]
    assert chosen["score"] == max(r["score"] for r in summary["grid"])
    model, meta = load_generator(path)
    assert model.config.sample_steps == chosen["steps"]
    assert model.config.sample_guidance == chosen["guidance"]
    assert model.config.sample_feedback == chosen["feedback"]
    assert meta["extra"]["sampler_tuning"]["chosen"] == chosen
    before, _ = load_generator(runs["base"] / "gen/generator.safetensors")
    for (name, a), (_, b) in zip(before.state_dict().items(), model.state_dict().items(),
                                 strict=True):  # fmt: skip
        assert torch.equal(a, b), name  # weights untouched
    with pytest.raises(ValueError, match="steps_grid"):
        TuneSamplerConfig(data_root=world, out_dir=tmp_path, generator=path, steps_grid=(20,))
    with pytest.raises(ValueError, match="feedback_grid"):
        TuneSamplerConfig(data_root=world, out_dir=tmp_path, generator=path, feedback_grid=())


def test_tune_install_retunes_the_bundled_generator_and_records_it(world: Path, runs: dict,
                                                                   tmp_path: Path,
                                                                   monkeypatch) -> None:
    import json
    import shutil

    import models.train.__main__ as cli

    bundled = tmp_path / "weights"
    bundled.mkdir()
    shutil.copyfile(runs["base"] / "gen/generator.safetensors", bundled / "generator.safetensors")
    (bundled / "training.json").write_text(json.dumps({"seed": 0, "sampler": {"steps": 4}}))
    monkeypatch.setattr(cli, "DEFAULT_WEIGHTS", bundled)
    common = ["tune", "--data", str(world), "--out", str(tmp_path / "tune"), "--device", "cpu",
              "--set", "steps_grid=[1]", "--set", "guidance_grid=[1.0]", "--set", "samples=2",
              "--set", "k=2", "-q"]  # fmt: skip
    assert cli.main([*common, "--install", "--generator", str(tmp_path / "other.safetensors")]
                    ) == 2  # only the bundled generator is retuned in place
    assert cli.main([*common, "--install"]) == 0
    record = json.loads((bundled / "training.json").read_text())
    assert record["seed"] == 0 and len(record["sampler_grid"]) == 2  # feedback on and off
    assert record["sampler_retuned"]["command"].startswith("rapport train tune")
    model, _ = load_generator(bundled / "generator.safetensors")
    assert model.config.sample_feedback == record["sampler"]["feedback"]


def test_spread_install_measures_the_train_population_into_the_bundled_generator(
        world: Path, runs: dict, tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    import shutil

    import models.train.__main__ as cli
    from models.personal.enrolment import chunk_variances, model_hash
    from models.train.spread import SpreadConfig

    bundled = tmp_path / "weights"
    bundled.mkdir()
    source = runs["base"] / "gen/generator.safetensors"
    shutil.copyfile(source, bundled / "generator.safetensors")
    (bundled / "training.json").write_text(json.dumps({"seed": 0}))
    monkeypatch.setattr(cli, "DEFAULT_WEIGHTS", bundled)
    common = ["spread", "--data", str(world), "--out", str(tmp_path / "spread"), "-q"]
    assert cli.main(common) == 2  # neither a checkpoint nor --install
    assert cli.main([*common, "--install", "--generator", str(source)]) == 2  # bundled only
    assert cli.main([*common, "--install"]) == 0
    ds = ReactDataset(world, "train")
    chunks = np.concatenate([chunk_variances(c.coeffs[c.valid & c.found])
                             for p in ds.persons for c in map(ds.clip, ds.clips_of(p))])
    model, meta = load_generator(bundled / "generator.safetensors")
    assert model.config.expression_spread == pytest.approx(float(np.sqrt(chunks.mean())))
    record = json.loads((bundled / "training.json").read_text())
    assert record["seed"] == 0
    assert record["expression_spread"]["value"] == model.config.expression_spread
    assert record["expression_spread"]["chunks"] == len(chunks)
    assert record["expression_spread"]["command"].startswith("rapport train spread")
    assert meta["extra"]["expression_spread"]["split"] == "train"
    before, _ = load_generator(source)
    assert before.config.expression_spread is None
    assert model_hash(before) == model_hash(model)  # enrolments and personality stay valid
    for (name, a), (_, b) in zip(before.state_dict().items(), model.state_dict().items(),
                                 strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="never test"):
        SpreadConfig(data_root=world, out_dir=tmp_path, generator=source, split="test")
    with pytest.raises(ValueError, match="expression_spread must be a positive number"):
        dataclasses.replace(model.config, expression_spread=-1.0)


def test_spread_with_a_hypernetwork_measures_how_much_its_shifts_shrink_the_reaction(
        world: Path, runs: dict, tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    import shutil

    import models.train.__main__ as cli
    from models.personal.enrolment import model_hash
    from models.train.spread import SpreadConfig, measure_spread, shift_spread_gain

    path = tmp_path / "generator.safetensors"
    shutil.copyfile(runs["base"] / "gen/generator.safetensors", path)
    personal = runs["base"] / "shifts/personal.safetensors"
    cfg = SpreadConfig(data_root=world, out_dir=tmp_path / "m", generator=path,
                       personal=personal, samples=3, k=2)  # fmt: skip
    summary = measure_spread(cfg, progress=False)
    measured = summary["shift_spread_gain"]
    assert measured["samples"] == 3 and measured["k"] == 2
    assert measured["spread_generic"] > 0 and measured["spread_shifted"] > 0
    assert measured["value"] == pytest.approx(measured["spread_generic"]
                                              / measured["spread_shifted"])  # fmt: skip
    model, meta = load_generator(path)
    assert model.config.shift_spread_gain == measured["value"]
    assert model.config.expression_spread == summary["expression_spread"]["value"]
    assert meta["extra"]["shift_spread_gain"]["value"] == measured["value"]
    before, _ = load_generator(runs["base"] / "gen/generator.safetensors")
    assert before.config.shift_spread_gain is None
    assert model_hash(before) == model_hash(model)  # enrolments and personality stay valid
    # deterministic for a seed, and the measure is the shifts' own: the generic model compared
    # with itself (a style-only checkpoint has no shifts) is refused
    again = shift_spread_gain(before, personal, ReactDataset(world, "train"), samples=3, k=2,
                              seed=0)  # fmt: skip
    assert again["value"] == pytest.approx(measured["value"])
    with pytest.raises(ValueError, match="holds no hypernetwork"):
        shift_spread_gain(before, runs["base"] / "style/personal.safetensors",
                          ReactDataset(world, "train"), samples=2, k=1, seed=0)
    with pytest.raises(ValueError, match="samples and k must be at least 1"):
        SpreadConfig(data_root=world, out_dir=tmp_path, generator=path, samples=0)
    # the command line: --personal, recorded with --install
    bundled = tmp_path / "weights"
    bundled.mkdir()
    shutil.copyfile(runs["base"] / "gen/generator.safetensors", bundled / "generator.safetensors")
    (bundled / "training.json").write_text(json.dumps({"seed": 0}))
    monkeypatch.setattr(cli, "DEFAULT_WEIGHTS", bundled)
    assert cli.main(["spread", "--data", str(world), "--out", str(tmp_path / "c"), "-q",
                     "--install", "--personal", str(personal), "--set", "samples=3"]) == 0
    record = json.loads((bundled / "training.json").read_text())
    installed, _ = load_generator(bundled / "generator.safetensors")
    assert record["shift_spread_gain"]["value"] == installed.config.shift_spread_gain
    assert record["shift_spread_gain"]["command"].startswith("rapport train spread")
    assert record["shift_spread_gain"]["value"] == pytest.approx(measured["value"])


def test_shifts_install_trains_in_the_live_regime_and_replaces_the_bundled_hypernetwork(
        world: Path, runs: dict, tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    import shutil

    import models.train.__main__ as cli
    from models.generator.checkpoint import save_generator
    from models.personal.enrolment import model_hash

    bundled = tmp_path / "weights"
    bundled.mkdir()
    model, meta = load_generator(runs["base"] / "gen/generator.safetensors")
    model.config = dataclasses.replace(model.config, sample_feedback=False)  # as tuned
    save_generator(model, bundled / "generator.safetensors", meta["extra"])
    shutil.copyfile(runs["base"] / "style/personal.safetensors", bundled / "personal.safetensors")
    (bundled / "training.json").write_text(json.dumps({"seed": 0, "shifts": {"old": 1}}))
    monkeypatch.setattr(cli, "DEFAULT_WEIGHTS", bundled)
    common = ["shifts", "--data", str(world), "--out", str(tmp_path / "shifts"), "--device",
              "cpu", "--steps", "20", "--set", "batch_size=8", "--set", "crops_per_clip=2", "-q"]
    other = str(runs["base"] / "gen/generator.safetensors")
    assert cli.main([*common, "--install", "--generator", other]) == 2  # bundled only
    assert not (tmp_path / "shifts").exists()  # refused before training
    style_before, _, _ = load_personal(bundled / "personal.safetensors")
    assert cli.main([*common, "--install"]) == 0
    style, hyper, extra = load_personal(bundled / "personal.safetensors")
    assert hyper is not None and model_hash(style) == model_hash(style_before)
    record = json.loads((bundled / "training.json").read_text())
    assert record["seed"] == 0 and "old" not in record["shifts"]
    # the generator runs without feedback, so the shifts never saw previous frames
    assert record["shifts"]["prev_drop"] == 1.0 and extra["prev_drop"] == 1.0
    assert record["shifts_retrained"]["command"].startswith("rapport train shifts")
    assert record["shifts_retrained"]["steps"] == 20
    # the fixture's generator feeds back (the default): its shifts saw the previous frames
    assert runs["shifts"]["prev_drop"] == 0.0


def test_shifts_config_checks_its_training_regime(tmp_path: Path) -> None:
    base = {"data_root": tmp_path, "out_dir": tmp_path, "generator": "g", "style": "s"}
    assert TrainShiftsConfig(**base, prev_drop=1.0).prev_drop == 1.0
    for bad in ({"prev_drop": 1.5}, {"prev_drop": -0.1}, {"cond_drop": 1.0},
                {"high_noise": 2.0}):  # fmt: skip
        with pytest.raises(ValueError, match="prev_drop|cond_drop"):
            TrainShiftsConfig(**base, **bad)


def test_prev_drop_one_hides_every_previous_frame(runs: dict, world: Path) -> None:
    model, _ = load_generator(runs["base"] / "gen/generator.safetensors")
    train = ReactDataset(world, "train")
    windows = WindowDataset(train, w=TINY.window, context=TINY.context, prev=TINY.prev)
    items = [windows[k] for k in range(0, 40, 5)]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if k not in ("index", "t")}
    assert batch["prev_valid"].any()
    hidden = {**batch, "prev_valid": torch.zeros_like(batch["prev_valid"])}
    ac = alphas_cumprod(TINY.diffusion_steps, TINY.schedule_offset)
    model.eval()
    with torch.no_grad():
        dropped = diffusion_loss(model, batch, ac, torch.Generator().manual_seed(3),
                                 prev_drop=1.0).item()  # fmt: skip
        # the same step and noise (drawn before the drop) with the frames marked invalid
        expect = diffusion_loss(model, hidden, ac, torch.Generator().manual_seed(3)).item()
        kept = diffusion_loss(model, batch, ac, torch.Generator().manual_seed(3)).item()
    assert dropped != kept
    assert dropped == pytest.approx(expect, abs=1e-6)


def test_default_pipeline_runs_every_stage_and_measures_the_shift_spread_gain_last(
        world: Path, tmp_path: Path) -> None:  # fmt: skip
    plan = {"generator": {"steps": 5, "batch_size": 8, "warmup": 1, "generator": TINY.to_dict()},
            "style": {"steps": 3, "persons": 4},
            "shifts": {"steps": 3, "batch_size": 8, "warmup": 1},
            "posnet": {"steps": 3, "samples": 2, "val_samples": 2, "k": 2, "batch_size": 4,
                       "unroll": 2},
            "tune": {"samples": 2, "k": 2, "steps_grid": [1], "guidance_grid": [1.0]},
            "spread": {"samples": 2, "k": 1}}  # fmt: skip
    config = tmp_path / "plan.json"
    config.write_text(json.dumps(plan))
    out = tmp_path / "run"
    assert train_main(["default", "--data", str(world), "--out", str(out), "--config",
                       str(config), "--device", "cpu", "-q"]) == 0  # fmt: skip
    report = json.loads((out / "training.json").read_text())
    assert list(report["stage_seconds"]) == ["generator", "style", "posnet", "tune", "spread",
                                             "shifts", "compensation"]  # fmt: skip
    gain = report["shift_spread_gain"]
    assert gain["personal"] == str(out / "shifts/personal.safetensors") and gain["samples"] == 2
    model, _ = load_generator(out / "generator/generator.safetensors")
    assert model.config.shift_spread_gain == gain["value"] > 0
    assert model.config.expression_spread == report["expression_spread"]["value"]


def test_evaluation_helpers_enrol_from_another_clip_and_score_against_the_own_reaction(
        world: Path, runs: dict) -> None:  # fmt: skip
    from models.evaluation import collect, own_listener_scores
    from models.generator.predict import GeneratorPredictor, enrolment_predictors
    from models.personal.enrolment import enrol, enrolments_of

    ds = ReactDataset(world, "val")
    style, hyper, _ = load_personal(runs["base"] / "shifts/personal.safetensors")
    enrolment_of = enrolments_of(ds, style, hyper, seed=3)
    first = enrolment_of(ds[0])
    assert enrolment_of(ds[0]) is first  # cached per sample
    crop = ds.history(0, 10.0, np.random.default_rng([3, 0]))  # another clip, drawn per sample
    expected = enrol(style, hyper, crop)
    assert torch.equal(first.rest, expected.rest)
    for name, (a, b) in expected.factors.items():
        assert torch.equal(first.factors[name][0], a) and torch.equal(first.factors[name][1], b)
    model, _ = load_generator(runs["base"] / "gen/generator.safetensors")
    parts = enrolment_predictors(model, None, enrolment_of, k=2)
    assert list(parts) == ["personalised", "shifts only", "resting face only",
                           "resting face + expressivity"]  # fmt: skip
    got = {name: collect(ds, p, seed=0, indices=[0, 1], progress=False)
           for name, p in {"generic": GeneratorPredictor(model, None, k=2), **parts}.items()}
    for name in parts:  # each part changes the reaction
        assert not np.allclose(got[name]["predictions"], got["generic"]["predictions"]), name
    listeners = got["generic"]["listeners"]  # (2, T, 58)
    perfect = own_listener_scores(np.repeat(listeners[:, None], 2, axis=1), listeners)
    swapped = own_listener_scores(np.repeat(listeners[::-1, None], 2, axis=1), listeners)
    np.testing.assert_allclose(perfect["FRDist"], 0.0, atol=1e-6)
    assert (swapped["FRDist"] > 0).all() and (perfect["FRCorr"] > swapped["FRCorr"]).all()
