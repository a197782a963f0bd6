"""Eq. 1, 3-4, 8-9, the Tables 3-4 variants and the Fig. 10 penalty, against hand numbers."""
import math

import pytest
import torch

from mpn_plugin.losses import (
    MPNLossConfig,
    batch_wise_alignment_loss,
    build_alignment_loss,
    check_finite,
    class_wise_alignment_loss,
    cosine_batch_hard_triplet_loss,
    mpn_loss_terms,
    part_id_loss,
    sample_wise_alignment_loss,
    soft_sharing_penalty,
    triplet_features,
)

LN2, LN3 = math.log(2), math.log(3)


# ----------------------------------------------------------------------------- Eq. 1
def test_part_id_loss_hand_numbers():
    # part 0: logits [0, ln2, 0]: softmax = [1/4, 1/2, 1/4]; target 1 -> ln 2, target 0 -> ln 4
    # part 1: zero logits -> ln 3 for any target
    p0 = torch.tensor([[0.0, LN2, 0.0], [0.0, LN2, 0.0]])
    p1 = torch.zeros(2, 3)
    y = torch.tensor([1, 0])
    expected = (LN2 + 2 * LN2) / 2 + LN3  # mean over batch, summed over parts; positive
    assert part_id_loss(torch.stack([p0, p1]), y).item() == pytest.approx(expected, rel=1e-6)
    assert part_id_loss([p0, p1], y).item() == pytest.approx(expected, rel=1e-6)
    # full Eq. 1 = MT + AT
    terms = mpn_loss_terms({"mt_logits": torch.stack([p0, p1]), "at_logits": torch.stack([p1]),
                            "h": None, "g": None}, y, MPNLossConfig(triplet_weight=0))
    id_total = terms["loss_id_mt"] + terms["loss_id_at"]
    assert id_total.item() == pytest.approx(expected + LN3, rel=1e-6)


def test_part_id_loss_label_smoothing():
    # uniform logits: smoothed CE = (1 - eps) ln3 + eps * ln3 = ln3
    assert (part_id_loss(torch.zeros(1, 2, 3), torch.tensor([0, 2]), 0.3).item()
            == pytest.approx(LN3))
    # logits [0, ln2, 0], target 1, eps = 0.3: (1-eps) * ln2 + eps * mean(ln4, ln2, ln4)
    got = part_id_loss(torch.tensor([[[0.0, LN2, 0.0]]]), torch.tensor([1]), 0.3).item()
    assert got == pytest.approx(0.7 * LN2 + 0.3 * (5 * LN2 / 3), rel=1e-6)


# ----------------------------------------------------------------------------- Eq. 3-4
def unit(*v):
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def test_triplet_hand_numbers_and_nt_averaging():
    # id 0: (1,0) twice; id 1: (0,1) and (1,1)/sqrt2.  D = 1 - cos:
    # D(x0,x2)=1, D(x0,x3)=1-1/sqrt2=0.292893, D(x2,x3)=0.292893, D(x0,x1)=0
    x = torch.stack([unit(1, 0), unit(1, 0), unit(0, 1), unit(1, 1)])
    y = torch.tensor([0, 0, 1, 1])
    d = 1 - 1 / math.sqrt(2)
    # margin 0.2: anchors 0,1: 0 - d + .2 < 0; anchor 2: d - 1 + .2 < 0; anchor 3: d - d + .2
    loss, nt = cosine_batch_hard_triplet_loss(x, y, 0.2, return_num_violating=True)
    assert nt == 1 and loss.item() == pytest.approx(0.2, abs=1e-6)
    # margin 0.5: anchors 0,1: 0.5 - d each; anchor 3: 0.5; anchor 2: d - 1 + .5 < 0
    loss, nt = cosine_batch_hard_triplet_loss(x, y, 0.5, return_num_violating=True)
    assert nt == 3 and loss.item() == pytest.approx((2 * (0.5 - d) + 0.5) / 3, abs=1e-6)


def test_triplet_zero_when_no_violation_and_no_nan():
    x = torch.stack([unit(1, 0), unit(1, 0), unit(0, 1), unit(0, 1)]).requires_grad_()
    loss, nt = cosine_batch_hard_triplet_loss(x, torch.tensor([0, 0, 1, 1]), 0.2,
                                              return_num_violating=True)
    assert nt == 0 and loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_triplet_is_cosine_not_euclidean():
    # anchor (1,0) id0, positive (2,0) id0; negatives (10,1) id1 and (0,0.5) id2.
    # cosine: hardest negative is (10,1) (D=0.005); euclidean would pick (0,0.5).
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [10.0, 1.0], [0.0, 0.5]])
    y = torch.tensor([0, 0, 1, 2])
    loss = cosine_batch_hard_triplet_loss(x, y, 0.2)
    # scale invariance of cosine: scaling one sample changes nothing
    x2 = x.clone()
    x2[2] *= 100
    assert cosine_batch_hard_triplet_loss(x2, y, 0.2).item() == pytest.approx(loss.item(), abs=1e-6)
    assert loss.item() == pytest.approx(naive_triplet(x, y, 0.2), abs=1e-6)


def naive_triplet(x, y, margin):
    n = len(x)
    D = [[1 - float(torch.dot(x[i], x[j]) / (x[i].norm() * x[j].norm())) for j in range(n)]
         for i in range(n)]
    total, nt = 0.0, 0
    for a in range(n):
        dap = max(D[a][p] for p in range(n) if y[p] == y[a])
        negs = [D[a][j] for j in range(n) if y[j] != y[a]]
        if not negs:
            continue
        v = max(0.0, dap - min(negs) + margin)
        if v > 0:
            total, nt = total + v, nt + 1
    return total / nt if nt else 0.0


def test_triplet_matches_naive_loop_s3_a4():
    torch.manual_seed(0)
    x = torch.randn(12, 8)
    y = torch.tensor([2, 0, 1, 2, 0, 1, 1, 0, 2, 2, 1, 0])  # not contiguous
    assert cosine_batch_hard_triplet_loss(x, y, 0.2).item() == pytest.approx(
        naive_triplet(x, y, 0.2), abs=1e-5)


# ----------------------------------------------------------------------------- Eq. 8-9
H = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
G = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
Y = torch.tensor([0, 0, 1])


def test_class_wise_alignment_hand_numbers():
    # id 0: mean h = (.5,.5), mean g = (1,1): D = 0;  id 1: (1,0) vs (0,1): D = 1
    assert class_wise_alignment_loss(H, G, Y).item() == pytest.approx(0.5, abs=1e-6)


def test_sample_wise_alignment_hand_numbers():
    # D(h0,g0) = D(h1,g1) = 1 - 1/sqrt2, D(h2,g2) = 1
    expected = (2 * (1 - 1 / math.sqrt(2)) + 1) / 3
    assert sample_wise_alignment_loss(H, G).item() == pytest.approx(expected, abs=1e-6)
    assert class_wise_alignment_loss(H, G, Y).item() != pytest.approx(expected, abs=1e-3)


def test_batch_wise_alignment_hand_numbers_ignores_labels():
    # mean h = (2/3, 1/3), mean g = (2/3, 1): cos = 7/sqrt(65)
    expected = 1 - 7 / math.sqrt(65)
    assert batch_wise_alignment_loss(H, G).item() == pytest.approx(expected, abs=1e-6)
    assert build_alignment_loss("batch_wise")(H, G, torch.tensor([5, 6, 7])).item() == \
        pytest.approx(expected, abs=1e-6)


def test_class_wise_matches_naive_loop_unequal_counts_and_permutation():
    torch.manual_seed(1)
    h, g = torch.randn(9, 6), torch.randn(9, 6)
    y = torch.tensor([3, 3, 3, 3, 1, 1, 7, 7, 7])
    ref = []
    for c in (1, 3, 7):
        m = y == c
        hb, gb = h[m].mean(0), g[m].mean(0)
        ref.append(1 - float(hb @ gb / (hb.norm() * gb.norm())))
    got = class_wise_alignment_loss(h, g, y).item()
    assert got == pytest.approx(sum(ref) / 3, abs=1e-6)
    perm = torch.randperm(9)
    assert (class_wise_alignment_loss(h[perm], g[perm], y[perm]).item()
            == pytest.approx(got, abs=1e-6))


def test_triplet_features_and_unknown_names():
    assert torch.equal(triplet_features(H, G, "h"), H)
    assert torch.equal(triplet_features(H, G, "h_plus_g"), H + G)
    with pytest.raises(ValueError, match="class_wise"):
        build_alignment_loss("mdd")
    with pytest.raises(ValueError, match="h_plus_g"):
        triplet_features(H, G, "g")


# ----------------------------------------------------------------------------- Fig. 10, NaN
def test_soft_sharing_penalty_hand_numbers_and_gradients():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([0.0, 0.0], requires_grad=True)
    loss = soft_sharing_penalty([(a, b)], 0.1)
    assert loss.item() == pytest.approx(0.5)  # 0.1 * (1 + 4)
    loss.backward()
    assert (a.grad.tolist() == pytest.approx([0.2, 0.4])
            and b.grad.tolist() == pytest.approx([-0.2, -0.4]))


def test_check_finite_names_the_term():
    check_finite({"loss_tri": torch.tensor(0.3)})
    with pytest.raises(FloatingPointError, match="loss_cf=nan"):
        check_finite({"loss_tri": torch.tensor(0.3), "loss_cf": torch.tensor(float("nan"))},
                     "epoch 1")


# ----------------------------------------------------------------------------- Eq. 10
def test_eq10_total_loss_hand_numbers():
    # ID: zero logits, ln 3 per part: MT 2 parts -> 2 ln 3, AT 1 part -> ln 3.
    # Triplet on h = H (D(h0,h1) = 1, D(h0,h2) = 0, D(h1,h2) = 1), Y = [0, 0, 1], margin 0.2:
    #   anchor 0: d_ap 1, d_an 0 -> 1.2; anchor 1: d_ap 1, d_an 1 -> 0.2; anchor 2: d_ap 0,
    #   d_an 0 -> 0.2; all 3 violate: 1.6 / 3. Class-wise L_CF = 0.5 (above), lambda = 0.5.
    # Soft sharing: weight 0.1 x ||(1, 1) - (0, 0)||^2 = 0.2.
    out = {"mt_logits": torch.zeros(2, 3, 3), "at_logits": torch.zeros(1, 3, 3), "h": H, "g": G}
    config = MPNLossConfig(alignment_weight=0.5, soft_sharing_layer="conv1",
                           soft_sharing_weight=0.1)
    terms = mpn_loss_terms(out, Y, config, soft_sharing_pairs=[(torch.ones(2), torch.zeros(2))])
    hand = {"loss_id_mt": 2 * LN3, "loss_id_at": LN3, "loss_tri": 1.6 / 3, "loss_cf": 0.25,
            "loss_soft": 0.2}
    assert list(terms) == list(hand)
    for name, value in hand.items():
        assert terms[name].item() == pytest.approx(value, abs=1e-6), name
    assert sum(terms.values()).item() == pytest.approx(sum(hand.values()), abs=1e-5)
    # the default config is the paper's Eq. 10: weights 1, class-wise alignment, margin 0.2
    plain = mpn_loss_terms(out, Y)
    assert sum(plain.values()).item() == pytest.approx(3 * LN3 + 1.6 / 3 + 0.5, abs=1e-5)
    # the start epochs switch the triplet and alignment terms off before them
    late = MPNLossConfig(triplet_start_epoch=2, alignment_start_epoch=3)
    assert set(mpn_loss_terms(out, Y, late, epoch=1)) == {"loss_id_mt", "loss_id_at"}
    assert set(mpn_loss_terms(out, Y, late, epoch=2)) == {"loss_id_mt", "loss_id_at", "loss_tri"}
    with pytest.raises(ValueError, match="soft_sharing_pairs"):
        mpn_loss_terms(out, Y, config)
