"""Self-supervised pretraining losses against brute-force references (python loops, float64)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from glmil_auto.pretraining.losses import (
    masked_reconstruction_loss,
    negative_cosine_predictor_loss,
    nt_xent_loss,
)

TOL = 1e-6


# ---------------------------------------------------------------- brute-force references
def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of two 1-D tensors from scalar sums (differentiable, no vectorised normalisation)."""
    dot = sum(a[k] * b[k] for k in range(a.shape[0]))
    na = torch.sqrt(sum(a[k] * a[k] for k in range(a.shape[0])))
    nb = torch.sqrt(sum(b[k] * b[k] for k in range(b.shape[0])))
    return dot / (na * nb)


def _nt_xent_brute(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> list[torch.Tensor]:
    """Per-anchor NT-Xent by loops over pairs, order [z1 rows, z2 rows]."""
    z = [row for row in z1.double()] + [row for row in z2.double()]
    n = z1.shape[0]
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        numerator = torch.exp(_cos(z[i], z[positive]) / temperature)
        denominator = sum(torch.exp(_cos(z[i], z[k]) / temperature) for k in range(2 * n) if k != i)
        losses.append(-torch.log(numerator / denominator))
    return losses


def _predictor_brute(p1, z2, p2, z1) -> list[float]:
    out = []
    for i in range(p1.shape[0]):
        a = [float(x) for x in p1[i]], [float(x) for x in z2[i]]
        b = [float(x) for x in p2[i]], [float(x) for x in z1[i]]
        cos = [sum(u * v for u, v in zip(p, z)) / math.sqrt(sum(u * u for u in p) * sum(v * v for v in z))
               for p, z in (a, b)]
        out.append(-0.5 * (cos[0] + cos[1]))
    return out


def _masked_brute(prediction, target, mask) -> list[float]:
    """Per-sample MSE over masked entries by loops over channels and voxels (NaN if none)."""
    b, c = prediction.shape[:2]
    spatial = prediction.shape[2:]
    out = []
    for s in range(b):
        total, count = 0.0, 0
        for ch in range(c):
            for voxel in itertools.product(*(range(d) for d in spatial)):
                m = mask[(s, 0 if mask.shape[1] == 1 else ch, *voxel)]
                if bool(m):
                    total += (float(prediction[(s, ch, *voxel)]) - float(target[(s, ch, *voxel)])) ** 2
                    count += 1
        out.append(total / count if count else math.nan)
    return out


# ---------------------------------------------------------------- NT-Xent
@pytest.mark.parametrize("n,d,temperature", [(2, 3, 0.1), (3, 8, 0.5), (5, 4, 1.0), (8, 16, 0.07)])
def test_nt_xent_matches_brute_force(n, d, temperature):
    g = torch.Generator().manual_seed(n * 100 + d)
    z1, z2 = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    expected = torch.stack(_nt_xent_brute(z1, z2, temperature))
    per_anchor = nt_xent_loss(z1, z2, temperature, reduction="none")
    assert per_anchor.shape == (2 * n,)
    torch.testing.assert_close(per_anchor, expected, atol=TOL, rtol=0)
    torch.testing.assert_close(nt_xent_loss(z1, z2, temperature), expected.mean(), atol=TOL, rtol=0)
    torch.testing.assert_close(nt_xent_loss(z1, z2, temperature, reduction="sum"), expected.sum(), atol=TOL, rtol=0)


def test_nt_xent_float32_input_close_to_brute_force():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    expected = torch.stack(_nt_xent_brute(z1, z2, 0.2))
    out = nt_xent_loss(z1, z2, 0.2, reduction="none")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)


def test_nt_xent_gradient_matches_brute_force_autograd():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    grads = torch.autograd.grad(nt_xent_loss(z1, z2, 0.3), (z1, z2))
    brute = torch.stack(_nt_xent_brute(z1, z2, 0.3)).mean()
    brute_grads = torch.autograd.grad(brute, (z1, z2))
    for got, want in zip(grads, brute_grads):
        torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_loss(a, b, 0.3, reduction="none"), (z1, z2))


def test_nt_xent_invariant_to_embedding_scale():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    scales = torch.rand(4, 1, generator=g, dtype=torch.float64) * 100 + 0.01
    base = nt_xent_loss(z1, z2, reduction="none")
    torch.testing.assert_close(nt_xent_loss(z1 * scales, z2 * 7.5, reduction="none"), base, atol=TOL, rtol=0)


def test_nt_xent_aligned_views_lower_than_random():
    g = torch.Generator().manual_seed(4)
    # distinct items: orthogonal directions; the second view is the same direction (scaled)
    items = torch.eye(6, dtype=torch.float64)
    aligned = nt_xent_loss(items, 3.0 * items, 0.1)
    random = nt_xent_loss(torch.randn(6, 6, generator=g, dtype=torch.float64),
                          torch.randn(6, 6, generator=g, dtype=torch.float64), 0.1)
    assert aligned < random
    # aligned orthogonal views: l_i = -log(e^10 / (e^10 + 2N-2)) exactly
    torch.testing.assert_close(aligned, torch.tensor(math.log1p(10 * math.exp(-10)), dtype=torch.float64))


def test_nt_xent_stable_at_low_temperature():
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    out = nt_xent_loss(z1, z2, temperature=1e-4, reduction="none")
    assert torch.isfinite(out).all()


def test_nt_xent_bad_arguments():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(z, torch.randn(4, 2))
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="N >= 2"):
        nt_xent_loss(torch.randn(1, 3), torch.randn(1, 3))
    for temperature in (0.0, -0.5):
        with pytest.raises(ValueError, match="temperature"):
            nt_xent_loss(z, z, temperature=temperature)
    with pytest.raises(ValueError, match="reduction"):
        nt_xent_loss(z, z, reduction="average")


# ---------------------------------------------------------------- SimSiam / BYOL
@pytest.mark.parametrize("n,d", [(1, 3), (4, 8), (7, 2)])
def test_predictor_loss_matches_brute_force(n, d):
    g = torch.Generator().manual_seed(10 + n)
    p1, z2, p2, z1 = (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(4))
    expected = torch.tensor(_predictor_brute(p1, z2, p2, z1), dtype=torch.float64)
    per_item = negative_cosine_predictor_loss(p1, z2, p2, z1, reduction="none")
    assert per_item.shape == (n,)
    torch.testing.assert_close(per_item, expected, atol=TOL, rtol=0)
    torch.testing.assert_close(negative_cosine_predictor_loss(p1, z2, p2, z1), expected.mean(), atol=TOL, rtol=0)
    torch.testing.assert_close(negative_cosine_predictor_loss(p1, z2, p2, z1, reduction="sum"), expected.sum(),
                               atol=TOL, rtol=0)


def test_predictor_loss_aligned_is_minus_one():
    p = torch.randn(3, 4, dtype=torch.float64)
    out = negative_cosine_predictor_loss(p, 2 * p, p, 0.5 * p, reduction="none")
    torch.testing.assert_close(out, torch.full((3,), -1.0, dtype=torch.float64))


def test_predictor_loss_stops_gradient_into_targets():
    g = torch.Generator().manual_seed(11)
    p1, z2, p2, z1 = (torch.randn(3, 5, generator=g, requires_grad=True) for _ in range(4))
    negative_cosine_predictor_loss(p1, z2, p2, z1).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad is not None and p2.grad is not None and p1.grad.abs().sum() > 0
    # the targets may come straight out of a graph shared with the predictions
    base = torch.randn(3, 5, requires_grad=True)
    z = base * 2
    loss = negative_cosine_predictor_loss(z, z, z + 1, z)
    (grad,) = torch.autograd.grad(loss, base)
    (grad_p_only,) = torch.autograd.grad(negative_cosine_predictor_loss(base * 2, z.detach(), base * 2 + 1, z.detach()),
                                         base)
    torch.testing.assert_close(grad, grad_p_only)


def test_predictor_loss_bad_arguments():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="same shape"):
        negative_cosine_predictor_loss(x, x, x, torch.randn(3, 5))
    with pytest.raises(ValueError, match="same shape"):
        negative_cosine_predictor_loss(*(torch.randn(4) for _ in range(4)))
    with pytest.raises(ValueError, match="reduction"):
        negative_cosine_predictor_loss(x, x, x, x, reduction="max")


# ---------------------------------------------------------------- masked reconstruction
@pytest.mark.parametrize("shape,mask_channels", [((2, 1, 4, 5), 1), ((3, 2, 3, 3, 2), 1), ((2, 3, 4, 3), 3)])
@pytest.mark.parametrize("float_mask", [False, True])
def test_masked_reconstruction_matches_brute_force(shape, mask_channels, float_mask):
    g = torch.Generator().manual_seed(sum(shape) + mask_channels)
    prediction = torch.randn(shape, generator=g, dtype=torch.float64)
    target = torch.randn(shape, generator=g, dtype=torch.float64)
    mask = torch.rand((shape[0], mask_channels, *shape[2:]), generator=g) < 0.4
    mask[0].fill_(True)  # at least one sample with masked voxels
    if float_mask:
        mask = mask.float()
    expected = torch.tensor(_masked_brute(prediction, target, mask), dtype=torch.float64)
    per_sample = masked_reconstruction_loss(prediction, target, mask, reduction="none")
    assert per_sample.shape == (shape[0],)
    torch.testing.assert_close(per_sample, expected, atol=TOL, rtol=0, equal_nan=True)
    valid = ~torch.isnan(expected)
    torch.testing.assert_close(masked_reconstruction_loss(prediction, target, mask), expected[valid].mean(),
                               atol=TOL, rtol=0)
    torch.testing.assert_close(masked_reconstruction_loss(prediction, target, mask, reduction="sum"),
                               expected[valid].sum(), atol=TOL, rtol=0)


def test_masked_reconstruction_ignores_unmasked_voxels():
    g = torch.Generator().manual_seed(20)
    prediction = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 1, 4, 4, generator=g) < 0.5
    mask[:, :, 0, 0] = True
    base = masked_reconstruction_loss(prediction, target, mask, reduction="none")
    hidden = mask.expand_as(prediction)
    changed = torch.where(hidden, prediction.detach(), torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64) * 50)
    torch.testing.assert_close(masked_reconstruction_loss(changed, target, mask, reduction="none"), base)
    # NaN at unmasked entries leaks neither into the value nor into the gradient
    with_nan = torch.where(hidden, prediction, torch.nan)
    target_nan = torch.where(hidden, target, torch.nan)
    loss = masked_reconstruction_loss(with_nan, target_nan, mask)
    torch.testing.assert_close(loss, base.mean())
    (grad,) = torch.autograd.grad(loss, prediction)
    assert torch.isfinite(grad).all() and (grad[~hidden] == 0).all()


def test_masked_reconstruction_samples_without_masked_voxels():
    g = torch.Generator().manual_seed(21)
    prediction = torch.randn(3, 1, 4, 4, generator=g, requires_grad=True)
    target = torch.randn(3, 1, 4, 4, generator=g)
    mask = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    mask[1, 0, :2] = True
    per_sample = masked_reconstruction_loss(prediction, target, mask, reduction="none")
    assert torch.isnan(per_sample[[0, 2]]).all() and torch.isfinite(per_sample[1])
    torch.testing.assert_close(masked_reconstruction_loss(prediction, target, mask), per_sample[1])
    torch.testing.assert_close(masked_reconstruction_loss(prediction, target, mask, reduction="sum"), per_sample[1])
    # no masked voxel anywhere: a zero still attached to the prediction (even with NaN in the data)
    none = torch.zeros_like(mask)
    for reduction in ("mean", "sum"):
        zero = masked_reconstruction_loss(prediction * torch.nan, target, none, reduction=reduction)
        assert zero.item() == 0.0 and zero.grad_fn is not None
        (grad,) = torch.autograd.grad(masked_reconstruction_loss(prediction, target, none, reduction=reduction),
                                      prediction)
        assert (grad == 0).all()
    assert torch.isnan(masked_reconstruction_loss(prediction, target, none, reduction="none")).all()


def test_masked_reconstruction_half_precision_computes_in_float32():
    g = torch.Generator().manual_seed(22)
    prediction = torch.randn(2, 1, 3, 3, generator=g).half()
    target = torch.randn(2, 1, 3, 3, generator=g).half()
    mask = torch.rand(2, 1, 3, 3, generator=g) < 0.5
    mask[:, :, 0, 0] = True
    out = masked_reconstruction_loss(prediction, target, mask, reduction="none")
    assert out.dtype == torch.float32
    expected = torch.tensor(_masked_brute(prediction, target, mask), dtype=torch.float32)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
        assert nt_xent_loss(z1, z2).dtype == torch.float32
        assert negative_cosine_predictor_loss(z1, z2, z2, z1).dtype == torch.float32


def test_masked_reconstruction_bad_arguments():
    x = torch.randn(2, 2, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        masked_reconstruction_loss(x, torch.randn(2, 2, 4, 3), torch.ones(2, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="same shape"):
        masked_reconstruction_loss(torch.randn(2, 4), torch.randn(2, 4), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be"):
        masked_reconstruction_loss(x, x, torch.ones(2, 3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be"):
        masked_reconstruction_loss(x, x, torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="only 0 and 1"):
        masked_reconstruction_loss(x, x, torch.full((2, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="reduction"):
        masked_reconstruction_loss(x, x, torch.ones(2, 1, 4, 4, dtype=torch.bool), reduction="mse")
