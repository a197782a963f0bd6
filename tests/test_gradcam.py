"""Per-part Grad-CAM (Sec. 5.2.5) against a closed-form CAM."""
import argparse
import json
import types

import numpy as np
import pytest
import torch

from mpn_plugin import compat
from mpn_plugin.models import build_mpn
from mpn_plugin.visualization.gradcam import (
    centroid_rank_correlation,
    centroids_ordered,
    part_gradcam,
    part_logits_fn,
    vertical_centroids,
)


def test_gradcam_equals_closed_form_on_linear_head():
    torch.manual_seed(0)
    K, C, H, W, classes = 3, 4, 6, 2, 5
    A0 = torch.randn(2, C, H, W)
    Wk = torch.randn(K, classes, C)

    def logits_fn(x):
        A = x * 1.0                                    # the "feature map" is the input
        pooled = A.mean(dim=(2, 3))                    # GAP
        return A, torch.einsum("kjc,bc->kbj", Wk, pooled)

    targets = torch.tensor([1, 3])
    cams, cls = part_gradcam(None, A0.clone().requires_grad_(), targets, logits_fn, upsample=False)
    for k in range(K):
        for b in range(2):
            # d y / d A_c = W[k, t, c] / (H W): CAM = relu(sum_c W[k,t,c] A_c) / (H W), normalised
            cam = torch.relu(torch.einsum("c,chw->hw", Wk[k, targets[b]], A0[b]))
            cam = cam / cam.max()
            assert torch.allclose(cams[b, k], cam, atol=1e-5)
    assert cls.tolist() == [[1, 3]] * K


def test_hirescam_equals_closed_form_on_max_pooled_head():
    """GMP head: the score depends on each channel's arg-max position only; HiResCAM is
    relu(sum_c W[t, c] A_c(p) [p = argmax A_c]), Grad-CAM spreads W[t, c] / (H W) over A_c."""
    torch.manual_seed(1)
    K, C, H, W, classes = 2, 5, 4, 3, 3
    A0 = torch.randn(1, C, H, W)
    Wk = torch.randn(K, classes, C)

    def logits_fn(x):
        A = x * 1.0
        return A, torch.einsum("kjc,bc->kbj", Wk, A.amax(dim=(2, 3)))

    t = torch.tensor([2])
    hires, _ = part_gradcam(None, A0.clone().requires_grad_(), t, logits_fn, False, "hirescam")
    grad, _ = part_gradcam(None, A0.clone().requires_grad_(), t, logits_fn, False, "gradcam")
    flat = A0[0].flatten(1)                                    # (C, H*W)
    onehot = torch.zeros_like(flat).scatter_(1, flat.argmax(1, keepdim=True), 1.0)
    for k in range(K):
        w = Wk[k, 2]
        cam = torch.relu((w[:, None] * flat * onehot).sum(0)).view(H, W)
        if cam.max() > 0:
            assert torch.allclose(hires[0, k], cam / cam.max(), atol=1e-5)
        g = torch.relu((w[:, None] * flat).sum(0)).view(H, W)
        assert torch.allclose(grad[0, k], g / g.max().clamp_min(1e-12), atol=1e-5)
    with pytest.raises(ValueError, match="method"):
        part_gradcam(None, A0.clone().requires_grad_(), t, logits_fn, method="cam")


def mean_row_centroid(cams):
    """Mean over parts of each map's vertical centre of mass, in pixels."""
    rows = torch.arange(cams.shape[-2], dtype=torch.float32)
    mass = cams.sum(-1)                                              # (B, K, H)
    return ((mass * rows).sum(-1) / mass.sum(-1).clamp_min(1e-12)).mean(1)


@pytest.mark.parametrize("name", ["mpn", "pcb_p6"])
def test_gradcam_maps_move_with_the_object(name):
    """The same textured object on a plain background, at the top and then at the bottom of
    the image: the part maps' centre of mass moves down with it (untrained models, seed 0;
    measured +12 px for MPN and +28 px for PCB for the object's 64 px move, and the same sign
    for seeds 0-3)."""
    torch.manual_seed(0)
    model = (build_mpn(4, variant="mpn", backbone="resnet18", dim=16) if name == "mpn" else
             compat.models.build_model("pcb_p6", num_classes=4, loss="softmax",
                                       pretrained=False)).eval()
    obj = 2 * torch.randn(3, 48, 24, generator=torch.Generator().manual_seed(100))

    def image(top):
        x = torch.zeros(1, 3, 128, 64)
        x[:, :, top:top + 48, 20:44] = obj
        return x

    up, cls = part_gradcam(model, image(8))
    down, _ = part_gradcam(model, image(72))
    assert up.shape == (1, 6, 128, 64) and cls.shape == (6, 1)
    moved = float(mean_row_centroid(down) - mean_row_centroid(up))
    assert moved > 8, moved
    A, logits = part_logits_fn(model)(image(8))
    assert logits.shape == (6, 1, 4)


def test_vertical_centroids_and_order():
    cams = torch.zeros(1, 3, 6, 2)
    for k in range(3):
        cams[0, k, 2 * k] = 1                            # part k lights up row 2k
    c = vertical_centroids(cams)
    assert torch.allclose(c, torch.tensor([[0.5 / 6, 2.5 / 6, 4.5 / 6]]))
    assert centroids_ordered(cams).tolist() == [True]
    assert centroids_ordered(cams.flip(1)).tolist() == [False]


def test_centroid_rank_correlation_by_hand():
    cams = torch.zeros(2, 4, 8, 2)
    for k, row in enumerate([0, 2, 4, 6]):
        cams[0, k, row] = 1                              # parts in order: rho = 1
    for k, row in enumerate([2, 0, 4, 6]):
        cams[1, k, row] = 1                              # parts 0 and 1 swapped
    rho = centroid_rank_correlation(cams)
    # one adjacent swap: sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert torch.allclose(rho, torch.tensor([1.0, 0.8]))
    assert torch.allclose(centroid_rank_correlation(cams.flip(1))[0], torch.tensor(-1.0))


def test_visualize_gradcam_tool_end_to_end(tiny_root, tmp_path):
    """Train one epoch, then the tool writes Fig. 8/9 PNGs of the right size and the report."""
    import cv2

    from mpn_plugin.train import main
    from mpn_plugin.visualization import gradcam_report as visualize_gradcam

    fast = ["data.height", "64", "data.width", "32", "data.workers", "0", "train.batch_size", "16",
            "sampler.num_instances", "4", "mpn.backbone", "resnet18", "mpn.dim", "64"]
    specs = []
    for name, cfg in (("MPN", "configs/mpn_synthetic.yaml"),
                      ("Baseline", "configs/ablation/baseline.yaml")):
        main(["--config-file", cfg, "--root", tiny_root, *fast, "train.max_epoch", "1",
              "test.evaluate", "False", "data.save_dir", str(tmp_path / name)])
        specs += ["--model", f"{name}={cfg}:{tmp_path / name / 'model' / 'model.pth.tar-1'}"]
    out = tmp_path / "cams"
    report = visualize_gradcam.main([*specs, "--root", tiny_root, "--split", "query", "--num", "5",
                                     "--fig8", "2", "--grid-num", "5", "--grid-cols", "2",
                                     "--scale", "1", "--out-dir", str(out), *fast])
    fig8 = cv2.imread(str(out / "fig8_000.png"))
    # two model rows of 64 px; a 90 px name band + the image + 6 overlays of 32 px
    assert fig8.shape == (2 * 64, 90 + 7 * 32, 3)
    assert not (out / "fig8_002.png").exists()
    grid = cv2.imread(str(out / "fig9_grid.png"))
    assert grid.shape == (3 * (64 + 6) + 6, 2 * (90 + 7 * 32 + 6) + 6, 3)   # 5 images, 2 columns
    # the figure shows the image it explains (the first one the tool drew), and a map per part
    args = argparse.Namespace(images=[], num=5, seed=0, split="query")
    cfg = types.SimpleNamespace(data=types.SimpleNamespace(targets=["synthetic_pedestrians"],
                                                           root=tiny_root))
    first = visualize_gradcam.load_images(args, cfg)[0][0]
    shown = cv2.resize(cv2.imread(first), (32, 64))
    for row in (0, 64):                                   # each model's row: image, then maps
        assert np.array_equal(fig8[row:row + 64, 90:122], shown)
        tiles = [fig8[row:row + 64, 122 + 32 * k:154 + 32 * k].astype(int) for k in range(6)]
        assert all(np.abs(t - shown).mean() > 5 for t in tiles)      # a heat map over it
    assert json.load(open(out / "centroids.json")) == json.loads(json.dumps(report))
    for name in ("MPN", "Baseline"):
        r = report[name]
        assert r["images"] == 5 and r["parts"] == 6


def test_visualize_gradcam_tool_bad_model_spec(tmp_path):
    from mpn_plugin.visualization import gradcam_report as visualize_gradcam
    with pytest.raises(ValueError, match="NAME=CONFIG:CHECKPOINT"):
        visualize_gradcam.main(["--model", "MPN", "--out-dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="checkpoint file"):
        visualize_gradcam.main(["--model", "MPN=configs/mpn_synthetic.yaml:missing.pth",
                                "--out-dir", str(tmp_path)])
