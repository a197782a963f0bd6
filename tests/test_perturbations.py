"""Query perturbations of the robustness sweep: identity at the clean amount, exact geometry,
requested occluded area, occluders of another identity, determinism by seed, purity."""
import numpy as np
import pytest

from mpn_plugin.evaluation.perturbations import (
    MEAN_FILL,
    PERTURBATIONS,
    choose_occluder,
    cut_box,
    image_seed,
    occlude_rectangle,
    occlude_with_pedestrian,
    perturb,
    perturbations,
    scale_box,
    vertical_shift,
)

WHITE = (255, 255, 255)


def random_image(h=48, w=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_clean_amounts_return_the_image_bit_for_bit_as_a_new_array():
    img, occ = random_image(), random_image(64, 32, seed=1)
    for name, p in PERTURBATIONS.items():
        out = perturb(name, img, p.clean_level, seed=3, occluder=occ)
        assert out is not img and out.dtype == np.uint8 and np.array_equal(out, img), name
    assert np.array_equal(scale_box(img, 1.0), img)


def test_no_perturbation_modifies_its_input():
    img, occ = random_image(), random_image(64, 32, seed=1)
    before, occ_before = img.copy(), occ.copy()
    for name, p in PERTURBATIONS.items():
        perturb(name, img, p.levels[-1], seed=3, occluder=occ)
    assert np.array_equal(img, before) and np.array_equal(occ, occ_before)


@pytest.mark.parametrize("fraction, row", [(0.25, 2), (-0.25, 18), (0.125, 6), (0.3, 0)])
def test_shift_moves_a_white_row_by_the_expected_pixels(fraction, row):
    img = np.zeros((32, 16, 3), np.uint8)
    img[10] = 255
    out = vertical_shift(img, fraction, fill=(7, 7, 7))
    assert out.shape == img.shape
    # the box moves down by round(fraction * 32) rows: the content moves up by as many
    assert np.flatnonzero((out == 255).all(axis=(1, 2))).tolist() == [row]
    d = round(fraction * 32)
    entered = slice(32 - d, 32) if d > 0 else slice(0, -d)
    assert (out[entered] == 7).all()                     # rows from outside the box: fill
    kept = np.delete(out, np.arange(32)[entered], axis=0)
    assert len(kept) == 32 - abs(d) and set(np.unique(kept)) <= {0, 255}   # content, no fill


def test_scale_keeps_the_centre_and_zooms_in_and_out():
    img = random_image(33, 17, seed=2)                    # odd size: a centre pixel
    for factor in (0.5, 0.8, 1.25, 2.0):
        out = scale_box(img, factor, fill=(0, 0, 0))
        assert out.shape == img.shape
        assert out[16, 8].tolist() == img[16, 8].tolist(), factor
    mark = np.zeros((33, 17, 3), np.uint8)
    mark[12:21, 6:11] = 255                               # centred 9 x 5 block
    for factor in (0.6, 1.5):
        out = scale_box(mark, factor, fill=(0, 0, 0)).astype(float)[..., 0]
        ys, xs = np.mgrid[:33, :17]
        assert np.isclose((out * ys).sum() / out.sum(), 16, atol=1e-6)
        assert np.isclose((out * xs).sum() / out.sum(), 8, atol=1e-6)
        # zoom in (factor < 1) enlarges the mark by 1 / factor
        assert np.isclose(out.sum() / 255, 45 / factor ** 2, rtol=0.1)
    zoom_out = scale_box(np.full((32, 16, 3), 200, np.uint8), 1.5, fill=MEAN_FILL)
    assert zoom_out[0, 0].tolist() == list(MEAN_FILL) and zoom_out[16, 8].tolist() == [200] * 3


def test_cut_removes_the_head_or_feet_band():
    img = random_image(32, 16)
    assert np.array_equal(cut_box(img, 0.25, "top"), img[8:])
    assert np.array_equal(cut_box(img, 0.25, "bottom"), img[:24])
    assert np.array_equal(perturb("cut_head", img, 0.25), img[8:])
    assert np.array_equal(perturb("cut_feet", img, 0.25), img[:24])
    with pytest.raises(ValueError, match="top"):
        cut_box(img, 0.2, "left")


@pytest.mark.parametrize("area", [0.05, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_rectangle_occluder_covers_the_requested_area(area):
    H, W = 64, 32
    for seed in range(20):
        out = occlude_rectangle(np.zeros((H, W, 3), np.uint8), area, seed, fill=WHITE)
        covered = (out == 255).all(2)
        rows, cols = np.flatnonzero(covered.any(1)), np.flatnonzero(covered.any(0))
        h = len(rows)
        assert covered.sum() == h * len(cols)             # one axis-aligned rectangle
        assert abs(covered.mean() - area) <= (h / 2) / (H * W) + 1e-12, (area, seed)


def test_rectangle_noise_fill_stays_inside_the_rectangle():
    img = np.zeros((64, 32, 3), np.uint8)
    const = occlude_rectangle(img, 0.3, 5, fill=WHITE)
    noise = occlude_rectangle(img, 0.3, 5, fill="noise")
    changed = (noise != 0).any(2)
    assert not changed[~(const == 255).all(2)].any()      # same rectangle as the constant fill
    assert changed.mean() > 0.25 and len(np.unique(noise)) > 100
    with pytest.raises(ValueError, match="noise"):
        occlude_rectangle(img, 0.3, 5, fill="blur")


@pytest.mark.parametrize("area", [0.1, 0.3, 0.5, 0.8])
def test_pedestrian_occluder_covers_the_requested_area_with_the_occluder(area):
    H, W = 64, 32
    query = np.zeros((H, W, 3), np.uint8)
    occluder = np.full((128, 48, 3), 255, np.uint8)       # another size: resized to the query
    for seed in range(20):
        out = occlude_with_pedestrian(query, area, occluder, seed)
        covered = (out == 255).all(2)
        h = int(covered.any(1).sum())
        assert covered[-1].any()                          # enters from the bottom (BIPO)
        assert covered[:, 0].any() or covered[:, -1].any()  # and from a side
        assert abs(covered.mean() - area) <= (h / 2) / (H * W) + 1e-12, (area, seed)
        assert set(np.unique(out)) <= {0, 255}            # pixels: query's or occluder's


def test_pedestrian_occluder_pastes_the_occluders_upper_part():
    query = np.zeros((40, 20, 3), np.uint8)
    occluder = np.repeat(np.arange(40, dtype=np.uint8)[:, None, None] + 1, 20, 1).repeat(3, 2)
    out = occlude_with_pedestrian(query, 0.3, occluder, seed=0)
    rows = np.flatnonzero(out[..., 0].any(1))
    # the query's bottom rows show the occluder's rows from its top (its head: value 1)
    assert rows[-1] == 39 and out[rows[0], :, 0].max() == 1


def test_other_pedestrian_occluder_never_has_the_querys_identity():
    gallery_pids = np.array([1, 1, 2, 3, 3, 3, 4, 1, 2])
    for pid in (1, 2, 3, 4, 5):
        for seed in range(200):
            g = choose_occluder(pid, gallery_pids, seed=(seed, pid))
            assert gallery_pids[g] != pid
    assert len({choose_occluder(1, gallery_pids, s) for s in range(200)}) == 6   # all others
    with pytest.raises(ValueError, match="another identity"):
        choose_occluder(7, [7, 7], seed=0)


def test_same_seed_same_output_other_seed_other_output():
    img, occ = random_image(), random_image(64, 32, seed=1)
    for name in ("occlusion_rect", "occlusion_person"):
        a = perturb(name, img, 0.3, seed=image_seed(0, name, 4), occluder=occ)
        b = perturb(name, img, 0.3, seed=image_seed(0, name, 4), occluder=occ)
        c = perturb(name, img, 0.3, seed=image_seed(1, name, 4), occluder=occ)
        assert np.array_equal(a, b) and not np.array_equal(a, c), name
    noise = perturbations("noise")["occlusion_rect"]
    assert np.array_equal(noise.fn(img, 0.3, 9, None), noise.fn(img, 0.3, 9, None))
    assert image_seed(0, "shift", 1) != image_seed(0, "scale", 1)


def test_occluder_grows_at_the_same_place():
    img = np.zeros((64, 32, 3), np.uint8)
    small = (occlude_rectangle(img, 0.1, 3, fill=WHITE) == 255).all(2)
    large = (occlude_rectangle(img, 0.4, 3, fill=WHITE) == 255).all(2)
    assert (small & large).sum() >= 0.5 * small.sum()


def test_out_of_range_amounts_fail_clearly():
    img = random_image()
    with pytest.raises(ValueError, match="fraction of the height"):
        vertical_shift(img, 1.2)
    with pytest.raises(ValueError, match="> 0"):
        scale_box(img, 0)
    with pytest.raises(ValueError, match="area"):
        occlude_rectangle(img, 1.5)
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb("blur", img, 0.1)
    with pytest.raises(ValueError, match="occluder"):
        perturb("occlusion_person", img, 0.3)
    with pytest.raises(ValueError, match="RGB uint8"):
        vertical_shift(img.astype(np.float32), 0.1)
