"""The personality recipe and its command line on a tiny world with tiny models."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from models.data.world import WorldConfig, make_world
from models.generator.checkpoint import load_generator, save_generator
from models.generator.config import tiny_config
from models.generator.denoiser import Denoiser
from models.personal.checkpoint import load_personal, save_personal
from models.personal.hyper import HyperConfig, HyperNetwork
from models.personal.style import StyleEncoder, StyleEncoderConfig
from models.personality.checkpoint import load_personality
from models.train.__main__ import main as train_main
from models.train.personality import TrainPersonalityConfig, train_personality

SIZES = {"graph": {"node_dim": 4, "cnn_channels": [4, 4], "edge_dim": 8}, "gnn": {"hidden": 8}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("personality_train")
    make_world(WorldConfig(listeners=6, clips_per_listener=2, seconds=11, seed=4), base / "world",
               progress=False, workers=1)  # fmt: skip
    torch.manual_seed(0)
    gen = Denoiser(dataclasses.replace(tiny_config(), shift_layers=("cross_attn_q", "ff_out")))
    save_generator(gen, base / "generator.safetensors")
    style = StyleEncoder(StyleEncoderConfig(width=16, style_dim=8, dilations=(1, 2),
                                            pool_heads=2))  # fmt: skip
    hyper = HyperNetwork(HyperConfig(style_dim=8, rank=2, trunk_dim=16, hidden_dim=16,
                                     embed_dim=8, chunk_size=32), gen.shift_targets())  # fmt: skip
    with torch.no_grad():
        hyper.out_a.weight.normal_(0.0, 0.05)
    save_personal(style, hyper, base / "personal.safetensors")
    return {"base": base, "world": base / "world", "generator": base / "generator.safetensors",
            "personal": base / "personal.safetensors"}  # fmt: skip


def small_run(setup: dict[str, Path], steps: int) -> dict:
    """Config fields of a few-step run on the tiny world, without val selection."""
    return dict(data_root=setup["world"], generator=setup["generator"], personal=setup["personal"],
                steps=steps, persons=4, windows=1, warmup=1, val_windows=8, eval_every=0,
                device="cpu", sizes=SIZES)  # fmt: skip


def test_recipe_trains_scores_and_leaves_the_enrolment_path_it_started_from(setup) -> None:
    before = load_personal(setup["personal"])[1].state_dict()
    cfg = TrainPersonalityConfig(data_root=setup["world"], out_dir=setup["base"] / "run",
                                 generator=setup["generator"], personal=setup["personal"],
                                 steps=6, persons=4, windows=2, lr_personal=1e-3, warmup=1,
                                 val_windows=16, device="cpu", sizes=SIZES)  # fmt: skip
    summary = train_personality(cfg, progress=False)
    assert summary["samples"]["train"]["persons"] == 8  # both roles of 4 train sessions
    for split in ("val", "test"):
        person = summary["metrics"][split]["person"]
        assert person["N"] == summary["samples"][split]["persons"] >= 2
        assert 0.0 <= person["mean_mse"] < 1.0
    assert set(summary["reconstruction_val"]) == {"generic", "bundled", "joint"}
    assert summary["loss_ema"]["rec"] > 0 and summary["loss_ema"]["trait"] > 0
    gen, _ = load_generator(setup["generator"])
    model, extra = load_personality(Path(summary["model"]), gen)
    assert model.version() == summary["version"] and extra["variant"] == "full"
    after = model.hyper.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the copy was trained
    assert all(torch.equal(before[k], v)  # and the file it came from is untouched
               for k, v in load_personal(setup["personal"])[1].state_dict().items())
    again = train_personality(dataclasses.replace(cfg, out_dir=setup["base"] / "run2"),
                              progress=False)  # fmt: skip
    assert again["version"] == summary["version"]  # deterministic for a seed


def test_command_line_trains_the_direct_variant_and_refuses_unknown_ones(setup, capsys) -> None:
    common = ["--data", str(setup["world"]), "--generator", str(setup["generator"]),
              "--personal", str(setup["personal"]), "--device", "cpu", "--steps", "3", "-q",
              "--set", "persons=4", "--set", f"sizes={json.dumps(SIZES)}"]  # fmt: skip
    out = setup["base"] / "cli"
    assert train_main(["personality", "--out", str(out), "--variant", "direct", *common]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["version"].startswith("rpr-") and printed["steps"] == 3
    assert json.loads((out / "summary.json").read_text())["reconstruction_val"] == {}
    assert train_main(["personality", "--out", str(out), "--variant", "nope", *common]) == 2


def test_auxiliary_style_loss_changes_training_but_not_what_is_saved(setup) -> None:
    base = small_run(setup, steps=4)
    plain = train_personality(TrainPersonalityConfig(out_dir=setup["base"] / "aux0",
                                                     aux_weight=0.0, **base), progress=False)
    aux = train_personality(TrainPersonalityConfig(out_dir=setup["base"] / "aux1",
                                                   aux_weight=1.0, **base), progress=False)
    assert aux["version"] != plain["version"]  # the style copy got the auxiliary gradient
    assert aux["config"]["aux_weight"] == 1.0
    gen, _ = load_generator(setup["generator"])
    a, _ = load_personality(Path(aux["model"]), gen)
    p, _ = load_personality(Path(plain["model"]), gen)
    assert a.state_dict().keys() == p.state_dict().keys()  # the training-only head is not kept
    with pytest.raises(ValueError, match="aux_weight"):
        TrainPersonalityConfig(out_dir=setup["base"] / "bad", aux_weight=-1.0, **base)


def test_command_line_keeps_the_seed_with_the_best_val_score(setup, capsys) -> None:
    out = setup["base"] / "seeds"
    common = ["personality", "--data", str(setup["world"]), "--generator", str(setup["generator"]),
              "--personal", str(setup["personal"]), "--device", "cpu", "--steps", "2", "-q",
              "--variant", "direct", "--set", "persons=4", "--set", f"sizes={json.dumps(SIZES)}"]
    assert train_main([*common, "--out", str(out), "--seeds", "3,5"]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["seed_selection"]
    assert [r["seed"] for r in rows] == [3, 5]
    best = max(rows, key=lambda r: r["val_ccc"])
    assert summary["seed"] == best["seed"] and summary["version"] == best["version"]
    for r in rows:  # each candidate is a complete run of its own
        run = json.loads((out / f"seed{r['seed']}" / "summary.json").read_text())
        assert run["seed"] == r["seed"] and run["version"] == r["version"]
    assert train_main([*common, "--out", str(out / "bad"), "--seeds", "1,x"]) == 2
    assert train_main([*common, "--out", str(out / "twice"), "--seeds", "1,1"]) == 2
    assert train_main([*common, "--out", str(out / "both"), "--seeds", "1,2", "--seed", "0"]) == 2
    assert train_main([*common, "--out", str(out / "jobs"), "--jobs", "2"]) == 2
    assert not (out / "both").exists() and not (out / "jobs").exists()  # refused before training


def test_reconstruction_follows_the_live_sampler_regime(setup) -> None:
    from models.train.personality import live_prev_drop

    gen, _ = load_generator(setup["generator"])
    assert live_prev_drop(None, gen) == 0.0  # the tiny generator feeds back (the default)
    gen.config = dataclasses.replace(gen.config, sample_feedback=False)
    assert live_prev_drop(None, gen) == 1.0 and live_prev_drop(0.3, gen) == 0.3
    base = small_run(setup, steps=3)
    kept = train_personality(TrainPersonalityConfig(out_dir=setup["base"] / "prev0",
                                                    prev_drop=0.0, **base), progress=False)
    hidden = train_personality(TrainPersonalityConfig(out_dir=setup["base"] / "prev1",
                                                      prev_drop=1.0, **base), progress=False)
    assert hidden["version"] != kept["version"]  # the reconstruction gradient differs
    assert hidden["reconstruction_val"]["generic"] != kept["reconstruction_val"]["generic"]
    with pytest.raises(ValueError, match="prev_drop"):
        TrainPersonalityConfig(out_dir=setup["base"] / "bad", prev_drop=2.0, **base)
