"""The generator training recipe on a tiny synthetic world: it learns, saves, resumes exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from models.data.io import DatasetError
from models.data.world import WorldConfig, make_world
from models.generator.checkpoint import CheckpointError, load_generator, save_generator
from models.generator.config import tiny_config
from models.generator.denoiser import Denoiser
from models.train.generator import TrainGeneratorConfig, lr_factor, train_generator

TINY = dataclasses.replace(tiny_config(), dropout=0.1)  # dropout on: resume must restore its RNG


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gen_world") / "world"
    make_world(WorldConfig(listeners=4, clips_per_listener=2, seconds=6, seed=1), root,
               progress=False, workers=1)  # fmt: skip
    return root


def config(world: Path, out: Path, **kw) -> TrainGeneratorConfig:
    base = dict(data_root=world, out_dir=out, generator=TINY, steps=60, batch_size=16, lr=3e-3,
                warmup=5, seed=3, device="cpu", log_every=1, checkpoint_every=25)
    return TrainGeneratorConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen_run")
    return out, train_generator(config(world, out), progress=False)


def test_loss_decreases_and_summary_is_written(trained: tuple[Path, dict]) -> None:
    out, summary = trained
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 60
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.7 * first, (first, last)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["steps"] == summary["steps"] == 60 and summary["finished"]
    assert summary["device"] == "cpu" and summary["seed"] == 3
    assert summary["config"]["generator"] == TINY.to_dict()
    assert summary["final_loss_ema"] < first


def test_stats_are_set_from_the_train_split(trained: tuple[Path, dict]) -> None:
    out, summary = trained
    model, meta = load_generator(out / "generator.safetensors")
    assert not torch.allclose(model.face_std, torch.ones_like(model.face_std))
    assert not torch.allclose(model.audio_std, torch.ones_like(model.audio_std))
    assert model.face_mean.abs().sum() > 0 and model.audio_mean.abs().sum() > 0
    stats = meta["extra"]["stats"]
    assert stats["split"] == "train" and stats["clips"] > 0 and stats["face_frames"] > 0
    assert meta["extra"]["step"] == 60 and meta["extra"]["seed"] == 3


def _outputs(model: Denoiser, seed: int = 0) -> torch.Tensor:
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    b = 3
    x_t = torch.randn(b, cfg.window, cfg.face_dim, generator=g)
    step = torch.randint(0, cfg.diffusion_steps, (b,), generator=g)
    audio = torch.randn(b, cfg.context, cfg.audio_dim, generator=g) * 5
    face = torch.rand(b, cfg.context, cfg.face_dim, generator=g)
    prev = torch.rand(b, cfg.prev, cfg.face_dim, generator=g)
    ok_c = torch.ones(b, cfg.context, dtype=torch.bool)
    ok_p = torch.ones(b, cfg.prev, dtype=torch.bool)
    with torch.no_grad():
        return model.eval()(x_t, step, audio, face, ok_c, prev, ok_p)


def test_checkpoint_round_trip(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = trained
    model, _ = load_generator(out / "generator.safetensors")
    path = save_generator(model, tmp_path / "copy.safetensors", {"note": "x"})
    again, meta = load_generator(path, config=TINY)
    assert meta["extra"] == {"note": "x"} and meta["config"] == TINY
    for name, t in model.state_dict().items():
        assert torch.equal(t, again.state_dict()[name]), name
    assert torch.equal(_outputs(model), _outputs(again))


def test_checkpoint_errors(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = trained
    with pytest.raises(CheckpointError, match="no such"):
        load_generator(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_generator(bad)
    with pytest.raises(CheckpointError, match="d_model"):
        load_generator(out / "generator.safetensors",
                       config=dataclasses.replace(TINY, d_model=32))  # fmt: skip


@pytest.mark.parametrize("rollout", [0.0, 0.5])
def test_resume_matches_an_uninterrupted_run(world: Path, tmp_path: Path, rollout: float) -> None:
    kw = dict(steps=14, checkpoint_every=4, log_every=7, rollout=rollout)
    straight = train_generator(config(world, tmp_path / "a", **kw), progress=False)
    first = train_generator(config(world, tmp_path / "b", **kw), progress=False, stop_at=9)
    assert not first["finished"] and first["steps"] == 9
    resumed = train_generator(config(world, tmp_path / "b", **kw), progress=False)
    assert resumed["finished"] and resumed["resumed_from"] == 9
    a, _ = load_generator(tmp_path / "a" / "generator.safetensors")
    b, _ = load_generator(tmp_path / "b" / "generator.safetensors")
    for name, t in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], t, atol=1e-6, rtol=0, msg=name)
    assert resumed["final_loss_ema"] == pytest.approx(straight["final_loss_ema"], abs=1e-6)
    with pytest.raises(ValueError, match="cannot resume"):
        train_generator(config(world, tmp_path / "b", **{**kw, "lr": 1e-3}), progress=False)
    with pytest.raises(FileExistsError):
        train_generator(config(world, tmp_path / "b", **kw, resume=False), progress=False)


def test_rollout_windows_learn_from_the_models_own_frames(world: Path, tmp_path: Path) -> None:
    """All windows on the model's own previous frames: training still learns (the loss falls)
    and the run records the setting."""
    summary = train_generator(config(world, tmp_path, rollout=1.0, rollout_depth=1),
                              progress=False)  # fmt: skip
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in lines]
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])
    assert summary["config"]["rollout"] == 1.0 and summary["config"]["rollout_depth"] == 1


def test_bad_data_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a REACT-layout tree"):
        train_generator(config(tmp_path / "nowhere", tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()


def test_config_validation_and_schedule() -> None:
    with pytest.raises(ValueError, match="generator"):
        TrainGeneratorConfig(data_root="x", out_dir="y", generator="huge")
    with pytest.raises(ValueError, match="steps"):
        TrainGeneratorConfig(data_root="x", out_dir="y", steps=0)
    assert TrainGeneratorConfig(data_root="x", out_dir="y", generator="tiny").generator_config \
        == tiny_config()
    for bad in ({"rollout": 1.5}, {"rollout_depth": 0}, {"rollout_steps": 9},
                {"rollout_guidance": -1.0}):
        with pytest.raises(ValueError, match="rollout"):
            TrainGeneratorConfig(data_root="x", out_dir="y", **bad)
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(99, 100, 10) < 0.01
