"""Prior-aware datasets: priors reach the batch through torchreid's own data manager and stay
aligned with the augmented image."""
import os.path as osp
import random

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mpn_plugin import compat
from mpn_plugin.data import PriorOptions, register_prior_datasets
from mpn_plugin.data.joint_transforms import JointTransform, translate_pair


@pytest.fixture
def registered():
    yield
    register_prior_datasets()  # back to the defaults


def datamanager(root, **kw):
    args = dict(root=root, sources="synthetic_pedestrians", height=128, width=64,
                transforms=["random_flip", "random_crop", "random_erase"], batch_size_train=8,
                batch_size_test=16, workers=0, train_sampler="RandomIdentitySampler",
                num_instances=2, use_gpu=False)
    args.update(kw)
    return compat.data.ImageDataManager(**args)


def test_batch_from_image_data_manager_carries_priors(tiny_root, registered):
    register_prior_datasets(PriorOptions(feature_stride=16))
    dm = datamanager(tiny_root)
    batch = next(iter(dm.train_loader))
    assert batch["img"].shape == (8, 3, 128, 64)
    assert batch["prior_mask"].shape == (8, 8, 4)
    assert batch["prior_roi"].shape == (8, 2)
    top, bottom = batch["prior_roi"][:, 0], batch["prior_roi"][:, 1]
    assert (top < bottom).all() and (top >= 0).all() and (bottom <= 1).all()
    # identity sampler: 4 identities x 2 images
    assert sorted(torch.bincount(batch["pid"]).tolist())[-4:] == [2, 2, 2, 2]
    # test items are plain torchreid items
    q = next(iter(dm.test_loader["synthetic_pedestrians"]["query"]))
    assert "prior_mask" not in q


def test_prior_follows_flip_and_translation_iou(tiny_root, tmp_path, registered):
    """Alignment at image resolution: with priors equal to the generator's ground-truth person
    masks, the dataset's transformed prior mask is compared with the ground-truth mask put
    through torchreid's own image transform (the same draws) as if it were the image."""
    from mpn_plugin.priors import PriorCacheWriter, coarse_prior_from_mask
    ds0 = compat.data.datasets.init_image_dataset("synthetic_pedestrians", root=tiny_root,
                                                   mode="train", transform=None, verbose=False)
    d = ds0.dataset_dir

    def gt_mask(path):
        rel = osp.relpath(path, d)
        return cv2.imread(osp.join(d, "maps", osp.dirname(rel),
                                   osp.basename(rel)[:-4] + "_person.png"), 0) > 0
    w = PriorCacheWriter(str(tmp_path / "oracle.npz"), {"tool": "oracle", "tool_version": "1",
                                                        "feature_size": [8, 4], "fingerprint": "x"})
    for path, *_ in ds0.train:
        m = gt_mask(path)
        w.add(osp.relpath(path, d), m, coarse_prior_from_mask(m, (8, 4)))
    w.finish()
    register_prior_datasets(PriorOptions(feature_stride=16,
                                         cache_file=str(tmp_path / "oracle.npz"),
                                         offline_translation_copies=5))
    tr, _ = compat.data.transforms.build_transforms(128, 64,
                                                    transforms=["random_flip", "random_crop"],
                                                    norm_mean=[0, 0, 0], norm_std=[1, 1, 1])
    ds = compat.data.datasets.init_image_dataset("synthetic_pedestrians", root=tiny_root,
                                                  transform=tr, mode="train", verbose=False)
    n = len(ds0.train)
    ious = []
    for i in list(range(0, 5 * n, 7)):
        path = ds.data[i][0]
        random.seed(i)
        torch.manual_seed(i)
        _, mask_t = ds.transformed_pair(i)
        # the ground truth of the shifted image: shift with zero fill (the person does not
        # extend into the replicated border of the image)
        dy, dx = ds.translation_of(i)
        _, gt = translate_pair(Image.new("RGB", (64, 128)), gt_mask(path).astype(np.float32),
                               int(round(dx * 64)), int(round(dy * 128)))
        gt_img = Image.fromarray(np.stack([(gt > 0.5).astype(np.uint8) * 255] * 3, -1))
        random.seed(i)
        torch.manual_seed(i)
        ref = tr(gt_img)[0].numpy() >= 0.5
        got = mask_t >= 0.5
        ious.append((ref & got).sum() / max((ref | got).sum(), 1))
    assert len(ious) >= 50
    assert np.mean(ious) >= 0.99 and min(ious) >= 0.98, (np.mean(ious), min(ious))


def test_joint_transform_images_identical_to_torchreid():
    img = Image.fromarray((np.random.default_rng(0).random((100, 50, 3)) * 255).astype(np.uint8))
    names = ["random_flip", "random_crop", "color_jitter", "random_erase", "random_patch"]
    tr, _ = compat.data.transforms.build_transforms(128, 64, transforms=names)
    for s in range(6):
        random.seed(s)
        torch.manual_seed(s)
        ref = tr(img)
        random.seed(s)
        torch.manual_seed(s)
        out, mask = JointTransform.from_compose(tr)(img, np.ones((100, 50), np.float32))
        assert torch.equal(ref, out) and mask.shape == (128, 64)


def test_mask_follows_geometry_exactly():
    """Image content == mask: after flip / crop / translation, image and mask still agree."""
    base = np.zeros((128, 64), np.uint8)
    base[20:90, 10:30] = 255     # asymmetric rectangle
    img = Image.fromarray(np.stack([base] * 3, -1))
    tr, _ = compat.data.transforms.build_transforms(128, 64,
                                                    transforms=["random_flip", "random_crop"],
                                                    norm_mean=[0, 0, 0], norm_std=[1, 1, 1])
    for s in range(10):
        random.seed(s)
        torch.manual_seed(s)
        out, mask = JointTransform.from_compose(tr)(img, base / 255.0)
        a, b = out[0].numpy() >= 0.5, mask >= 0.5
        assert (a & b).sum() / (a | b).sum() >= 0.99, s
    shifted, m = translate_pair(img, base / 255.0, dx=5, dy=-7)
    a, b = np.asarray(shifted)[..., 0] >= 128, m >= 0.5
    assert (a & b).sum() / (a | b).sum() >= 0.99 and b[13:83, 15:35].all()


def test_unknown_transform_is_named():
    import torchvision.transforms as T
    with pytest.raises(TypeError, match="RandomRotation"):
        JointTransform([T.RandomRotation(10)])


def test_offline_translation_enlarges_train_set(tiny_root, registered):
    register_prior_datasets(PriorOptions(feature_stride=16, offline_translation_copies=5))
    dm = datamanager(tiny_root)
    assert len(dm.train_loader.dataset) == 5 * 16 * 8
    assert next(iter(dm.train_loader))["prior_mask"].shape == (8, 8, 4)


def _translated_train_set(root, seed, copies=5):
    register_prior_datasets(PriorOptions(feature_stride=16, offline_translation_copies=copies,
                                         seed=seed))
    return compat.data.datasets.init_image_dataset("synthetic_pedestrians", root=root,
                                                   mode="train", transform=None, verbose=False)


def test_offline_translation_shift_is_drawn_per_image_and_copy(tiny_root, registered):
    """[53]: each translated image has its own shift (not one (dy, dx) per copy)."""
    ds = _translated_train_set(tiny_root, seed=0)
    n = 16 * 8
    shifts = np.array([ds.translation_of(i) for i in range(5 * n)]).reshape(5, n, 2)
    assert (shifts[0] == 0).all()                                 # copy 0: the originals
    for c in range(1, 5):
        assert len(np.unique(shifts[c], axis=0)) == n             # all differ within a copy
        assert (np.abs(shifts[c]) <= 0.1).all() and np.abs(shifts[c]).max() > 0.05
    assert not np.isclose(shifts[1], shifts[2]).all(axis=1).any()  # and across copies
    # every copy holds the same images, in the same order
    assert [p for p, *_ in ds.data[:n]] * 5 == [p for p, *_ in ds.data]


def test_offline_translation_shifts_are_deterministic_by_seed(tiny_root, registered):
    from mpn_plugin.data.joint_transforms import offline_translation_shifts

    def table(ds):
        return {(ds.data[i][0], i // (16 * 8)): ds.translation_of(i) for i in range(len(ds.data))}
    a = table(_translated_train_set(tiny_root, seed=3))
    assert a == table(_translated_train_set(tiny_root, seed=3))
    assert a != table(_translated_train_set(tiny_root, seed=4))
    # the draw follows the sorted paths: the order of the list does not matter
    paths = [f"{i:04d}.jpg" for i in range(20)]
    s = offline_translation_shifts(paths, 3, (0.1, 0.2), seed=1).reshape(3, 20, 2)
    r = offline_translation_shifts(paths[::-1], 3, (0.1, 0.2), seed=1).reshape(3, 20, 2)
    assert np.array_equal(s, r[:, ::-1])
    with pytest.raises(ValueError, match="n_copies"):
        offline_translation_shifts(paths, 0)


def test_image_without_prior_errors_or_falls_back(tiny_root, tmp_path, registered):
    from mpn_plugin.priors import PriorCacheWriter, coarse_prior_from_mask
    # a cache holding a single image
    ds0 = compat.data.datasets.init_image_dataset("synthetic_pedestrians", root=tiny_root,
                                                   mode="train", transform=None, verbose=False)
    rel = osp.relpath(ds0.train[0][0], ds0.dataset_dir)
    w = PriorCacheWriter(str(tmp_path / "one.npz"), {"tool": "t", "tool_version": "1",
                                                     "feature_size": [8, 4], "fingerprint": "x"})
    w.add(rel, None, coarse_prior_from_mask(None, (8, 4)))
    w.finish()
    register_prior_datasets(PriorOptions(feature_stride=16, cache_file=str(tmp_path / "one.npz")))
    dm = datamanager(tiny_root)
    with pytest.raises(KeyError, match="generate_priors.py"):
        next(iter(dm.train_loader))
    register_prior_datasets(PriorOptions(feature_stride=16, cache_file=str(tmp_path / "one.npz"),
                                         on_missing="uniform"))
    dm = datamanager(tiny_root)
    with pytest.warns(UserWarning, match="without a prior"):
        batch = next(iter(dm.train_loader))
    assert batch["prior_mask"].min() == 1 and (batch["prior_roi"] == torch.tensor([0.0, 1.0])).all()


def test_train_items_without_registered_options_name_the_call(tiny_root, registered):
    register_prior_datasets()  # the names only: no feature stride yet
    tr, _ = compat.data.transforms.build_transforms(128, 64, transforms=["random_flip"])
    ds = compat.data.datasets.init_image_dataset("synthetic_pedestrians", root=tiny_root,
                                                 mode="train", transform=tr, verbose=False)
    with pytest.raises(ValueError, match=r"'synthetic_pedestrians' has no prior options.*"
                                         r"register_prior_datasets\(PriorOptions.from_cfg"):
        ds[0]


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_synthetic_dataset.py"):
        datamanager(str(tmp_path))


def test_multi_source_training_keeps_priors(tiny_root, tmp_path, registered):
    """torchreid sums source datasets with Dataset.__add__ (a plain ImageDataset): ours keep
    each image's prior from its own dataset's cache."""
    import shutil

    from mpn_plugin.data.prior_datasets import prior_aware
    market = compat.submodule("data.datasets.image.market1501").Market1501
    shutil.copytree(osp.join(tiny_root, "synthetic_pedestrians"), tmp_path / "synthetic_copy")
    shutil.copytree(osp.join(tiny_root, "synthetic_pedestrians"),
                    tmp_path / "synthetic_pedestrians")
    register_prior_datasets(PriorOptions(feature_stride=16))
    compat.register_image_dataset("synthetic_copy",
                                  prior_aware(market, "synthetic_copy", "synthetic_copy",
                                              PriorOptions(feature_stride=16)),
                                  overwrite=True)
    dm = datamanager(str(tmp_path), sources=["synthetic_pedestrians", "synthetic_copy"])
    ds = dm.train_loader.dataset
    assert type(ds).__name__ == "CombinedPriorDataset"
    assert len(ds.train) == 2 * 16 * 8 and dm.num_train_pids == 32
    batch = next(iter(dm.train_loader))
    assert batch["prior_mask"].shape == (8, 8, 4)
    paths = {osp.basename(osp.dirname(osp.dirname(p))) for p in batch["impath"]}
    assert paths <= {"synthetic_pedestrians", "synthetic_copy"}


def test_multi_source_training_keeps_each_images_offline_translation(tiny_root, tmp_path,
                                                                     registered):
    import shutil

    from mpn_plugin.data.prior_datasets import prior_aware
    market = compat.submodule("data.datasets.image.market1501").Market1501
    for name in ("synthetic_pedestrians", "synthetic_copy"):
        shutil.copytree(osp.join(tiny_root, "synthetic_pedestrians"), tmp_path / name,
                        ignore=shutil.ignore_patterns("maps"))
    register_prior_datasets(PriorOptions(feature_stride=16, offline_translation_copies=2))
    copy = prior_aware(market, "synthetic_copy", "synthetic_copy")
    copy.prior_options = PriorOptions(feature_stride=16, offline_translation_copies=2)
    compat.register_image_dataset("synthetic_copy", copy, overwrite=True)
    sources = [compat.data.datasets.init_image_dataset(name, root=str(tmp_path), mode="train",
                                                       transform=None, verbose=False)
               for name in ("synthetic_pedestrians", "synthetic_copy")]
    combined = sources[0] + sources[1]
    want = [s.translation_of(i) for s in sources for i in range(len(s.train))]
    assert [combined.translation_of(i) for i in range(len(combined.train))] == want
    assert len(want) == 2 * 2 * 16 * 8 and len(set(want)) > 16 * 8
