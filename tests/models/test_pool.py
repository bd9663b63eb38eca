"""The exportable adaptive pooling equals F.adaptive_avg_pool2d for every bin and size we try."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vsseg_edge.models._pool import PyramidPooling, adaptive_avg_pool2d, pooling_matrix


@pytest.mark.parametrize("hw", [(8, 16), (7, 9), (5, 5), (1, 1), (2, 3), (45, 60), (64, 128), (13, 97), (4, 6)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_equals_adaptive_avg_pool(hw, bins):
    torch.manual_seed(0)
    x = torch.randn(2, 5, *hw, dtype=torch.float64)
    ref = F.adaptive_avg_pool2d(x, bins)
    got = adaptive_avg_pool2d(x, bins)
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-6, rtol=0)
    got32 = adaptive_avg_pool2d(x.float(), bins)
    assert torch.allclose(got32, ref.float(), atol=1e-5, rtol=0)


def test_pooling_matrix_rows_average_overlapping_windows():
    # 8 → 3 bins: windows [0,3), [2,6), [5,8) (adaptive pooling overlaps them)
    p = pooling_matrix(8, 3)
    assert [sum(1 for v in row if v) for row in p] == [3, 4, 3]
    assert p[1][1] == 0 and p[1][2] == pytest.approx(0.25) and p[1][5] == pytest.approx(0.25)
    assert all(sum(row) == pytest.approx(1.0) for row in p)


def test_ppm_matches_a_reference_with_adaptive_pooling():
    torch.manual_seed(0)
    ppm = PyramidPooling(16, 4, bins=(1, 2, 3, 6)).eval()
    x = torch.randn(1, 16, 8, 16)
    ours = ppm(x)
    ref = [x] + [
        F.interpolate(branch(F.adaptive_avg_pool2d(x, b)), size=(8, 16), mode="bilinear", align_corners=True)
        for b, branch in zip(ppm.bins, ppm.features)
    ]
    assert ours.shape == (1, 16 + 4 * 4, 8, 16)
    assert torch.allclose(ours, torch.cat(ref, 1), atol=1e-6)
