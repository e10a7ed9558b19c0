from __future__ import annotations

import json

import numpy as np
import pytest

from models.data import emotion
from models.metrics import correlation, personality, reaction, smoothness
from models.metrics.dtw import dtw, dtw_cross, dtw_many


def naive_dtw(a: np.ndarray, b: np.ndarray, radius: int | None = None) -> float:
    """The textbook full-table DTW, for reference."""
    n, m = len(a), len(b)
    table = np.full((n + 1, m + 1), np.inf)
    table[0, 0] = 0.0
    for i in range(n):
        for j in range(m):
            if radius is not None and abs(i - j) > max(radius, abs(n - m)):
                continue
            step = min(table[i, j], table[i, j + 1], table[i + 1, j])
            table[i + 1, j + 1] = np.sum((a[i] - b[j]) ** 2) + step
    return float(np.sqrt(table[n, m]))


# --- DTW -------------------------------------------------------------------------------------


def test_dtw_hand_cases() -> None:
    x = np.random.default_rng(0).normal(size=(20, 3))
    assert dtw(x, x) == 0.0
    # A step one frame late: warping absorbs it (Euclidean would be 1).
    assert dtw([0, 0, 1, 1, 1], [0, 0, 0, 1, 1]) == 0.0
    # a = [0, 1, 2], b = [0, 3]; squared local costs
    #   d = [[0, 9],      accumulated C = [[0, 9],
    #        [1, 4],                       [1, 4 + min(0, 9, 1) = 4],
    #        [4, 1]]                       [5, 1 + min(4, 1, 5) = 2]]
    # best path (0,0) (1,0) (2,1) costs 0 + 1 + 1 = 2, and the distance is sqrt(2).
    assert dtw([0, 1, 2], [0, 3]) == pytest.approx(np.sqrt(2.0), abs=1e-12)
    assert dtw([0, 3], [0, 1, 2]) == pytest.approx(np.sqrt(2.0), abs=1e-12)
    # Multivariate: the local cost is the squared distance over all dims together.
    assert dtw([[0, 0], [1, 1]], [[0, 0], [1, 1], [1, 1]]) == 0.0
    assert dtw([[0, 0]], [[3, 4]]) == pytest.approx(5.0)


def test_dtw_matches_reference_symmetric_and_below_euclidean() -> None:
    rng = np.random.default_rng(1)
    for trial in range(60):
        n, m, d = rng.integers(1, 12), rng.integers(1, 12), rng.integers(1, 4)
        a, b = rng.normal(size=(n, d)), rng.normal(size=(m, d))
        radius = None if trial % 2 else int(rng.integers(0, 4))
        assert dtw(a, b, radius=radius) == pytest.approx(naive_dtw(a, b, radius), rel=1e-12)
    a, b = rng.normal(size=(40, 5)), rng.normal(size=(40, 5))
    assert dtw(a, b) == pytest.approx(dtw(b, a), rel=1e-12)
    euclid = float(np.linalg.norm(a - b))
    assert dtw(a, b) < euclid
    assert dtw(a, b, radius=0) == pytest.approx(euclid, rel=1e-12)  # the band leaves the diagonal
    assert dtw(a, b) <= dtw(a, b, radius=3) <= euclid


def test_dtw_batched_helpers_agree() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 15, 4)), rng.normal(size=(2, 15, 4))
    cross = dtw_cross(a, b)
    assert cross.shape == (3, 2)
    assert cross[2, 1] == pytest.approx(dtw(a[2], b[1]), rel=1e-12)
    np.testing.assert_allclose(dtw_many(list(a[:2]), list(b)), [cross[0, 0], cross[1, 1]])
    with pytest.raises(ValueError, match="dims"):
        dtw(a[0], b[0, :, :2])


# --- correlation -----------------------------------------------------------------------------


def test_ccc_identical_negated_constant() -> None:
    x = np.random.default_rng(3).normal(size=(200, 4))
    x -= x.mean(axis=0)
    eps = correlation.REACT_CCC_EPS
    np.testing.assert_allclose(correlation.concordance(x, x, eps=eps), 1.0, atol=1e-6)
    np.testing.assert_allclose(correlation.concordance(x, -x, eps=eps), -1.0, atol=1e-6)
    const = np.full_like(x, 0.3)
    assert np.abs(correlation.concordance(const, x, eps=eps)).max() < 1e-12
    assert np.abs(correlation.concordance(const, const, eps=eps)).max() < 1e-12  # nan-safe
    # Shifted by a constant: fully correlated but not concordant.
    assert (correlation.concordance(x, x + 1.0, eps=eps) < 0.9).all()
    # ccc_matrix is the same CCC, averaged over dims.
    m = correlation.ccc_matrix(x[None], np.stack([x, -x, const]))
    np.testing.assert_allclose(m[0], [1.0, -1.0, 0.0], atol=1e-6)
    rng = np.random.default_rng(13)
    p, r = rng.uniform(size=(3, 40, 5)), rng.uniform(size=(2, 40, 5))
    per_pair = correlation.concordance(p[:, None], r[None], eps=eps).mean(axis=-1)
    np.testing.assert_allclose(correlation.ccc_matrix(p, r), per_pair, rtol=1e-10)


# --- appropriateness -------------------------------------------------------------------------


def random_emotion(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(0, 1, (*shape, emotion.DIM))


def test_fr_corr_sums_over_k_and_takes_best_neighbour() -> None:
    rng = np.random.default_rng(4)
    gt = random_emotion(rng, 3, 50)
    one = gt[2][None, None]  # sample 0's single prediction equals listener 2
    two = np.concatenate([one, one], axis=1)  # the same prediction twice
    neighbours = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 1]], dtype=bool)

    def first(p: np.ndarray) -> float:
        preds = np.concatenate([p, random_emotion(rng, 2, p.shape[1], 50)], axis=0)
        return float(reaction.fr_corr(preds, gt, neighbours).per_sample[0])

    r1, r2 = first(one), first(two)
    assert r1 == pytest.approx(1.0, abs=1e-6)  # max over {1, 2} found listener 2
    assert r2 == pytest.approx(2.0 * r1, rel=1e-12)
    result = reaction.fr_corr(np.concatenate([two, two, two]), gt, neighbours)
    assert result.per_prediction == pytest.approx(result.official / 2)
    expected = correlation.ccc_matrix(two[0], gt[[0]]).max(axis=1).sum()  # sample 1: only 0
    assert result.per_sample[1] == pytest.approx(expected)


def test_empty_neighbour_row_falls_back_to_own_ground_truth() -> None:
    rng = np.random.default_rng(5)
    gt = random_emotion(rng, 2, 30)
    preds = gt[:, None]  # each sample predicts its own listener
    result = reaction.fr_dist(preds, gt, np.zeros((2, 2), dtype=bool))
    assert result.empty_rows == 2 and result.official == 0.0


@pytest.mark.parametrize(("dim", "weight"), [(3, 1 / 15), (15, 1.0), (20, 1 / 8)])
def test_fr_dist_group_weights(dim: int, weight: float) -> None:
    rng = np.random.default_rng(6)
    frames, delta = 40, 0.5
    gt = random_emotion(rng, 1, frames)
    gt[..., dim] = 0.2  # constant in the changed dim, so every alignment costs delta**2 per step
    pred = gt[:, None].copy()
    pred[..., dim] += delta
    result = reaction.fr_dist(pred, gt, np.ones((1, 1), dtype=bool))
    assert result.official == pytest.approx(weight * delta * np.sqrt(frames), rel=1e-9)
    dist58 = reaction.fr_dist(pred, gt, np.ones((1, 1), dtype=bool), groups=reaction.ALL_DIMS)
    assert dist58.official == pytest.approx(delta * np.sqrt(frames), rel=1e-9)


def test_fr_dist_takes_min_over_neighbours_and_sums_over_k() -> None:
    rng = np.random.default_rng(7)
    gt = random_emotion(rng, 3, 30)
    preds = np.stack([gt[1], gt[1]])[None].repeat(3, axis=0)  # (3, 2, 30, 25)
    neighbours = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 1]], dtype=bool)
    result = reaction.fr_dist(preds, gt, neighbours, workers=2)
    assert result.per_sample[0] == 0.0 and result.per_sample[1] == 0.0

    def weighted(a: np.ndarray, b: np.ndarray) -> float:
        return sum(w * dtw(a[:, g], b[:, g]) for g, w in reaction.EMOTION_DTW_GROUPS)

    best = min(weighted(gt[1], gt[0]), weighted(gt[1], gt[2]))  # sample 2's neighbours: 0, 2
    assert result.per_sample[2] == pytest.approx(2 * best, rel=1e-12)


# --- diversity -------------------------------------------------------------------------------


def test_fr_div_hand_case_and_identical() -> None:
    # K = 2, T = 2, D = 1: ||[0, 0] - [1, 3]||^2 = 10, both orders: 20, / (2·1·2·1) = 5.
    preds = np.array([[[[0.0], [0.0]], [[1.0], [3.0]]]])
    assert reaction.fr_div(preds) == pytest.approx(5.0)
    same = np.repeat(random_emotion(np.random.default_rng(8), 2, 1, 10), 4, axis=1)
    assert reaction.fr_div(same) == pytest.approx(0.0, abs=1e-12)


def test_fr_dvs_hand_case() -> None:
    # N = 2, K = 1, T = 1, D = 2: ||[0, 0] - [3, 4]||^2 = 25, both orders 50, / (2·1·1·1·2) = 12.5
    preds = np.array([[[[0.0, 0.0]]], [[[3.0, 4.0]]]])
    assert reaction.fr_dvs(preds) == pytest.approx(12.5)
    # K = 2: only same-slot pairs count. Slot 0: [0] vs [2] -> 8; slot 1: [5] vs [5] -> 0.
    preds = np.array([[[[0.0]], [[5.0]]], [[[2.0]], [[5.0]]]])
    assert reaction.fr_dvs(preds) == pytest.approx(8.0 / (2 * 1 * 2 * 1 * 1))


def test_fr_var_of_a_sine() -> None:
    frames, amp = 750, 2.0
    x = amp * np.sin(2 * np.pi * np.arange(frames) / 25)  # 30 whole periods
    preds = np.broadcast_to(x[None, None, :, None], (2, 3, frames, 4))
    # Population variance amp^2 / 2; the REACT code uses the unbiased estimate (T / (T - 1)).
    assert reaction.fr_var(preds) == pytest.approx(amp**2 / 2 * frames / (frames - 1), rel=1e-9)


# --- synchrony -------------------------------------------------------------------------------


def delayed(x: np.ndarray, d: int, rng: np.random.Generator) -> np.ndarray:
    """``out[u] = x[u - d]`` (d > 0: follows x by d frames); vacated frames get fresh noise."""
    out = rng.normal(size=x.shape)
    if d >= 0:
        out[d:] = x[: len(x) - d]
    else:
        out[:d] = x[-d:]
    return out


def test_fr_syn_recovers_a_known_delay_with_its_sign() -> None:
    rng = np.random.default_rng(9)
    speaker = rng.normal(size=(2, 300, 5))
    preds = np.stack([
        np.stack([delayed(speaker[0], 7, rng), delayed(speaker[0], -12, rng)]),
        np.stack([delayed(speaker[1], 0, rng), delayed(speaker[1], 30, rng)]),
    ])  # fmt: skip
    result = reaction.fr_syn(preds, speaker, workers=2)
    np.testing.assert_array_equal(result.lags, [[7, -12], [0, 30]])  # + = prediction follows
    assert result.official == pytest.approx((7 + 0) / 2)  # first prediction per sample only
    assert result.all_predictions == pytest.approx((7 + 12 + 0 + 30) / 4)


def test_lag_curves_match_a_direct_transcription_of_the_definition() -> None:
    rng = np.random.default_rng(14)
    x, y, max_lag = rng.normal(size=(40, 3)), rng.normal(size=(40, 3)), 6
    expected = []
    for lag in range(-max_lag, max_lag + 1):  # pair x[u] with y[u - lag]
        xs, ys = (x[lag:], y[: len(y) - lag]) if lag >= 0 else (x[:lag], y[-lag:])
        expected.append(np.mean([np.corrcoef(xs[:, d], ys[:, d])[0, 1] for d in range(3)]))
    curve = correlation.lag_curves(x[None], y[None], max_lag)[0]
    np.testing.assert_allclose(curve, expected, rtol=1e-10)


def test_fr_syn_constant_prediction_gets_the_worst_offset() -> None:
    speaker = np.random.default_rng(10).normal(size=(1, 120, 3))
    result = reaction.fr_syn(np.zeros((1, 1, 120, 3)), speaker)
    assert result.official == reaction.SYNC_MAX_LAG


def test_evaluate_reactions_is_complete_serialisable_and_deterministic() -> None:
    rng = np.random.default_rng(11)
    n, k, frames = 3, 2, 60
    listener = rng.uniform(0, 1, (n, frames, 58))
    speaker = rng.uniform(0, 1, (n, frames, 58))
    preds = np.repeat(listener[:, None], k, axis=1)  # every prediction is the sample's own GT
    preds[:, 1] += rng.normal(0, 0.05, (n, frames, 58))
    neighbours = np.eye(n, dtype=bool)
    out = reaction.evaluate_reactions(preds, listener, speaker, neighbours)
    assert out == reaction.evaluate_reactions(preds, listener, speaker, neighbours, workers=2)
    json.dumps(out)
    for key in ("FRCorr", "FRCorr_per_pred", "FRDist", "FRDist_per_pred", "FRCorr_58",
                "FRDist_58", "FRDiv", "FRDvs", "FRVar", "FRSyn", "FRSyn_all"):  # fmt: skip
        assert isinstance(out[key], float) and np.isfinite(out[key]), key
    assert (out["N"], out["K"], out["T"]) == (n, k, frames)
    assert out["FRCorr_58"] > 1.8  # prediction 0 exact (CCC 1), prediction 1 close
    assert out["FRDist"] > 0 and out["FRDist_per_pred"] == pytest.approx(out["FRDist"] / k)


# --- smoothness ------------------------------------------------------------------------------


def test_seam_definitions_on_a_piecewise_constant_stream() -> None:
    frames, window, jump = 100, 25, 0.1
    x = np.repeat(np.arange(frames // window) * jump, window)[:, None].repeat(6, axis=1)
    np.testing.assert_array_equal(smoothness.boundaries(frames, window), [25, 50, 75])
    shifted = smoothness.boundaries(frames, window, offset=10)
    np.testing.assert_array_equal(shifted, [10, 35, 60, 85])
    np.testing.assert_array_equal(np.flatnonzero(smoothness.seam_mask(8, 4, 2)), [2, 3])
    out = smoothness.seam_jumps(x, window)["pose"]
    assert out["seams"] == 3
    assert out["velocity_seam"] == pytest.approx(jump)  # x[b] - x[b-1]
    assert out["acceleration_seam"] == pytest.approx(jump)  # +jump, -jump
    assert out["jerk_seam"] == pytest.approx(4 * jump / 3)  # jump, -2 jump, jump
    assert out["velocity_inside"] == 0 and out["velocity_ratio"] == np.inf


def test_seam_ratios_linear_ramps_vs_smooth_sine() -> None:
    frames, window = 750, 25
    t = np.arange(frames)
    ramps = 0.001 * (t % window) + 0.1 * (t // window)  # slow ramps, a jump at every seam
    coeffs = np.zeros((2, frames, 58))
    coeffs[..., 52:] = ramps[None, :, None]
    jumpy = smoothness.seam_jumps(coeffs, window)  # 58-d input: the pose dims are taken
    assert jumpy["rotation"]["velocity_ratio"] > 50
    assert jumpy["translation"]["acceleration_ratio"] > 50
    sine = np.sin(2 * np.pi * t[:, None] / 37 + np.linspace(0, 3, 6))
    smooth = smoothness.seam_jumps(sine, window)
    for group in smoothness.GROUPS:
        for name in smoothness.ORDERS:
            assert 0.9 < smooth[group][f"{name}_ratio"] < 1.1, (group, name)


def test_expression_seam_velocity_on_a_piecewise_constant_stream() -> None:
    frames, window, jump = 100, 25, 0.1
    x = np.zeros((2, frames, 58))
    x[..., :52] = np.repeat(np.arange(frames // window) * jump, window)[None, :, None]
    x[..., 52:] = 5.0 * np.arange(frames)[None, :, None]  # pose moves a lot: not counted
    out = smoothness.expression_seam_velocity(x, window)
    assert out["velocity_seam"] == pytest.approx(jump)
    assert out["velocity_inside"] == 0 and out["velocity_ratio"] == np.inf
    t = np.arange(frames)
    x[..., :52] = 0.5 + 0.4 * np.sin(2 * np.pi * t / 37)[None, :, None]
    assert 0.8 < smoothness.expression_seam_velocity(x, window)["velocity_ratio"] < 1.2
    with pytest.raises(ValueError, match="coefficients"):
        smoothness.expression_seam_velocity(x[..., :6], window)


# --- personality -----------------------------------------------------------------------------


def test_personality_metrics_hand_cases() -> None:
    true = np.random.default_rng(12).uniform(0, 1, (20, 5))
    perfect = personality.personality_metrics(true, true)
    assert perfect["mean_mse"] == 0 and perfect["openness_mse"] == 0
    assert perfect["mean_pcc"] == pytest.approx(1.0) and perfect["mean_ccc"] == pytest.approx(1.0)
    shifted = personality.personality_metrics(true + 0.1, true)
    assert shifted["mean_mse"] == pytest.approx(0.01)
    assert shifted["mean_pcc"] == pytest.approx(1.0) and shifted["mean_ccc"] < 0.95
    pred = true.copy()
    pred[:, 2] = 0.5  # constant extraversion prediction: PCC undefined, CCC 0
    partial = personality.personality_metrics(pred, true)
    assert np.isnan(partial["extraversion_pcc"]) and partial["pcc_defined"] == 4
    assert partial["mean_pcc"] == pytest.approx(1.0)
    assert partial["extraversion_ccc"] == pytest.approx(0.0) and partial["ccc_defined"] == 5
    with pytest.raises(ValueError, match="shape"):
        personality.personality_metrics(true[:, :4], true[:, :4])
