"""Baselines and the evaluation runner on a tiny synthetic world, driven through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.baselines import NAMES, Baseline, BaselineConfig
from models.data.dataset import ReactDataset
from models.data.emotion import emotion_from_coefficients
from models.evaluation import evaluate
from models.face import layout
from server.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    argv = ["-q", "world", "make", "--out", str(out), "--listeners", "6",
            "--clips-per-listener", "3", "--seconds", "6", "--seed", "3", "--workers", "1"]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def splits(world):
    return ReactDataset(world, "train"), ReactDataset(world, "test")


def test_world_make_refuses_to_overwrite_by_accident(world, caplog) -> None:
    argv = ["-q", "world", "make", "--out", str(world), "--listeners", "6", "--seconds", "6"]
    assert main(argv) == 2
    assert "not empty" in caplog.text


def test_each_baseline_does_what_it_says(splits) -> None:
    train, test = splits
    rng = np.random.default_rng(0)
    s = test[0]
    t = s.speaker.frames
    mime = Baseline("mime", train, BaselineConfig(k=3, mime_delay=10)).predict(s, rng)
    assert mime.shape == (3, t, 58)
    np.testing.assert_array_equal(mime[0, 10:], s.speaker.coeffs[: t - 10])
    np.testing.assert_array_equal(mime[0, :10], np.repeat(s.speaker.coeffs[:1], 10, axis=0))
    mean = Baseline("mean", train, BaselineConfig(k=2)).predict(s, rng)
    listeners = np.stack([train[i].listener.coeffs for i in range(len(train))])
    np.testing.assert_allclose(mean[0], listeners.mean(axis=0)[:t], atol=1e-6)
    nearest = Baseline("nearest", train, BaselineConfig(k=4)).predict(s, rng)
    for p in nearest:  # every prediction is a real training reaction, and they differ
        assert min(np.abs(p - listeners[:, :t]).max(axis=(1, 2))) == 0
    assert len({p.tobytes() for p in nearest}) == 4
    rand = Baseline("random", train, BaselineConfig(k=2)).predict(s, rng)
    expr = rand[..., layout.EXPRESSION]
    assert expr.min() >= 0 and expr.max() <= 1 and expr.std() > 0.2
    with pytest.raises(ValueError, match="unknown baseline 'smile'"):
        Baseline("smile", train)


def test_an_oracle_beats_every_baseline_and_scores_perfectly(splits) -> None:
    train, test = splits

    def oracle(sample, rng):
        return np.repeat(sample.listener.coeffs[None], 2, axis=0)

    best = evaluate(test, oracle, progress=False)
    # Its own reaction is appropriate (diagonal): CCC(x, x) = 2v / (2v + 1e-8) per emotion dim
    # with variance v, i.e. 1 where it varies and 0 on constant dims, as the official code.
    var = [emotion_from_coefficients(test[i].listener.coeffs).astype(np.float64).var(axis=0)
           for i in range(len(test))]  # fmt: skip
    expected = np.mean([np.mean(2 * v / (2 * v + 1e-8)) for v in var])
    assert best["FRCorr_per_pred"] == pytest.approx(expected, abs=1e-3)
    assert best["FRDist"] == pytest.approx(0.0, abs=1e-6)
    for name in NAMES:
        model = Baseline(name, train, BaselineConfig(k=2))
        r = evaluate(test, model.predict, progress=False)
        assert r["FRCorr"] < best["FRCorr"] and r["FRDist"] > best["FRDist"]


def test_cli_eval_prints_and_saves(world, tmp_path, capsys, caplog) -> None:
    out = tmp_path / "r" / "eval.json"
    argv = ["-q", "eval", "--data", str(world), "--model", "baseline:mime", "--k", "2",
            "--out", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["model", "FRCorr", "FRDist"]
    assert table.splitlines()[1].startswith("mime")
    saved = json.loads(out.read_text())
    assert saved["meta"]["split"] == "test" and saved["results"]["mime"]["K"] == 2
    assert main(["-q", "eval", "--data", str(world), "--model", "gpt"]) == 2
    assert "baseline:<name>" in caplog.text
    assert main(["-q", "eval", "--data", str(tmp_path / "nothing")]) == 2


def test_cli_eval_scores_a_generator_checkpoint(world, tmp_path, capsys, caplog) -> None:
    import torch

    from models.generator.checkpoint import save_generator
    from models.generator.config import tiny_config
    from models.generator.denoiser import Denoiser

    torch.manual_seed(0)
    ckpt = save_generator(Denoiser(tiny_config()), tmp_path / "g.safetensors")
    out = tmp_path / "g.json"
    argv = ["-q", "eval", "--data", str(world), "--model", f"generator:{ckpt}", "--k", "2",
            "--limit", "2", "--out", str(out)]
    assert main(argv) == 0
    r = json.loads(out.read_text())["results"]["generator"]
    assert (r["N"], r["K"]) == (2, 2) and r["FRDiv"] > 0  # two noise draws, two reactions
    assert capsys.readouterr().out.splitlines()[1].startswith("generator")
    missing = "generator:/no/such.safetensors"
    assert main(["-q", "eval", "--data", str(world), "--model", missing]) == 2
    assert "no such" in caplog.text.lower()


def test_generator_predictor_is_causal_per_clip(splits) -> None:
    import torch

    from models.generator.config import tiny_config
    from models.generator.denoiser import Denoiser
    from models.generator.predict import GeneratorPredictor

    torch.manual_seed(0)
    predict = GeneratorPredictor(Denoiser(tiny_config()), k=3, steps=2)
    s = splits[1][0]
    a = predict(s, np.random.default_rng(0))
    assert a.shape == (3, s.speaker.frames, 58)
    np.testing.assert_array_equal(a, predict(s, np.random.default_rng(0)))  # seeded
    assert not np.allclose(a[0], a[1])
