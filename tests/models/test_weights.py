"""The bundled default weights: present, documented, loadable, and they generate sensibly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.data.dataset import ReactDataset
from models.data.world import WorldConfig, make_world
from models.face import layout
from models.generator.predict import GeneratorPredictor
from models.personal.enrolment import enrol
from models.weights import FILES, WEIGHTS_DIR, load_default


@pytest.fixture(scope="module")
def models():
    return load_default("cpu")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("weights_world") / "world"
    make_world(WorldConfig(listeners=6, clips_per_listener=2, seconds=12, seed=4), root,
               progress=False, workers=1)  # fmt: skip
    return root


def test_files_are_small_and_training_is_documented() -> None:
    for name in FILES:
        size = (WEIGHTS_DIR / name).stat().st_size
        assert 0 < size < 20_000_000, (name, size)
    report = json.loads((WEIGHTS_DIR / "training.json").read_text())
    assert report["command"].startswith("rapport train default")
    assert report["seed"] == 0 and report["seconds"] > 0
    assert set(report["stage_seconds"]) == {"generator", "style", "shifts", "posnet", "tune"}
    assert report["sampler"]["steps"] >= 1


def test_defaults_load_with_their_tuned_sampler(models) -> None:  # noqa: ANN001
    cfg = models.generator.config
    report = json.loads((WEIGHTS_DIR / "training.json").read_text())
    assert cfg.sample_steps == report["sampler"]["steps"]
    assert cfg.sample_guidance == report["sampler"]["guidance"]
    assert cfg.sample_feedback == report["sampler"].get("feedback", True)
    assert set(models.hyper.targets) == set(models.generator.shift_targets())
    assert models.posnet.config.window == cfg.window
    assert not torch.allclose(models.generator.face_std, torch.ones(layout.DIM))
    assert cfg.expression_spread == report["expression_spread"]["value"] > 0
    # the bundled shifts were trained in the regime the tuned sampler runs
    assert report["shifts"]["prev_drop"] == (0.0 if cfg.sample_feedback else 1.0)


def test_default_reactions_are_in_range_and_diverse(models, world: Path) -> None:  # noqa: ANN001
    torch.set_num_threads(1)
    test = ReactDataset(world, "test")
    sample = test[0]
    factors = enrol(models.style, models.hyper,
                    test.history(0, 10.0, np.random.default_rng(0), same_clip_ok=True)).factors
    for shifts in (None, factors):
        out = GeneratorPredictor(models.generator, models.posnet, k=3,
                                 shifts_for=lambda s, f=shifts: f)(sample,
                                                                    np.random.default_rng(0))
        assert out.shape == (3, sample.speaker.frames, layout.DIM)
        assert np.isfinite(out).all()
        assert out[..., layout.EXPRESSION].min() >= 0 and out[..., layout.EXPRESSION].max() <= 1
        assert np.abs(out[..., layout.POSE]).max() < 2.0
        assert np.abs(out[0] - out[1]).mean() > 1e-4  # different noise, different reaction
        assert out[..., layout.EXPRESSION].std(axis=1).mean() > 1e-3  # it moves


def test_missing_weights_name_the_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="models.train default"):
        load_default("cpu", tmp_path)


def test_rapport_eval_scores_the_bundled_personalised_generator(world: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    run = subprocess.run([sys.executable, "-m", "server.cli", "-q", "eval", "--data", str(world),
                          "--model", "generator", "--personalised", "--neighbours", "own",
                          "--limit", "2", "--k", "2", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())["results"]["personalised"]
    assert results["N"] == 2 and results["K"] == 2 and np.isfinite(results["FRCorr"])
