"""Joint augmentation (mpn_plugin/data/joint_transforms.py): torchreid's images unchanged, the
person mask follows every geometric op (paper Sec. 3.2 priors, Sec. 5.1 augmentation)."""
import contextlib
import io
import random

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from mpn_plugin import compat
from mpn_plugin.data import joint_transforms as jt
from mpn_plugin.data.joint_transforms import (
    JointTransform,
    offline_translation_shifts,
    register_joint_op,
    register_photometric,
    translate_pair,
)

NAMES = ["random_flip", "random_crop", "random_patch", "color_jitter", "random_erase"]


def build(names, h=256, w=128, **kw):
    with contextlib.redirect_stdout(io.StringIO()):  # build_transforms prints its steps
        return compat.transforms.build_transforms(h, w, transforms=names, **kw)


def seed(s):
    random.seed(s)
    torch.manual_seed(s)


def noise_image(h=100, w=50, s=0):
    return Image.fromarray(np.random.default_rng(s).integers(0, 256, (h, w, 3), dtype=np.uint8))


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def rect_pair(h=128, w=64):
    """An image whose content IS the mask: an asymmetric white rectangle on black."""
    base = np.zeros((h, w), np.float32)
    base[21:93, 11:37] = 1.0
    return Image.fromarray(np.stack([(base * 255).astype(np.uint8)] * 3, -1)), base


# --------------------------------------------------------------------------- identical images
@pytest.mark.parametrize("names", [[n] for n in NAMES] + [NAMES, []],
                         ids=[n for n in NAMES] + ["all", "none"])
def test_images_identical_to_torchreid(names):
    """Same seeds -> the very same tensor as torchreid's own Compose. Two identically built
    pipelines run in lockstep (RandomPatch keeps a patch pool, so each needs its own); the pool
    threshold is lowered so that patches are really pasted."""
    ref_tr, _ = build(names)
    joint_tr, _ = build(names)
    for tr in (ref_tr, joint_tr):
        for t in tr.transforms:
            if isinstance(t, compat.transforms.RandomPatch):
                t.min_sample_size = 3
    joint = JointTransform.from_compose(joint_tr)
    mask = np.random.default_rng(1).random((100, 50)).astype(np.float32)
    for s in range(30):
        img = noise_image(s=s)
        seed(s)
        ref = ref_tr(img)
        after_ref = (random.random(), torch.rand(1).item())
        seed(s)
        out, m = joint(img, mask if s % 3 else None)  # with and without a mask
        assert torch.equal(ref, out), (names, s)
        assert (random.random(), torch.rand(1).item()) == after_ref  # same number of draws
        assert (m is None) == (s % 3 == 0)
        if m is not None:
            assert m.shape == (256, 128) and m.dtype == np.float32


def test_random_patch_really_pastes():
    """Guard for the test above: with the lowered pool threshold, RandomPatch changes images."""
    tr, te = build(["random_patch"])
    tr.transforms[1].min_sample_size = 3
    joint = JointTransform.from_compose(tr)
    changed = 0
    for s in range(30):
        img = noise_image(s=s)
        seed(s)
        out, _ = joint(img, None)
        changed += not torch.equal(out, te(img))
    assert changed >= 5


def test_torchvision_crops_and_pads_identical_and_mask_exact():
    img, mask = noise_image(), np.random.default_rng(2).random((100, 50)).astype(np.float32)
    tr = T.Compose([T.RandomCrop((50, 30), padding=4), T.ToTensor()])
    joint = JointTransform.from_compose(tr)
    for s in range(10):
        seed(s)
        ref = tr(img)
        seed(s)
        i = torch.randint(0, 108 - 50 + 1, size=(1,)).item()  # get_params on the padded 108x58
        j = torch.randint(0, 58 - 30 + 1, size=(1,)).item()
        seed(s)
        out, m = joint(img, mask)
        assert torch.equal(ref, out)
        np.testing.assert_array_equal(m, np.pad(mask, 4)[i:i + 50, j:j + 30])

    # CenterCrop wider than the image: 10 zero columns each side, top = round((100-60)/2) = 20
    out, m = JointTransform([T.CenterCrop((60, 70))])(img, mask)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(T.CenterCrop((60, 70))(img)))
    np.testing.assert_array_equal(m, np.pad(mask, ((0, 0), (10, 10)))[20:80])

    # Pad (left, top, right, bottom) = (1, 2, 3, 4), reflect: the mask is reflected too
    pad = T.Pad((1, 2, 3, 4), padding_mode="reflect")
    out, m = JointTransform([pad])(img, mask)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(pad(img)))
    np.testing.assert_array_equal(m, np.pad(mask, ((2, 4), (1, 3)), mode="reflect"))
    out, m = JointTransform([T.Pad(3, fill=200)])(img, mask)  # constant: image 200, mask 0
    np.testing.assert_array_equal(m, np.pad(mask, 3))
    assert np.asarray(out)[0, 0].tolist() == [200, 200, 200]


def test_random_apply_and_nested_compose_identical():
    tr = T.Compose([T.Resize((64, 32)),
                    T.RandomApply([T.RandomCrop((56, 28)), T.Resize((64, 32))], p=0.5),
                    T.Compose([T.RandomVerticalFlip(0.5), T.ToTensor()])])
    joint = JointTransform.from_compose(tr)
    img, mask = rect_pair()
    for s in range(12):
        seed(s)
        ref = tr(img)
        seed(s)
        out, m = joint(img, mask)
        assert torch.equal(ref, out)
        assert iou(out[0].numpy() >= 0.5, m >= 0.5) >= 0.99


# --------------------------------------------------------------------------- the mask follows
def test_mask_equals_image_content_through_torchreid_train_pipeline():
    """Image = mask (noise content, so a 1-pixel offset error would be a large difference):
    after Resize + flip + Random2DTranslation the mask equals the red channel up to uint8
    rounding. PIL rounds uint8 images after each of its two separable passes, and there are
    two resizes here: at most 4 x 0.5 / 255 = 2/255."""
    rng = np.random.default_rng(5)
    mask = rng.random((128, 64)).astype(np.float32)
    img = Image.fromarray(np.stack([np.round(mask * 255).astype(np.uint8)] * 3, -1))
    mask = np.asarray(img)[..., 0] / np.float32(255)
    tr, _ = build(["random_flip", "random_crop"], norm_mean=[0, 0, 0], norm_std=[1, 1, 1])
    joint = JointTransform.from_compose(tr)
    for s in range(20):
        seed(s)
        out, m = joint(img, mask)
        assert np.abs(out[0].numpy() - m).max() <= 2 / 255 + 1e-6, s


@pytest.mark.parametrize("names", [[], ["random_flip"], ["random_crop"],
                                   ["random_flip", "random_crop"]],
                         ids=["resize", "flip", "random_crop", "flip+crop"])
def test_mask_follows_rectangle_iou(names):
    img, mask = rect_pair()
    tr, _ = build(names, norm_mean=[0, 0, 0], norm_std=[1, 1, 1])
    joint = JointTransform.from_compose(tr)
    flipped = set()
    for s in range(20):
        seed(s)
        out, m = joint(img, mask)
        a, b = out[0].numpy() >= 0.5, m >= 0.5
        assert iou(a, b) >= 0.99, (names, s)
        flipped.add(bool(b[:, 64:].sum() > b[:, :64].sum()))  # rectangle starts in the left half
    assert flipped == ({True, False} if "random_flip" in names else {False})


def test_flip_of_asymmetric_mask_is_exact():
    mask = np.zeros((6, 4), np.float32)
    mask[1, 0], mask[4, 1], mask[2, 3] = 1.0, 0.25, 0.5
    img = Image.fromarray(np.zeros((6, 4, 3), np.uint8))
    _, m = JointTransform([T.RandomHorizontalFlip(p=1.0)])(img, mask)
    expected = np.zeros((6, 4), np.float32)
    expected[1, 3], expected[4, 2], expected[2, 0] = 1.0, 0.25, 0.5
    np.testing.assert_array_equal(m, expected)
    _, m = JointTransform([T.RandomHorizontalFlip(p=0.0)])(img, mask)
    np.testing.assert_array_equal(m, mask)


def test_random_2d_translation_offsets_by_hand():
    """Input already at the enlarged size 288x144, so the 1.125x resize is the identity and the
    mask must be exactly the crop at the offsets torchreid draws: coin, x1, y1 (python random)."""
    rng = np.random.default_rng(7)
    mask = rng.random((288, 144)).astype(np.float32)
    img = Image.fromarray(rng.integers(0, 256, (288, 144, 3), dtype=np.uint8))
    t = compat.transforms.Random2DTranslation(256, 128, p=1.0)
    ref_t = compat.transforms.Random2DTranslation(256, 128, p=1.0)
    for s in range(6):
        random.seed(s)
        random.uniform(0, 1)  # the coin (never > p = 1)
        x1 = int(round(random.uniform(0, 144 - 128)))
        y1 = int(round(random.uniform(0, 288 - 256)))
        random.seed(s)
        ref = np.asarray(ref_t(img))
        random.seed(s)
        out, m = JointTransform([t])(img, mask)
        np.testing.assert_array_equal(np.asarray(out), ref)
        np.testing.assert_array_equal(m, mask[y1:y1 + 256, x1:x1 + 128])
    # p = 0: only resized to 256x128 (the identity for a 256x128 input)
    small = mask[:256, :128].copy()
    _, m = JointTransform([compat.transforms.Random2DTranslation(256, 128, p=0.0)])(
        Image.fromarray(np.zeros((256, 128, 3), np.uint8)), small)
    np.testing.assert_array_equal(m, small)


def test_photometric_ops_leave_mask_unchanged():
    img = noise_image(256, 128)
    mask = np.random.default_rng(3).random((256, 128)).astype(np.float32)
    make = lambda: T.Compose([  # noqa: E731
        T.ColorJitter(0.4, 0.4, 0.4, 0.1), T.Grayscale(3),
        compat.transforms.RandomPatch(prob_happen=1.0, min_sample_size=1), T.ToTensor(),
        T.Normalize([0.5] * 3, [0.2] * 3), compat.transforms.RandomErasing(probability=1.0),
        compat.transforms.ColorAugmentation(p=1.0)])
    ref_tr, joint = make(), JointTransform.from_compose(make())
    for s in range(3):
        seed(s)
        ref = ref_tr(img)
        seed(s)
        out, m = joint(img, mask)
        assert torch.equal(ref, out)
        np.testing.assert_array_equal(m, mask)


def test_mask_none_and_bool_masks():
    tr, _ = build(["random_flip", "random_crop"])
    joint = JointTransform.from_compose(tr)
    img, mask = rect_pair()
    seed(0)
    ref = tr(img)
    seed(0)
    out, m = joint(img, None)
    assert m is None and torch.equal(ref, out)
    seed(0)
    _, m_bool = joint(img, mask > 0.5)
    seed(0)
    _, m_float = joint(img, mask)
    assert m_bool.dtype == np.float32
    np.testing.assert_array_equal(m_bool, m_float)


def test_inputs_are_not_modified():
    img, mask = rect_pair()
    img_before, mask_before = np.asarray(img).copy(), mask.copy()
    tr, _ = build(NAMES)
    JointTransform.from_compose(tr)(img, mask)
    np.testing.assert_array_equal(np.asarray(img), img_before)
    np.testing.assert_array_equal(mask, mask_before)


def test_bad_masks_raise_clear_errors():
    joint = JointTransform([T.Resize((8, 4))])
    img = Image.new("RGB", (50, 100))
    with pytest.raises(ValueError, match=r"\(99, 50\).*\(100, 50\)"):
        joint(img, np.zeros((99, 50), np.float32))
    with pytest.raises(ValueError, match="255"):
        joint(img, np.full((100, 50), 255, np.uint8))
    with pytest.raises(TypeError, match="2-D"):
        joint(img, np.zeros((100, 50, 1), np.float32))


# --------------------------------------------------------------------------- registry
class Rot90:
    """A made-up geometric transform (rotates by 90 degrees)."""

    def __call__(self, img):
        return img.transpose(Image.ROTATE_90)


class Darken:
    def __call__(self, img):
        return img.point(lambda v: v // 2)


def test_unknown_transform_names_class_and_fix(monkeypatch):
    monkeypatch.setattr(jt, "_JOINT_OPS", dict(jt._JOINT_OPS))
    monkeypatch.setattr(jt, "_PHOTOMETRIC", set(jt._PHOTOMETRIC))
    for bad in ([T.RandomRotation(10)], [T.RandomApply([Rot90()])], [T.Compose([Darken()])]):
        name = type(bad[0]).__name__ if not hasattr(bad[0], "transforms") else \
            type(bad[0].transforms[0]).__name__
        with pytest.raises(TypeError, match=name) as e:
            JointTransform(bad)
        assert "register_joint_op" in str(e.value) and "register_photometric" in str(e.value)

    register_photometric(Darken)
    img = Image.new("RGB", (4, 6), (255, 255, 255))
    mask = np.random.default_rng(4).random((6, 4)).astype(np.float32)
    out, m = JointTransform([Darken()])(img, mask)
    assert np.asarray(out).max() == 127
    np.testing.assert_array_equal(m, mask)

    register_joint_op(Rot90, lambda t, img, mask: (t(img), None if mask is None else t(mask)))
    out, m = JointTransform([Rot90()])(img, mask)
    np.testing.assert_array_equal(m, np.rot90(mask))  # counter-clockwise, like PIL's ROTATE_90
    assert out.size == (6, 4)


def test_duck_typed_joint_op_and_size_check():
    class VFlipBoth:
        def apply_joint(self, img, mask):
            return img.transpose(Image.FLIP_TOP_BOTTOM), mask.transpose(Image.FLIP_TOP_BOTTOM)

    class Broken:
        def apply_joint(self, img, mask):
            return img.resize((3, 3)), mask

    img = Image.new("RGB", (4, 6))
    mask = np.random.default_rng(4).random((6, 4)).astype(np.float32)
    _, m = JointTransform([VFlipBoth()])(img, mask)
    np.testing.assert_array_equal(m, mask[::-1])
    with pytest.raises(RuntimeError, match="diverged"):
        JointTransform([Broken()])(img, mask)


def test_output_size():
    tr, te = build(NAMES, 384, 128)
    assert JointTransform.from_compose(tr).output_size() == (384, 128)
    assert JointTransform.from_compose(te).output_size() == (384, 128)
    assert JointTransform([T.Resize((64, 32)), T.CenterCrop(20)]).output_size() == (20, 20)
    colour = T.RandomApply([T.ColorJitter(0.2)], p=0.5)  # photometric: size unchanged
    assert JointTransform([T.Resize((64, 32)), colour]).output_size() == (64, 32)
    with pytest.raises(ValueError, match="shorter side"):
        JointTransform([T.Resize(256)]).output_size()
    with pytest.raises(ValueError, match="RandomApply"):
        JointTransform([T.Resize((64, 32)), T.RandomApply([T.RandomCrop(8)])]).output_size()


# --------------------------------------------------------------------------- offline translation
def naive_translate(arr, dx, dy, fill):
    """Reference: out[y, x] = arr[y - dy, x - dx] inside, else fill (or the nearest pixel)."""
    h, w = arr.shape[:2]
    out = np.empty_like(arr)
    for y in range(h):
        for x in range(w):
            sy, sx = y - dy, x - dx
            if 0 <= sy < h and 0 <= sx < w:
                out[y, x] = arr[sy, sx]
            elif isinstance(fill, str):  # "edge"
                out[y, x] = arr[min(max(sy, 0), h - 1), min(max(sx, 0), w - 1)]
            else:
                out[y, x] = fill
    return out


@pytest.mark.parametrize("dx,dy", [(2, -1), (-3, 2), (0, 0), (5, 0), (0, -7), (9, 9)])
def test_translate_pair_against_naive_loop(dx, dy):
    rng = np.random.default_rng(abs(dx * 31 + dy))
    arr = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    mask = rng.random((6, 5)).astype(np.float32)
    img = Image.fromarray(arr)
    im, m = translate_pair(img, mask, dx, dy)
    np.testing.assert_array_equal(np.asarray(im), naive_translate(arr, dx, dy, "edge"))
    np.testing.assert_array_equal(m, naive_translate(mask, dx, dy, 0.0))
    im, _ = translate_pair(img, None, dx, dy, fill=(10, 20, 30))
    np.testing.assert_array_equal(np.asarray(im), naive_translate(arr, dx, dy, [10, 20, 30]))
    mean = np.round(arr.reshape(-1, 3).mean(0)).astype(np.uint8)
    im, _ = translate_pair(img, None, dx, dy, fill="mean")
    np.testing.assert_array_equal(np.asarray(im), naive_translate(arr, dx, dy, mean))
    gray = Image.fromarray(arr[..., 0])
    im, _ = translate_pair(gray, None, dx, dy, fill=7)
    assert im.mode == "L"
    np.testing.assert_array_equal(np.asarray(im), naive_translate(arr[..., 0], dx, dy, 7))


def test_translate_pair_keeps_rectangle_aligned():
    img, mask = rect_pair()
    for dx, dy in [(5, -7), (-10, 10), (0, 20)]:  # the rectangle stays inside
        shifted, m = translate_pair(img, mask, dx=dx, dy=dy, fill="mean")
        a, b = np.asarray(shifted)[..., 0] >= 128, m >= 0.5
        assert iou(a, b) >= 0.99
        assert b[21 + dy:93 + dy, 11 + dx:37 + dx].all() and b.sum() == 72 * 26
    with pytest.raises(ValueError, match="whole pixels"):
        translate_pair(img, mask, 1.5, 0)
    with pytest.raises(ValueError, match="fill"):
        translate_pair(img, mask, 1, 0, fill="zero")


def test_offline_translation_shifts():
    shifts = offline_translation_shifts([f"{i}.jpg" for i in range(4)], 5, (0.1, 0.2), seed=0)
    per_copy = shifts.reshape(5, 4, 2)
    assert (per_copy[0] == 0).all()                       # copy 0 is the original
    assert (np.abs(per_copy[..., 0]) <= 0.1).all() and (np.abs(per_copy[..., 1]) <= 0.2).all()
    assert np.abs(per_copy[..., 1]).max() > 0.1           # column 1 is the x (width) shift
    assert (per_copy[1:] != 0).all()
    assert len({tuple(s) for s in per_copy[1]}) == 4      # one shift per image within a copy
    assert np.array_equal(shifts, offline_translation_shifts(
        [f"{i}.jpg" for i in range(4)], 5, (0.1, 0.2), seed=0))
    assert (offline_translation_shifts(["a.jpg"], 3, (0.0, 0.0), seed=4) == 0).all()
    with pytest.raises(ValueError, match="max_shift"):
        offline_translation_shifts(["a.jpg"], 2, (-0.1, 0.1))
