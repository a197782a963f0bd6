"""Per-part Grad-CAM (Sec. 5.2.5) against a closed-form CAM."""
import torch

from mpn_plugin import compat
from mpn_plugin.models import build_mpn
from mpn_plugin.visualization.gradcam import (centroids_ordered, part_gradcam, part_logits_fn,
                                              vertical_centroids)


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


def test_gradcam_on_mpn_and_pcb():
    model = build_mpn(4, variant="mpn", backbone="resnet18", dim=16).eval()
    cams, cls = part_gradcam(model, torch.randn(2, 3, 128, 64))
    assert cams.shape == (2, 6, 128, 64) and cls.shape == (6, 2)
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6
    pcb = compat.models.build_model("pcb_p6", num_classes=4, loss="softmax", pretrained=False).eval()
    A, logits = part_logits_fn(pcb)(torch.randn(1, 3, 128, 64))
    assert logits.shape == (6, 1, 4)


def test_vertical_centroids_and_order():
    cams = torch.zeros(1, 3, 6, 2)
    for k in range(3):
        cams[0, k, 2 * k] = 1                            # part k lights up row 2k
    c = vertical_centroids(cams)
    assert torch.allclose(c, torch.tensor([[0.5 / 6, 2.5 / 6, 4.5 / 6]]))
    assert centroids_ordered(cams).tolist() == [True]
    assert centroids_ordered(cams.flip(1)).tolist() == [False]
