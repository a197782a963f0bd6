"""Multi-query evaluation on Market-1501 (paper Table 5, "multi-query").

The protocol of the Market-1501 release (Zheng et al., "Scalable Person Re-identification: A
Benchmark", ICCV 2015; the release's ``gt_bbox/`` folder): a query is represented by the
features of *all* hand-drawn boxes (``gt_bbox/``) of the query's identity **in the query's
camera**, merged into one feature by average pooling (``mean``) or max pooling (``max``). The
query image is not added separately: Market-1501's query crops are themselves hand-drawn boxes
(suffix ``_00``) that ``gt_bbox/`` holds under the same file name, so each one is pooled once,
like every other gt_bbox box of its identity and camera. ``gt_bbox/`` covers all 1,501
identities (release readme: 25,259 images, all hand-drawn, of the train and test
individuals); only the (identity, camera) pairs of the queries are read. Features are pooled
raw, before the distance (the config's ``test.normalize_feature`` and ``test.dist_metric``
then apply as usual); gallery, ranking and the CMC/mAP rules (same-camera gallery images of
the identity are junk) are unchanged.

The rule as implemented by public evaluation code of the Market-1501 protocol: the gt_bbox
images with the query's id and camera (``np.intersect1d`` of the two index sets), averaged
(layumi/Person_reID_baseline_pytorch ``evaluate.py``, which copies ``gt_bbox`` to a
``multi-query`` folder in ``prepare.py``); "for multi-query, only care for those same-id
same-cam counterparts in the gt_bbox dir", unnormalised features, ``average`` or ``max``
pooling (huanghoujing's Market-1501 test wrapper, ``eval_multi_query``).

* :func:`pool_multi_query` - the pooling itself (pure function on features, pids, camids).
* :func:`gt_bbox_dir` - the dataset's ``gt_bbox/`` folder, with clear errors.
* :func:`gt_bbox_loader` - the gt_bbox images of the queries' identities and cameras, read
  through the query loader's own (test) transform, batch size and workers.
"""
from __future__ import annotations

import os
import os.path as osp

import numpy as np
import torch

#: values of ``test.multi_query``
POOLINGS = ("none", "mean", "max")
GT_BBOX = "gt_bbox"


def pool_multi_query(qf: torch.Tensor, q_pids, q_camids, mf: torch.Tensor, m_pids, m_camids,
                     pooling: str = "mean") -> torch.Tensor:
    """Replace each query's feature by the pooled features of its multi-query images.

    Args:
        qf (torch.Tensor): (Q, D) query features (used for ``none`` and for a query that has
            no multi-query image).
        q_pids, q_camids (array-like): (Q,) identity and camera of each query.
        mf (torch.Tensor): (M, D) raw features of the multi-query images (``gt_bbox/``).
        m_pids, m_camids (array-like): (M,) identity and camera of each multi-query image.
        pooling (str): ``mean`` (average pooling), ``max`` (element-wise max pooling) or
            ``none`` (``qf`` returned as is).

    Returns:
        torch.Tensor: (Q, D); row i pools the rows j of ``mf`` with ``m_pids[j] == q_pids[i]``
        and ``m_camids[j] == q_camids[i]``; a query with no such row keeps ``qf[i]``.

    Examples::

        >>> qf = torch.zeros(2, 2)
        >>> mf = torch.tensor([[1., 0.], [3., 4.], [0., 5.]])
        >>> pool_multi_query(qf, [7, 8], [0, 0], mf, [7, 7, 8], [0, 0, 0], 'mean')
        tensor([[2., 2.],
                [0., 5.]])
        >>> pool_multi_query(qf, [7, 8], [0, 1], mf, [7, 7, 8], [0, 0, 0], 'max')
        tensor([[3., 4.],
                [0., 0.]])
    """
    if pooling not in POOLINGS:
        raise ValueError(f"multi-query pooling must be one of {POOLINGS}, got '{pooling}'")
    if pooling == "none":
        return qf
    q_keys = np.stack([np.asarray(q_pids), np.asarray(q_camids)], 1).astype(np.int64)
    m_keys = np.stack([np.asarray(m_pids), np.asarray(m_camids)], 1).astype(np.int64)
    if len(q_keys) != len(qf) or len(m_keys) != len(mf):
        raise ValueError(f"features and labels differ in length: {len(qf)} query features for "
                         f"{len(q_keys)} labels, {len(mf)} multi-query features for "
                         f"{len(m_keys)} labels")
    # one group per (pid, camid) seen in either set: rows [0, M) are mf, [M, M + Q) are qf
    _, group = np.unique(np.concatenate([m_keys, q_keys]), axis=0, return_inverse=True)
    group = torch.from_numpy(group.reshape(-1)).to(qf.device)
    m_group, q_group = group[:len(m_keys)], group[len(m_keys):]
    num_groups = int(group.max()) + 1 if len(group) else 0
    D = qf.shape[1]
    mf = mf.to(device=qf.device, dtype=qf.dtype)
    pooled = torch.zeros(num_groups, D, dtype=qf.dtype, device=qf.device).scatter_reduce(
        0, m_group[:, None].expand(-1, D), mf, reduce="mean" if pooling == "mean" else "amax",
        include_self=False)                                   # (M, D) -> (num_groups, D)
    has_images = torch.zeros(num_groups, dtype=torch.bool, device=qf.device)
    has_images[m_group] = True
    out = pooled[q_group]                                     # (Q, D)
    missing = ~has_images[q_group]
    out[missing] = qf[missing]
    return out


def gt_bbox_dir(dataset, pooling: str = "mean", dataset_name: str = "") -> str:
    """The ``gt_bbox/`` folder beside the ``query/`` folder of a Market-1501-like test dataset.

    Args:
        dataset: the query dataset of a target (``datamanager.test_loader[name]['query']
            .dataset``): torchreid's ``Market1501`` or a subclass (``market1501_prior``,
            ``synthetic_pedestrians``).
        pooling (str): the ``test.multi_query`` value (for messages).
        dataset_name (str): the target's name (for messages).

    Raises:
        ValueError: the dataset is not Market-1501-like (multi-query is defined for it only).
        FileNotFoundError: the dataset has no ``gt_bbox/`` folder, or it holds no ``*.jpg``.
    """
    from .. import compat
    market = compat.submodule("data.datasets.image.market1501").Market1501
    name = dataset_name or type(dataset).__name__
    if not isinstance(dataset, market) or not hasattr(dataset, "query_dir"):
        raise ValueError(
            f"test.multi_query={pooling} is the Market-1501 multi-query protocol (gt_bbox/ "
            f"boxes of the query's identity and camera); target '{name}' "
            f"({type(dataset).__name__}) is not a Market-1501-like dataset (market1501, "
            f"market1501_prior, synthetic_pedestrians). Set test.multi_query none, or test "
            f"on a Market-1501 target (-t market1501_prior).")
    folder = osp.join(osp.dirname(dataset.query_dir), GT_BBOX)
    fix = ("Copy the gt_bbox/ folder of the Market-1501-v15.09.15 release (25,259 hand-drawn "
           "boxes, e.g. 0001_c1s1_001051_00.jpg) there; for the synthetic dataset regenerate it "
           "with python tools/make_synthetic_dataset.py --root ROOT --gt-bbox-per-id-cam 3 "
           "--overwrite; or set test.multi_query none.")
    if not osp.isdir(folder):
        raise FileNotFoundError(f"test.multi_query={pooling} needs the folder '{folder}' (target "
                                f"'{name}'), which does not exist. {fix}")
    if not any(f.endswith(".jpg") for f in os.listdir(folder)):
        raise FileNotFoundError(f"test.multi_query={pooling}: the folder '{folder}' (target "
                                f"'{name}') holds no .jpg image. {fix}")
    return folder


class GtBboxImages(torch.utils.data.Dataset):
    """The gt_bbox images of given (pid, camid) pairs as torchreid test items
    (``{'img', 'pid', 'camid', 'impath', 'dsetid'}``), read through ``transform``."""

    def __init__(self, items, transform):
        self.items = items              # [(path, pid, camid)], sorted by path
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        from .. import compat
        path, pid, camid = self.items[index]
        img = compat.read_image(path)
        if self.transform is not None:
            img = self.transform(img)
        return {"img": img, "pid": pid, "camid": camid, "impath": path, "dsetid": 0}


def gt_bbox_loader(query_loader, pooling: str = "mean",
                   dataset_name: str = "") -> torch.utils.data.DataLoader:
    """A loader of the gt_bbox images of the queries' (identity, camera) pairs.

    File names are parsed by the dataset's own Market-1501 parser (``process_dir``: pid,
    0-based camid, junk pid -1 dropped), images go through the query dataset's (test)
    transform, with the query loader's batch size and workers, in file-name order.

    Args:
        query_loader: a target's query loader (``datamanager.test_loader[name]['query']``).
        pooling, dataset_name (str): for messages (see :func:`gt_bbox_dir`).

    Raises:
        ValueError, FileNotFoundError: see :func:`gt_bbox_dir`; also when no gt_bbox image has
            the identity and camera of any query.
    """
    dataset = query_loader.dataset
    folder = gt_bbox_dir(dataset, pooling, dataset_name)
    wanted = {(int(pid), int(camid)) for _, pid, camid, *_ in dataset.query}
    items = sorted((p, pid, camid) for p, pid, camid, *_ in dataset.process_dir(folder)
                   if (pid, camid) in wanted)
    if not items:
        raise FileNotFoundError(
            f"test.multi_query={pooling}: '{folder}' holds no image with the identity and "
            f"camera of any of the {len(dataset.query)} queries of target "
            f"'{dataset_name or type(dataset).__name__}' (file names PPPP_cC..._NN.jpg as in "
            f"query/); is it the gt_bbox/ folder of this dataset?")
    return torch.utils.data.DataLoader(
        GtBboxImages(items, dataset.transform), batch_size=query_loader.batch_size,
        shuffle=False, num_workers=query_loader.num_workers,
        pin_memory=query_loader.pin_memory, drop_last=False)


def multi_query_summary(q_pids, q_camids, m_pids, m_camids) -> str:
    """One line for the log: multi-query images per query, and queries without any."""
    q_keys = np.stack([np.asarray(q_pids), np.asarray(q_camids)], 1)
    m_keys = np.stack([np.asarray(m_pids), np.asarray(m_camids)], 1)
    keys, group = np.unique(np.concatenate([m_keys, q_keys]), axis=0, return_inverse=True)
    group = group.reshape(-1)
    per_query = np.bincount(group[:len(m_keys)], minlength=len(keys))[group[len(m_keys):]]
    line = (f"{len(m_keys)} gt_bbox images for {len(q_keys)} queries "
            f"({per_query.min()}-{per_query.max()} per query)")
    if (per_query == 0).any():
        line += f"; {(per_query == 0).sum()} queries without any keep their own feature"
    return line


__all__ = ["POOLINGS", "pool_multi_query", "gt_bbox_dir", "gt_bbox_loader", "GtBboxImages",
           "multi_query_summary"]
