"""ESPNet: our implementation loads the published sacmehta/ESPNet checkpoints and reproduces their accuracy.

The real-weight tests skip when ../shared/data is absent. The CamVid sample holds 24 labelled frames of the
CamVid *training* sequence 0001TP, so the measured mIoU (76.3 with 11 classes, void ignored) is above the
published 55.6 of the CamVid test split; a wrong layer, key mapping or preprocessing drops it far below.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import shared_data
from vsseg_edge.core.errors import VssegError
from vsseg_edge.core.fileio import read_image, read_label
from vsseg_edge.core.preprocess import preprocess
from vsseg_edge.models import create_model
from vsseg_edge.models.espnet import ESPNet, load_espnet_weights, map_published_key, published_preprocess

CITYSCAPES_FILE = "espnet_p_2_q_8_cityscapes.pth"
CAMVID_FILE = "espnet_p_2_q_8_camvid.pth"


def test_parameter_count_matches_the_paper():
    # Mehta et al. report 0.364 M parameters for ESPNet (p=2, q=8) on Cityscapes (20 outputs)
    model = ESPNet(20, p=2, q=8)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(0.364e6, rel=0.005)


def test_key_mapping_examples():
    assert map_published_key("encoder.level3.4.d8.conv.weight") == "encoder.level3.4.branches.3.weight"
    assert map_published_key("encoder.level2_0.c1.conv.weight") == "encoder.level2_0.reduce.weight"
    assert map_published_key("encoder.level2_0.act.weight") == "encoder.level2_0.norm.act.weight"
    assert map_published_key("encoder.level3.0.bn.bn.running_var") == "encoder.level3.0.norm.bn.running_var"
    assert map_published_key("combine_l2_l3.1.bn.act.weight") == "combine_l2_l3.1.norm.act.weight"
    assert map_published_key("level3_C.conv.weight") == "proj_l2.weight"
    assert map_published_key("encoder.b3.bn.weight") == "encoder.b3.bn.weight"


def test_own_state_dict_round_trip_and_channel_drop(tmp_path):
    torch.manual_seed(0)
    full = ESPNet(20, width=20).eval()
    torch.save(full.state_dict(), tmp_path / "esp.pth")
    dropped = create_model("espnet", 19, weights=tmp_path / "esp.pth").eval()
    assert dropped.width == 20 and dropped.num_classes == 19
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert torch.allclose(dropped(x), full(x)[:, :19], atol=1e-6)
        assert dropped(x, return_features=True)["out_s8"].shape == (1, 19, 8, 16)


def test_published_files_load_and_drop_the_extra_channel():
    weights = shared_data("weights")
    city = create_model("espnet", 19, weights=weights / CITYSCAPES_FILE)
    assert (city.width, city.fuse_input, city.p, city.q) == (20, "level1", 2, 8)
    camvid = create_model("espnet", 11, weights=weights / CAMVID_FILE)
    assert (camvid.width, camvid.fuse_input) == (12, "level1_cat")
    full = create_model("espnet", 12, weights=weights / CAMVID_FILE).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(camvid.eval()(x), full(x)[:, :11], atol=1e-5)


def test_published_file_with_the_wrong_decoder_is_refused():
    weights = shared_data("weights")
    with pytest.raises(VssegError, match="level1_cat"):
        load_espnet_weights(ESPNet(11, width=12, fuse_input="level1"), weights / CAMVID_FILE)
    with pytest.raises(VssegError, match="classes"):
        create_model("espnet", 21, weights=weights / CITYSCAPES_FILE)


def _frames(step: int = 1):
    root = shared_data("camvid_sample")
    images = sorted((root / "images").glob("*.png"))[::step]
    assert images, f"{root}: no images"
    return [(read_image(p), read_label(root / "labels" / p.name)) for p in images]


def _predict(model, image, spec) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.from_numpy(preprocess(image, spec)))
    return logits[0].argmax(0).numpy().astype(np.uint8)


@pytest.mark.slow
def test_camvid_checkpoint_miou_on_real_frames():
    model = create_model("espnet", 11, weights=shared_data("weights") / CAMVID_FILE).eval()
    spec = published_preprocess("camvid")
    conf = np.zeros((11, 11), np.int64)
    for image, label in _frames():
        pred = _predict(model, image, spec)
        assert pred.shape == label.shape == (360, 480)
        keep = label < 11  # 11 = void
        conf += np.bincount(11 * label[keep].astype(np.int64) + pred[keep], minlength=121).reshape(11, 11)
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    miou = float(np.nanmean(iou)) * 100
    print(f"ESPNet CamVid checkpoint on 24 CamVid sample frames: mIoU {miou:.1f}; IoU {np.round(iou * 100, 1)}")
    assert miou > 72.0  # measured 76.3 (published: 55.6 on the harder test split)
    assert iou[3] > 0.9 and iou[0] > 0.85  # road, sky


@pytest.mark.slow
def test_cityscapes_checkpoint_labels_camvid_road_as_road():
    model = create_model("espnet", 19, weights=shared_data("weights") / CITYSCAPES_FILE).eval()
    spec = published_preprocess("cityscapes")
    import cv2

    road, sky = np.zeros(2, np.int64), np.zeros(2, np.int64)
    for image, label in _frames(step=3):
        pred = cv2.resize(_predict(model, image, spec), (480, 360), interpolation=cv2.INTER_NEAREST)
        road += [(pred[label == 3] == 0).sum(), (label == 3).sum()]  # CamVid road 3 ↔ Cityscapes road 0
        sky += [(pred[label == 0] == 10).sum(), (label == 0).sum()]  # CamVid sky 0 ↔ Cityscapes sky 10
    print(f"Cityscapes ESPNet on CamVid frames: road→road {road[0] / road[1]:.3f}, sky→sky {sky[0] / sky[1]:.3f}")
    assert road[0] / road[1] > 0.85  # measured 0.927
    # CamVid's dark, overcast sky is mostly called building/road by the Cityscapes model (measured 0.294):
    # a domain gap, not a loading bug (the same weights label a Cityscapes frame's sky correctly)
    assert sky[0] / sky[1] > 0.2
