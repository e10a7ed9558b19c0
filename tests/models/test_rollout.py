"""Self-generated previous frames replay the windows before ``t`` exactly as the online runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.data.windows import AUDIO_LOOKAHEAD, span
from models.face import layout
from models.generator.config import tiny_config
from models.generator.denoiser import Denoiser
from models.generator.online import OnlineRunner
from models.generator.rollout import self_generated_prev, split_history


@pytest.fixture(scope="module")
def model() -> Denoiser:
    torch.manual_seed(0)
    return Denoiser(tiny_config()).eval()


def stream(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    audio = rng.normal(0, 1, (n, layout.AUDIO_FEATURE_DIM)).astype(np.float32)
    face = np.concatenate([rng.uniform(0, 1, (n, 52)), rng.normal(0, 0.1, (n, 6))], axis=1)
    return audio, np.ones(n, bool), face.astype(np.float32), np.ones(n, bool)


def batch_at(model: Denoiser, data: tuple[np.ndarray, ...], t: int, depth: int,
             listener: np.ndarray | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """One WindowDataset-like item (history = depth · W) at ``t``, batched."""
    cfg = model.config
    h = depth * cfg.window
    audio, audio_ok, face, face_ok = data
    a, a_ok = span(audio, audio_ok, t - cfg.context - h, t)
    a[-AUDIO_LOOKAHEAD:], a_ok[-AUDIO_LOOKAHEAD:] = 0.0, False
    f, f_ok = span(face, face_ok, t - cfg.context - h, t)
    lis = np.zeros_like(face) if listener is None else listener
    p, p_ok = span(lis, np.full(len(lis), listener is not None), t - cfg.prev - h, t)
    tgt, tgt_ok = span(lis, np.ones(len(lis), bool), t, t + cfg.window)
    item = {"speaker_audio": a, "audio_valid": a_ok, "speaker_face": f, "context_valid": f_ok,
            "listener_prev": p, "prev_valid": p_ok, "target": tgt, "target_valid": tgt_ok}
    out = {k: torch.from_numpy(np.asarray(v, np.float32))[None] for k, v in item.items()}
    out["t"] = torch.tensor([t])
    return out


def test_replay_equals_the_online_runner(model) -> None:
    depth, w = 3, model.config.window
    data = stream(depth * w + 5)
    runner = OnlineRunner(model, None, steps=2)
    session = runner.new_session(seed=7)
    live = []
    for _ in range(depth):
        upto = session.t
        if upto > session.received:
            session.push_speaker(*(x[session.received: upto] for x in data))
        live.append(runner.step([session])[0])
    live = np.concatenate(live)  # (depth · W, 58)
    batch = batch_at(model, data, depth * w, depth)
    prev, ok = self_generated_prev(model, batch, depth, steps=2, guidance=1.0,
                                   generator=torch.Generator().manual_seed(7))  # fmt: skip
    p = model.config.prev
    np.testing.assert_allclose(prev[0].numpy(), live[-p:], atol=1e-5)
    assert ok.all()


def test_frames_before_the_clip_start_stay_invalid_and_the_mode_is_kept(model) -> None:
    depth, w, p = 2, model.config.window, model.config.prev
    data = stream(40)
    model.train()
    try:
        batch = batch_at(model, data, t=w, depth=depth)  # the first replayed window is at -W
        _, ok = self_generated_prev(model, batch, depth, steps=1, guidance=1.0,
                                    generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert model.training
    finally:
        model.eval()
    expected = np.arange(w - p, w) >= 0  # positions of the P frames before t = W
    np.testing.assert_array_equal(ok[0].numpy(), expected)


def test_replay_reads_real_listener_frames_only_before_its_first_window(model) -> None:
    depth, w = 2, model.config.window
    data = stream(60)
    rng = np.random.default_rng(1)
    listener = rng.uniform(0, 1, (60, layout.DIM)).astype(np.float32)
    t = 40
    first = t - depth * w

    def prev_of(lis: np.ndarray) -> torch.Tensor:
        batch = batch_at(model, data, t, depth, listener=lis)
        return self_generated_prev(model, batch, depth, steps=2, guidance=1.5,
                                   generator=torch.Generator().manual_seed(3))[0]  # fmt: skip

    base = prev_of(listener)
    later = listener.copy()
    later[first:] += 0.5  # the real frames the replay replaces, and the target
    torch.testing.assert_close(prev_of(later), base)
    earlier = listener.copy()
    earlier[first - 1] += 0.5  # the real frame the first replayed window is conditioned on
    assert not torch.allclose(prev_of(earlier), base)


def test_split_history_and_bad_shapes(model) -> None:
    cfg = model.config
    batch = batch_at(model, stream(40), t=24, depth=2)
    plain = split_history(batch, model, 2)
    assert plain["speaker_face"].shape[1] == cfg.context
    assert plain["listener_prev"].shape[1] == cfg.prev
    torch.testing.assert_close(plain["speaker_face"], batch["speaker_face"][:, -cfg.context:])
    with pytest.raises(ValueError, match="history"):
        split_history(batch, model, 3)
    with pytest.raises(ValueError, match="depth"):
        self_generated_prev(model, batch, 0, steps=2, guidance=1.0,
                            generator=torch.Generator())  # fmt: skip
