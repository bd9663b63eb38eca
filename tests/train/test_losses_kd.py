"""Maths of the structural distillation terms: pair-wise-frames affinity, ConvLSTM multi-frame KD, SKD."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import parametrize

from vsseg_edge.train.losses import (
    ConvLSTMCell,
    MultiFrameKDLoss,
    PairwiseFramesKDLoss,
    SkdPairwiseLoss,
    SkdPixelLoss,
    SpectralNormDiscriminator,
    cross_frame_affinity,
    gradient_penalty,
    holistic_discriminator_loss,
    holistic_generator_loss,
    kl_map,
    self_cosine_graph,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- pair-wise frames


def test_cross_frame_affinity_is_cosine_and_compat_swaps_the_norms():
    a = torch.tensor([[[[3.0, 0.0]], [[4.0, 1.0]]]])  # nodes a0 = (3, 4), a1 = (0, 1)
    b = torch.tensor([[[[1.0, 2.0]], [[0.0, 2.0]]]])  # nodes b0 = (1, 0), b1 = (2, 2)
    aff = cross_frame_affinity(a, b)[0]
    expected = torch.tensor([[3 / 5, 14 / (5 * math.sqrt(8))], [0.0, 2 / math.sqrt(8)]])
    torch.testing.assert_close(aff, expected)
    # ETC's code: <a_i, b_j> / (|b_i| |a_j|)
    compat = cross_frame_affinity(a, b, etc_compat=True)[0]
    dots = torch.tensor([[3.0, 14.0], [0.0, 2.0]])
    na, nb = torch.tensor([5.0, 1.0]), torch.tensor([1.0, math.sqrt(8)])
    torch.testing.assert_close(compat, dots / (nb[:, None] * na[None, :]))


def test_pairwise_frames_loss_zero_for_identical_and_invariant_to_node_scale_and_rotation():
    torch.manual_seed(0)
    t_t, t_n = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)
    loss = PairwiseFramesKDLoss()
    assert loss(t_t, t_t, [t_n], [t_n]).item() == pytest.approx(0.0, abs=1e-10)
    # a positive per-node rescaling of each frame and a channel rotation shared by both frames
    scale_t, scale_n = torch.rand(2, 1, 3, 4) + 0.2, torch.rand(2, 1, 3, 4) + 0.2
    q, _ = torch.linalg.qr(torch.randn(5, 5))
    rot = lambda x: torch.einsum("dc,bchw->bdhw", q, x)  # noqa: E731
    s_t, s_n = rot(t_t * scale_t), rot(t_n * scale_n)
    assert loss(s_t, t_t, [s_n], [t_n]).item() == pytest.approx(0.0, abs=1e-10)
    # ETC's swapped normalisation is not a cosine: it is not invariant to per-node scale
    assert PairwiseFramesKDLoss(etc_compat=True)(s_t, t_t, [s_n], [t_n]).item() > 1e-3
    # and a genuinely different student costs something, with gradient to the student only
    s = torch.randn(2, 5, 3, 4, requires_grad=True)
    t = t_t.clone().requires_grad_(True)
    value = loss(s, t, [t_n], [t_n])
    value.backward()
    assert value.item() > 1e-3 and s.grad.abs().sum() > 0 and t.grad is None


def test_pairwise_frames_averages_over_neighbours():
    torch.manual_seed(1)
    s, t, n1, n2 = (torch.randn(1, 3, 2, 2) for _ in range(4))
    loss = PairwiseFramesKDLoss()
    both = loss(s, t, [n1, n2], [n2, n1]).item()
    assert both == pytest.approx((loss(s, t, [n1], [n2]).item() + loss(s, t, [n2], [n1]).item()) / 2, rel=1e-6)


# ----------------------------------------------------------------------------- multi-frame / ConvLSTM


def test_convlstm_shapes_and_first_step_from_zero_state():
    cell = ConvLSTMCell(1, 4, 3)
    x = torch.randn(2, 1, 16, 16)
    h, c = cell(x)
    assert h.shape == c.shape == (2, 4, 16, 16)
    h2, c2 = cell(x, (h, c))
    assert h2.shape == (2, 4, 16, 16) and not torch.equal(c2, c)
    # first step by hand: c = σ(i)·tanh(g), h = σ(o)·tanh(c)
    i, _, o, g = cell.gates(torch.cat((x, torch.zeros(2, 4, 16, 16)), 1)).chunk(4, 1)
    c_ref = torch.sigmoid(i) * torch.tanh(g)
    torch.testing.assert_close(c, c_ref)
    torch.testing.assert_close(h, torch.sigmoid(o) * torch.tanh(c_ref))


def test_self_cosine_graph_and_pooling_to_16_nodes():
    feat = torch.randn(2, 7, 64, 64)
    mf = MultiFrameKDLoss(pool=16)
    graph = mf.graph(feat)
    assert graph.shape == (2, 1, 16, 16)  # 64/16 = 4×4 nodes: ETC's kernel where the map is big enough
    torch.testing.assert_close(torch.diagonal(graph[:, 0], dim1=1, dim2=2), torch.ones(2, 16))
    torch.testing.assert_close(graph, graph.transpose(-1, -2))
    x = torch.randn(1, 2, 1, 3)
    assert self_cosine_graph(x * torch.tensor([1.0, 2.0, 0.5]).view(1, 1, 1, 3)).allclose(self_cosine_graph(x))


def test_pooling_kernel_keeps_at_least_min_side_nodes_a_side():
    mf = MultiFrameKDLoss(pool=16)  # min_side 4
    assert mf.kernel(97, 97) == 16 and mf.kernel(65, 65) == 16  # ETC's 768 / 512 crops: unchanged, 6×6 / 4×4
    assert mf.kernel(64, 128) == 16
    assert mf.kernel(16, 32) == 4  # a 128×256 crop at stride 8: 4×8 nodes, not ETC's kernel's 1×2
    assert mf.kernel(3, 40) == 1
    assert mf.graph(torch.randn(1, 3, 16, 32)).shape == (1, 1, 32, 32)
    assert MultiFrameKDLoss(pool=16, min_side=1).graph(torch.randn(1, 3, 16, 32)).shape == (1, 1, 2, 2)
    # the nodes are the block means of the map (AvgPool, stride = kernel), remainder rows/cols dropped as ETC
    feat = torch.randn(2, 5, 9, 17)
    blocks = feat[..., :8, :16].reshape(2, 5, 4, 2, 8, 2).mean(dim=(3, 5))
    torch.testing.assert_close(mf.graph(feat), self_cosine_graph(blocks))


def test_multiframe_loss_zero_for_same_graphs_and_trains_student_and_convlstm():
    torch.manual_seed(2)
    seq_t = [torch.randn(2, 6, 32, 32) for _ in range(3)]
    mf = MultiFrameKDLoss(pool=16)
    # the graphs are cosines: a positive rescaling of the student's features changes nothing
    assert mf([3.0 * f for f in seq_t], seq_t).item() == pytest.approx(0.0, abs=1e-12)
    seq_s = [torch.randn(2, 6, 32, 32, requires_grad=True) for _ in range(3)]
    value = mf(seq_s, seq_t)
    value.backward()
    assert value.item() > 0
    assert all(f.grad is not None for f in seq_s)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mf.convlstm.parameters())
    frozen = MultiFrameKDLoss(pool=16, trainable=False)
    assert not any(p.requires_grad for p in frozen.parameters())
    # the order of the sequence matters (it is a recurrence)
    assert mf(seq_s[::-1], seq_t).item() != pytest.approx(value.item())


def test_trainable_cell_learns_to_ignore_its_input_a_frozen_one_does_not():
    """Why the logged term goes to ~0: the cell alone can zero the loss by making its output input-independent."""
    torch.manual_seed(0)
    seq_t = [torch.rand(1, 8, 8, 8) for _ in range(3)]  # teacher-like: non-negative features, alike nodes
    seq_s = [torch.randn(1, 8, 8, 8) for _ in range(3)]  # student: different structure
    losses = {}
    for trainable in (True, False):
        torch.manual_seed(1)
        mf = MultiFrameKDLoss(pool=16, trainable=trainable)
        graph_mse = sum(torch.nn.functional.mse_loss(mf.graph(s), mf.graph(t)) for s, t in zip(seq_s, seq_t)) / 3
        first = mf(seq_s, seq_t).item()
        assert 0.01 < first / graph_mse.item() < 0.2  # a fresh cell passes a few % of the graph discrepancy on
        params = [p for p in mf.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=1.0, momentum=0.9) if params else None
        for _ in range(30 if opt else 0):
            opt.zero_grad()
            mf(seq_s, seq_t).backward()
            opt.step()
        losses[trainable] = (first, mf(seq_s, seq_t).item())
    assert losses[True][1] < losses[True][0] / 10  # inputs unchanged, loss collapsed: the cell ignores them
    assert losses[False][1] == losses[False][0]


# ----------------------------------------------------------------------------- SKD


def test_skd_pixel_is_weighted_kl_and_batch_sum_scales_by_n():
    torch.manual_seed(3)
    s, t = torch.randn(4, 5, 3, 3), torch.randn(4, 5, 3, 3)
    kl = kl_map(s, t).mean().item()
    assert SkdPixelLoss(weight=10)(s, t).item() == pytest.approx(10 * kl, rel=1e-6)
    assert SkdPixelLoss(weight=10, batch_sum=True)(s, t).item() == pytest.approx(40 * kl, rel=1e-6)
    assert SkdPixelLoss()(t, t).item() == pytest.approx(0.0, abs=1e-6)


def test_skd_pairwise_pools_to_few_nodes_and_is_zero_for_identical():
    pa = SkdPairwiseLoss(weight=0.5, scale=0.5)
    assert pa.pool(torch.randn(1, 4, 64, 64)).shape[-2:] == (2, 2)
    assert pa.pool(torch.randn(1, 4, 65, 65)).shape[-2:] == (3, 3)  # SKD's int() kernel + ceil_mode
    torch.manual_seed(4)
    f = torch.randn(2, 8, 16, 16)
    assert pa(f, f).item() == pytest.approx(0.0, abs=1e-10)
    g = torch.randn(2, 8, 16, 16)

    # by hand: 2×2 max-pooled nodes, cosine similarities, MSE, × weight
    def sims(x):
        nodes = torch.nn.functional.max_pool2d(x, 8).flatten(2)
        unit = nodes / (nodes.norm(dim=1, keepdim=True) + 1e-8)
        return unit.transpose(1, 2) @ unit

    assert pa(g, f).item() == pytest.approx(0.5 * ((sims(g) - sims(f)) ** 2).mean().item(), rel=1e-5)


class Linear(torch.nn.Module):
    """A linear critic D(x) = Σ w·x per sample, whose input gradient is w everywhere."""

    def __init__(self, shape):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(*shape))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


def test_gradient_penalty_of_a_linear_critic_is_analytic():
    torch.manual_seed(5)
    critic = Linear((3, 4, 4))
    real, fake = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    gp = gradient_penalty(critic, real, fake)
    expected = (critic.w.detach().norm() - 1) ** 2
    assert gp.item() == pytest.approx(expected.item(), rel=1e-5)
    gp.backward()  # differentiable w.r.t. the critic: d/dw (|w| − 1)² = 2(|w| − 1) w/|w|
    w = critic.w.detach()
    torch.testing.assert_close(critic.w.grad, 2 * (w.norm() - 1) * w / w.norm(), rtol=1e-4, atol=1e-5)


def test_holistic_losses_with_a_linear_critic():
    torch.manual_seed(6)
    critic = Linear((2, 4, 4))
    s = torch.randn(3, 2, 4, 4, requires_grad=True)
    t = torch.randn(3, 2, 4, 4)
    d = holistic_discriminator_loss(critic, s, t, weight=0.1, gp_weight=10.0)
    w = critic.w.detach()
    expected = 0.1 * (critic(s).mean() - critic(t).mean() + 10 * (w.norm() - 1) ** 2)
    assert d.item() == pytest.approx(expected.item(), rel=1e-5)
    d.backward()
    assert s.grad is None  # the critic step never reaches the student
    g = holistic_generator_loss(critic, s, weight=0.1)
    g.backward()
    torch.testing.assert_close(s.grad, (-0.1 / 3) * w.expand(3, 2, 4, 4))


def test_spectral_norm_discriminator_scores_per_sample():
    torch.manual_seed(7)
    disc = SpectralNormDiscriminator(5, base_channels=8, num_layers=2)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d) and parametrize.is_parametrized(m)]
    assert len(convs) == 2
    scores = disc(torch.randn(4, 5, 8, 16))
    assert scores.shape == (4,)
    with pytest.raises(ValueError, match=">= 4 px"):
        disc(torch.randn(2, 5, 2, 8))
    # spectral norm: each conv's weight has largest singular value ≈ 1 after a few power iterations
    for _ in range(20):
        disc(torch.randn(4, 5, 8, 16))
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, rel=0.05)


# ----------------------------------------------------------------------------- mixed precision


def test_graphs_stay_float32_under_autocast():
    torch.manual_seed(8)
    a, b = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    ref = cross_frame_affinity(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cross_frame_affinity(a, b)
        graph = self_cosine_graph(a)
    assert got.dtype == torch.float32 and graph.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(graph, self_cosine_graph(a), atol=1e-6, rtol=1e-5)
