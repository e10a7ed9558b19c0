"""PosNet: identity at init, pass-through, untouched expressions, runner state, and a tiny
synthetic training run that must remove the seam jumps of a windowed pose stream."""

from __future__ import annotations

import math

import pytest
import torch

from models.face import layout
from models.metrics.smoothness import seam_jumps
from models.posnet import (
    PoseSmoother,
    PosNet,
    PosNetConfig,
    PosNetLossConfig,
    load_posnet,
    posnet_loss,
    save_posnet,
    smooth_step,
    step_sessions,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
P = 6


def build(seed: int = 0, *, window: int = 8, history: int = 2, hidden: int = 16,
          residual: bool = True, device: str = "cpu", perturb: bool = False) -> PosNet:  # fmt: skip
    """A seeded tiny PosNet; ``perturb`` gives the zero-initialised last layer random weights so
    the model is no longer the identity."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PosNet(PosNetConfig(window=window, history=history, hidden=hidden,
                                    residual=residual))  # fmt: skip
        if perturb:
            torch.nn.init.normal_(model.mlp[-1].weight, std=0.5)
            torch.nn.init.normal_(model.mlp[-1].bias, std=0.5)
    return model.to(device).eval()


def randn(*shape: int, seed: int, device: str = "cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(device)


def coefficient_frames(*shape: int, seed: int, device: str = "cpu") -> torch.Tensor:
    """(..., 58) frames: expressions in 0..1, pose around zero."""
    gen = torch.Generator().manual_seed(seed)
    frames = torch.rand(*shape, layout.DIM, generator=gen)
    frames[..., layout.POSE] = 0.3 * torch.randn(*shape, P, generator=gen)
    return frames.to(device)


# --- model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_untrained_posnet_is_the_identity(device: str) -> None:
    model = build(device=device)
    prev, new = randn(5, 2, P, seed=1, device=device), randn(5, 8, P, seed=2, device=device)
    valid = torch.ones(5, dtype=torch.bool, device=device)
    assert torch.equal(model(prev, new, valid), new)


@pytest.mark.parametrize("residual", [True, False])
def test_rows_without_a_valid_previous_window_pass_through_exactly(residual: bool) -> None:
    model = build(residual=residual, perturb=True)
    prev, new = randn(4, 2, P, seed=1), randn(4, 8, P, seed=2)
    valid = torch.tensor([True, False, True, False])
    out = model(prev, new, valid)
    assert torch.equal(out[~valid], new[~valid])
    assert (out[valid] - new[valid]).abs().amax() > 1e-3  # the others really are adjusted


@pytest.mark.parametrize("device", DEVICES)
def test_adjust_changes_only_the_pose_dims(device: str) -> None:
    model = build(perturb=True, device=device)
    frames = coefficient_frames(3, 8, seed=3, device=device)
    prev = randn(3, 2, P, seed=4, device=device)
    out = model.adjust(frames, prev, torch.ones(3, dtype=torch.bool, device=device))
    assert torch.equal(out[..., layout.EXPRESSION], frames[..., layout.EXPRESSION])
    assert not torch.equal(out[..., layout.POSE], frames[..., layout.POSE])
    assert out.data_ptr() != frames.data_ptr()


@pytest.mark.parametrize("window", [4, 8, 16])
@pytest.mark.parametrize("history", [1, 2, 3])
def test_shapes_follow_the_config(window: int, history: int) -> None:
    model = build(window=window, history=history, perturb=True)
    frames = coefficient_frames(2, window, seed=5)
    out = model.adjust(frames, randn(2, history, P, seed=6), torch.ones(2, dtype=torch.bool))
    assert out.shape == (2, window, layout.DIM)
    with pytest.raises(ValueError, match="new_pose"):
        model(randn(2, history, P, seed=6), randn(2, window + 1, P, seed=7),
              torch.ones(2, dtype=torch.bool))  # fmt: skip
    with pytest.raises(ValueError, match="prev_pose"):
        model(randn(2, history + 1, P, seed=6), randn(2, window, P, seed=7),
              torch.ones(2, dtype=torch.bool))  # fmt: skip


def test_a_batch_of_sessions_equals_separate_runs() -> None:
    model = build(perturb=True)
    prev, new = randn(3, 2, P, seed=1), randn(3, 8, P, seed=2)
    valid = torch.tensor([True, True, False])
    batched = model(prev, new, valid)
    for b in range(3):
        alone = model(prev[b : b + 1], new[b : b + 1], valid[b : b + 1])
        torch.testing.assert_close(batched[b : b + 1], alone, rtol=0, atol=1e-6)


def test_a_constant_pose_offset_moves_the_output_by_the_same_offset() -> None:
    model = build(perturb=True)
    prev, new = randn(3, 2, P, seed=1), randn(3, 8, P, seed=2)
    valid = torch.ones(3, dtype=torch.bool)
    shift = torch.tensor([0.3, -0.2, 0.1, 0.5, -0.4, 0.2])
    torch.testing.assert_close(model(prev + shift, new + shift, valid),
                               model(prev, new, valid) + shift, rtol=0, atol=1e-5)  # fmt: skip


def test_checkpoint_round_trip(tmp_path) -> None:
    model = build(window=4, history=3, perturb=True)
    save_posnet(model, tmp_path / "posnet.safetensors")
    loaded = load_posnet(tmp_path / "posnet.safetensors")
    assert loaded.config == model.config
    prev, new = randn(2, 3, P, seed=1), randn(2, 4, P, seed=2)
    valid = torch.ones(2, dtype=torch.bool)
    assert torch.equal(loaded(prev, new, valid), model(prev, new, valid))


# --- losses ----------------------------------------------------------------------------------


def test_losses_on_hand_made_streams() -> None:
    cfg = PosNetLossConfig(rotation_weight=1.0, translation_weight=1.0)
    # A constant-velocity stream continued perfectly: only the velocity itself costs anything.
    t = torch.arange(10, dtype=torch.float32)[None, :, None].expand(1, 10, P) * 0.1  # (1, 10, P)
    prev, new = t[:, :2], t[:, 2:]
    valid = torch.ones(1, dtype=torch.bool)
    _, terms = posnet_loss(new, new, prev, valid, cfg)
    assert terms["seam"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["second_diff"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["fidelity"].item() == 0.0
    assert terms["first_diff"].item() == pytest.approx(0.1, abs=1e-6)
    # The same window lifted by 1: the seam sees the full jump, the first differences 1/8 of it
    # (one step in eight), the second differences 1/8 of 2 (two of eight straddle the seam).
    _, terms = posnet_loss(new + 1.0, new + 1.0, prev, valid, cfg)
    assert terms["seam"].item() == pytest.approx(1.0, abs=1e-5)
    assert terms["first_diff"].item() == pytest.approx((1.1 + 7 * 0.1) / 8, abs=1e-5)
    assert terms["second_diff"].item() == pytest.approx(2.0 / 8, abs=1e-5)
    # Without a valid previous window the seam is not counted at all.
    _, terms = posnet_loss(new + 1.0, new + 1.0, prev, ~valid, cfg)
    assert terms["seam"].item() == 0.0
    assert terms["second_diff"].item() == pytest.approx(0.0, abs=1e-6)
    # Position continuity (the paper's Eq. 15) instead of velocity continuity.
    _, terms = posnet_loss(new, new, prev, valid, PosNetLossConfig(seam_order=1))
    assert terms["seam"].item() == pytest.approx(0.1 * 7.5, abs=1e-5)  # mean dim weight 7.5


def test_translation_counts_twice_as_much_as_rotation() -> None:
    prev = torch.zeros(1, 2, P)
    new = torch.zeros(1, 8, P)
    valid = torch.ones(1, dtype=torch.bool)
    rot, trans = new.clone(), new.clone()
    rot[..., 0] += 1.0  # pitch
    trans[..., 3] += 1.0  # tx
    loss_rot, _ = posnet_loss(rot, new, prev, valid, PosNetLossConfig())
    loss_trans, _ = posnet_loss(trans, new, prev, valid, PosNetLossConfig())
    assert loss_trans.item() == pytest.approx(2 * loss_rot.item(), rel=1e-6)


# --- runner ----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_smoother_state_is_bounded_and_seeded_by_the_first_window(device: str) -> None:
    model = build(perturb=True, device=device)
    smoother = PoseSmoother(model, sessions=2)
    stream = coefficient_frames(2, 30 * 8, seed=1, device=device)
    first = smoother.step(stream[:, :8])
    assert torch.equal(first, stream[:, :8])  # nothing to continue from yet
    torch.testing.assert_close(smoother.history, stream[:, 6:8, layout.POSE], rtol=0, atol=0)
    for i in range(1, 30):
        out = smoother.step(stream[:, 8 * i : 8 * (i + 1)])
        assert torch.equal(out[..., layout.EXPRESSION], stream[:, 8 * i : 8 * (i + 1),
                                                              layout.EXPRESSION])  # fmt: skip
        assert torch.equal(smoother.history, out[:, -2:, layout.POSE])
    assert smoother.history.shape == (2, 2, P) and smoother.valid.shape == (2,)
    assert set(vars(smoother)) == {"model", "sessions", "device", "dtype", "history", "valid"}
    one = PoseSmoother(model)
    assert one.step(stream[0, :8]).shape == (8, layout.DIM)  # one session, unbatched


def test_reset_and_discontinuity_pass_the_next_window_through() -> None:
    model = build(perturb=True)
    smoother = PoseSmoother(model, sessions=3)
    stream = coefficient_frames(3, 4 * 8, seed=2)
    smoother.step(stream[:, :8])
    smoother.discontinuity(1)
    out = smoother.step(stream[:, 8:16])
    assert torch.equal(out[1], stream[1, 8:16])  # re-anchored session: passed through
    assert not torch.equal(out[0], stream[0, 8:16])  # the others keep being adjusted
    assert torch.equal(smoother.history[1], stream[1, 14:16, layout.POSE])  # re-seeded
    assert bool(smoother.valid.all())
    smoother.reset()
    assert torch.equal(smoother.step(stream[:, 16:24]), stream[:, 16:24])
    smoother.discontinuity()
    assert torch.equal(smoother.step(stream[:, 24:32]), stream[:, 24:32])


def test_a_window_shorter_than_the_history_seeds_by_repeating_its_first_frame() -> None:
    model = build(window=2, history=3, perturb=True)
    frames = coefficient_frames(1, 2, seed=3)
    _, history, valid = smooth_step(model, frames, torch.full((1, 3, P), 9.0),
                                    torch.zeros(1, dtype=torch.bool))  # fmt: skip
    pose = frames[0, :, layout.POSE]
    assert torch.equal(history[0], torch.stack([pose[0], pose[0], pose[1]]))
    assert bool(valid.all())


def test_stacked_sessions_equal_separate_smoothers() -> None:
    model = build(perturb=True)
    stream = coefficient_frames(3, 3 * 8, seed=4)
    alone = [PoseSmoother(model) for _ in range(3)]
    stacked = [PoseSmoother(model) for _ in range(3)]
    stacked[2].step(stream[2, :8])  # one session further along than the others
    alone[2].step(stream[2, :8])
    for i in range(1, 3):
        together = step_sessions(stacked, stream[:, 8 * i : 8 * (i + 1)])
        for s in range(3):
            expected = alone[s].step(stream[s, 8 * i : 8 * (i + 1)])
            torch.testing.assert_close(together[s], expected, rtol=0, atol=1e-6)
    for a, b in zip(alone, stacked, strict=True):
        torch.testing.assert_close(a.history, b.history, rtol=0, atol=1e-6)


def test_smoother_refuses_wrong_windows() -> None:
    smoother = PoseSmoother(build(), sessions=2)
    with pytest.raises(ValueError, match="frames"):
        smoother.step(coefficient_frames(2, 7, seed=1))
    with pytest.raises(ValueError, match="frames"):
        smoother.step(coefficient_frames(2, 8, seed=1).double())


# --- a tiny synthetic training run -----------------------------------------------------------


def pose_tracks(n: int, frames: int, gen: torch.Generator, amp: float = 0.15) -> torch.Tensor:
    """(n, frames, 6) smooth head motion: per dim a sum of three sines of 0.1 to 0.7 Hz."""
    t = torch.arange(frames, dtype=torch.float32) / layout.FPS  # (T,)
    freq = 0.1 + 0.6 * torch.rand(n, 3, 1, P, generator=gen)  # (n, 3 sines, 1, P)
    gain = amp * (0.3 + 0.7 * torch.rand(n, 3, 1, P, generator=gen))
    phase = 2 * math.pi * torch.rand(n, 3, 1, P, generator=gen)
    waves = gain * torch.sin(2 * math.pi * freq * t[None, None, :, None] + phase)  # (n, 3, T, P)
    return waves.sum(dim=1)


def windowed(truth: torch.Tensor, window: int, gen: torch.Generator, jump: float,
             noise: float) -> torch.Tensor:  # fmt: skip
    """What a window-by-window generator emits: each window of ``truth`` shifted by its own
    constant offset (std ``jump``) plus per-frame noise."""
    n, T, _ = truth.shape
    k = T // window
    shift = jump * torch.randn(n, k, 1, P, generator=gen)  # (n, k windows, 1, P)
    wobble = noise * torch.randn(n, k, window, P, generator=gen)
    return (truth[:, : k * window].reshape(n, k, window, P) + shift + wobble).reshape(n, T, P)


def train_tiny(model: PosNet, *, steps: int, jump: float, noise: float, seed: int) -> None:
    """Adam on rollouts of 3 windows (the first seeds the history), adjusted history detached."""
    W, H = model.config.window, model.config.history
    gen = torch.Generator().manual_seed(seed)
    loss_cfg = PosNetLossConfig()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    valid = torch.ones(32, dtype=torch.bool)
    model.train()
    for _ in range(steps):
        raw = windowed(pose_tracks(32, 3 * W, gen), W, gen, jump, noise).view(32, 3, W, P)
        prev, total = raw[:, 0, -H:], 0.0
        for r in (1, 2):
            adjusted = model(prev, raw[:, r], valid)
            loss, _ = posnet_loss(adjusted, raw[:, r], prev, valid, loss_cfg)
            total = total + loss / 2
            prev = adjusted[:, -H:].detach()
        opt.zero_grad()
        total.backward()
        opt.step()
    model.eval()


@pytest.fixture
def one_thread():
    """Tiny matrices train fastest on one thread (and do not fight a busy machine for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_removes_the_seam_jumps_and_keeps_the_motion(one_thread) -> None:
    W, jump, noise = 8, 0.05, 0.002
    model = build(window=W, history=2, hidden=32)
    train_tiny(model, steps=200, jump=jump, noise=noise, seed=0)

    gen = torch.Generator().manual_seed(1)
    truth = pose_tracks(16, 40 * W, gen)  # 16 sessions × 40 windows, unseen during training
    raw = windowed(truth, W, gen, jump, noise)
    frames = coefficient_frames(16, 40 * W, seed=2)
    frames[..., layout.POSE] = raw
    smoother = PoseSmoother(model, sessions=16)
    out = torch.cat([smoother.step(frames[:, i * W : (i + 1) * W]) for i in range(40)], dim=1)

    before = seam_jumps(raw.numpy(), W)["pose"]
    after = seam_jumps(out[..., layout.POSE].numpy(), W)["pose"]
    factor = before["velocity_ratio"] / after["velocity_ratio"]
    change = (out[..., layout.POSE] - raw).abs().mean().item()
    seam_step = before["velocity_seam"]  # the injected jump as the raw stream shows it
    print(f"seam/inside velocity ratio {before['velocity_ratio']:.2f} -> "
          f"{after['velocity_ratio']:.2f} ({factor:.1f}x); seam velocity "
          f"{seam_step:.4f} -> {after['velocity_seam']:.4f}; mean |change| {change:.4f}")
    assert before["velocity_ratio"] > 3.0  # the raw stream really jumps at the seams
    assert factor >= 3.0
    assert after["velocity_seam"] < seam_step / 3  # the seams themselves got smoother
    assert change < 0.5 * seam_step  # motion kept: far less change than the jumps removed
    # ...and no worse a copy of the true motion than the generator's own output was.
    assert (out[..., layout.POSE] - truth).abs().mean() <= (raw - truth).abs().mean()
    assert torch.equal(out[..., layout.EXPRESSION], frames[..., layout.EXPRESSION])
