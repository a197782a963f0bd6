"""Gallery search with faiss over L2-normalised features (inner product = cosine similarity,
Eq. 11: ranking by largest inner product = ranking by smallest cosine distance).

Index types (:data:`INDEX_TYPES`), chosen with ``index_type`` or from the gallery size
(:func:`default_index_type`):

* ``flat``  - ``IndexFlatIP``: exact; 4*D bytes per vector (12 KB at D = 3,072). Default up to
  :data:`FLAT_MAX` vectors.
* ``ivfpq`` - ``IVF<nlist>,PQ<m>np``: inverted file over ``nlist`` k-means cells, each vector
  stored as ``m`` bytes of product-quantisation codes (+ 8 bytes of id); approximate, searched
  in ``nprobe`` cells. Trained on a sample read shard by shard. Default above :data:`FLAT_MAX`.
* ``hnsw``  - ``HNSW<M>``: graph search over full vectors (no training, more memory than flat).

An index is a folder (``index.faiss``, ``index.json``, ``items.csv``) that grows shard by shard:
:meth:`GalleryIndex.add_store` adds the shards of a feature store not yet in it, so a new day
of crops is indexed without touching the old ones. Several indexes (one per machine, or per
disk) are searched together by :func:`search_sharded`: each returns its top-k and the results
are merged with ``faiss.ResultHeap``, which gives the top-k of one index holding everything
(exactly so for ``flat``).

Examples::

    >>> index = build_gallery_index(['features/gallery'], 'index/gallery')   # type from size
    >>> index = GalleryIndex.load('index/gallery')
    >>> scores, ids = index.search(query_features, k=10)                     # (Q, 10) each
    >>> index.items[ids[0, 0]]                                              # path, pid, camid
"""
from __future__ import annotations

import csv
import json
import math
import os
import os.path as osp
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..file_io import save_atomically
from ..progress import progress_bar as tqdm  # throttled without a terminal
from .feature_store import FeatureStore

__all__ = ["INDEX_TYPES", "FLAT_MAX", "default_index_type", "index_factory_string",
           "GalleryIndex", "build_gallery_index", "search_sharded", "search_cmc"]

INDEX_TYPES = ("auto", "flat", "ivfpq", "hnsw")
FLAT_MAX = 100_000            # exact search up to 1.2 GB of 3,072-d float32 vectors
MAX_TRAIN = 131_072           # IVF-PQ training sample cap (1.6 GB at D = 3,072)
INDEX_FILE, INFO_FILE, ITEMS_FILE = "index.faiss", "index.json", "items.csv"


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("gallery search needs faiss: pip install faiss-cpu") from exc
    return faiss


def default_index_type(num_vectors: int) -> str:
    """``flat`` (exact) up to :data:`FLAT_MAX` vectors, ``ivfpq`` above."""
    return "flat" if num_vectors <= FLAT_MAX else "ivfpq"


def default_nlist(num_vectors: int) -> int:
    """IVF cells: the power of two nearest sqrt(N), with at least 39 training vectors per
    cell (faiss's k-means minimum)."""
    nlist = 2 ** max(0, round(math.log2(max(math.sqrt(num_vectors), 1))))
    return int(max(1, min(nlist, num_vectors // 39)))


def default_pq_m(dim: int) -> int:
    """PQ sub-quantisers: one byte per 16 dimensions (192 bytes at D = 3,072), a divisor of D."""
    m = max(1, dim // 16)
    while dim % m:
        m -= 1
    return m


def index_factory_string(index_type: str, dim: int, num_vectors: int,
                         nlist: Optional[int] = None, pq_m: Optional[int] = None,
                         hnsw_m: int = 32) -> str:
    """faiss ``index_factory`` string for ``index_type`` (``auto``: from ``num_vectors``)."""
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index type {index_type!r}: choose one of {INDEX_TYPES}")
    if index_type == "auto":
        index_type = default_index_type(num_vectors)
    if index_type == "flat":
        return "Flat"
    if index_type == "hnsw":
        return f"HNSW{hnsw_m}"
    m = pq_m or default_pq_m(dim)
    if dim % m:
        raise ValueError(f"--pq-m {m} must divide the feature dimension {dim}")
    # "np": no polysemous training (only for Hamming-filtered search, which is not used here;
    # it costs minutes of simulated annealing per training)
    return f"IVF{nlist or default_nlist(num_vectors)},PQ{m}np"


def _model_identity(model: dict) -> dict:
    return {k: v for k, v in model.items() if k not in ("checkpoint", "config_file", "onnx")}


def _store_key(store: FeatureStore, shard: int) -> str:
    return f"{store.meta['inputs']['items_sha256'][:16]}:{shard}"


class GalleryIndex:
    """A faiss index of gallery features with the item (path, pid, camid) of every id.

    Args:
        index: a faiss index with inner-product metric.
        info (dict): ``factory``, ``dim``, ``model`` (the feature store's model metadata),
            ``shards`` (keys of the shards added), search parameters.
        items (list of (str, int, int)): item of each faiss id (ids are 0..ntotal-1).

    Examples::

        >>> index = GalleryIndex.create(dim=3072, factory='Flat')
        >>> index.add(features, [('g.jpg', 3, 1)])
        >>> index.save('index/gallery')
    """

    def __init__(self, index, info: dict, items: List[Tuple[str, int, int]]):
        self.index, self.info, self.items = index, info, items

    @classmethod
    def create(cls, dim: int, factory: str, nprobe: Optional[int] = None,
               ef_search: int = 64) -> "GalleryIndex":
        faiss = _faiss()
        index = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
        info = {"factory": factory, "dim": int(dim), "model": None, "shards": [],
                "nprobe": nprobe, "ef_search": ef_search}
        return cls(index, info, [])

    @classmethod
    def load(cls, path: str) -> "GalleryIndex":
        faiss = _faiss()
        if not osp.isfile(osp.join(path, INFO_FILE)):
            raise FileNotFoundError(f"{path!r} holds no gallery index ({INFO_FILE}); build one "
                                    f"with python tools/search_gallery.py build --features ... "
                                    f"--index {path}")
        with open(osp.join(path, INFO_FILE)) as f:
            info = json.load(f)
        with open(osp.join(path, ITEMS_FILE), newline="") as f:
            items = [(r["path"], int(r["pid"]), int(r["camid"])) for r in csv.DictReader(f)]
        index = faiss.read_index(osp.join(path, INDEX_FILE))
        if index.ntotal != len(items):
            raise ValueError(f"{path}: index holds {index.ntotal} vectors for {len(items)} items; "
                             "build it again")
        return cls(index, info, items)

    def save(self, path: str) -> None:
        """Write the index folder (each file atomically: a temporary file, then renamed)."""
        faiss = _faiss()
        os.makedirs(path, exist_ok=True)

        def write_items(tmp):
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(("path", "pid", "camid"))
                w.writerows(self.items)

        def write_info(tmp):
            with open(tmp, "w") as f:
                json.dump(dict(self.info, ntotal=int(self.index.ntotal)), f, indent=2)

        save_atomically(lambda tmp: faiss.write_index(self.index, tmp), osp.join(path, INDEX_FILE))
        save_atomically(write_items, osp.join(path, ITEMS_FILE))
        save_atomically(write_info, osp.join(path, INFO_FILE))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def train(self, sample: np.ndarray) -> None:
        self.index.train(np.ascontiguousarray(sample, dtype=np.float32))

    def check_model(self, model: dict, what: str) -> None:
        """Refuse features of another model than the ones already indexed (compared by the
        hashes and preprocessing in the metadata, not by file locations)."""
        if self.info["model"] is None:
            self.info["model"] = model
        elif _model_identity(self.info["model"]) != _model_identity(model):
            raise ValueError(f"{what} comes from another model than the indexed gallery "
                             f"({model} != {self.info['model']}); extract both with the same "
                             "config and checkpoint")

    def add(self, features: np.ndarray, items: Sequence[Tuple[str, int, int]]) -> None:
        if len(features) != len(items):
            raise ValueError(f"{len(features)} features for {len(items)} items")
        if len(features):
            self.index.add(np.ascontiguousarray(features, dtype=np.float32))
            self.items += [tuple(it) for it in items]

    def add_store(self, store: FeatureStore, progress: bool = True) -> int:
        """Add the shards of ``store`` not yet in the index; returns the vectors added."""
        self.check_model(store.meta["model"], f"feature store {store.path!r}")
        if store.feature_dim != self.info["dim"]:
            raise ValueError(f"feature store {store.path!r}: dimension {store.feature_dim}, "
                             f"the index holds {self.info['dim']}-d vectors")
        added = 0
        todo = [i for i in range(store.num_shards)
                if _store_key(store, i) not in self.info["shards"]]
        for i in tqdm(todo, desc="indexing", unit="shard", disable=None if progress else True):
            feats, rows = store.shard(i)
            self.add(feats, [(r["path"], r["pid"], r["camid"]) for r in rows])
            self.info["shards"].append(_store_key(store, i))
            added += len(rows)
        return added

    def _set_search_params(self) -> None:
        if "IVF" in self.info["factory"] and self.info.get("nprobe"):
            _faiss().extract_index_ivf(self.index).nprobe = int(self.info["nprobe"])
        if "HNSW" in self.info["factory"]:
            self.index.hnsw.efSearch = int(self.info.get("ef_search") or 64)

    def search(self, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` gallery ids by cosine similarity: (scores (Q, k) float32, ids (Q, k)
        int64), best first; -1 ids (score -inf) when the index holds fewer than k vectors."""
        self._set_search_params()
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), int(k))


def _training_sample(stores: Sequence[FeatureStore], size: int, seed: int = 0) -> np.ndarray:
    """``size`` vectors drawn without replacement from all shards, one shard in memory at
    a time."""
    counts = [len(store.shard(i)[1]) for store in stores for i in range(store.num_shards)]
    total = sum(counts)
    picks = np.sort(np.random.default_rng(seed).choice(total, min(size, total), replace=False))
    bounds = np.cumsum([0] + counts)
    out, s = [], 0
    for store in stores:
        for i in range(store.num_shards):
            lo, hi = bounds[s], bounds[s + 1]
            sel = picks[(picks >= lo) & (picks < hi)] - lo
            if len(sel):
                out.append(np.asarray(store.shard(i)[0][sel], dtype=np.float32))
            s += 1
    return np.concatenate(out)


def build_gallery_index(features: Sequence[str], out_dir: str, index_type: str = "auto",
                        nlist: Optional[int] = None, pq_m: Optional[int] = None,
                        nprobe: Optional[int] = None, hnsw_m: int = 32, ef_search: int = 64,
                        train_size: Optional[int] = None, progress: bool = True) -> GalleryIndex:
    """Build (or extend) the index in ``out_dir`` from feature stores, shard by shard.

    When ``out_dir`` already holds an index, the shards not yet in it are added (its type and
    training are kept); otherwise a new one is made, of ``index_type`` (``auto``: from the
    total size, :func:`default_index_type`), trained when it needs it on ``train_size``
    vectors sampled over all shards (default: 64 per IVF cell, at least 10,000, at most
    :data:`MAX_TRAIN`).

    Args:
        features (sequence of str): feature-store folders (``tools/extract_features.py``).
        out_dir (str): index folder.
        index_type (str): one of :data:`INDEX_TYPES`.
        nlist, pq_m, hnsw_m: IVF cells, PQ bytes per vector, HNSW neighbours (defaults:
            :func:`default_nlist`, :func:`default_pq_m`, 32).
        nprobe (int, optional): IVF cells searched (default: nlist / 16, at least 1).
        ef_search (int): HNSW search breadth.
        train_size (int, optional): IVF-PQ training sample.
        progress (bool): tqdm bars.

    Returns:
        GalleryIndex: the saved index.
    """
    stores = [FeatureStore(p) for p in features]
    if osp.isfile(osp.join(out_dir, INFO_FILE)):
        index = GalleryIndex.load(out_dir)
    else:
        dims = {s.feature_dim for s in stores}
        if len(dims) != 1:
            raise ValueError(f"feature stores {list(features)} have different dimensions {dims}")
        dim, total = dims.pop(), sum(s.num_features for s in stores)
        nlist = nlist or default_nlist(total)
        factory = index_factory_string(index_type, dim, total, nlist, pq_m, hnsw_m)
        index = GalleryIndex.create(dim, factory, nprobe=nprobe or max(1, nlist // 16),
                                    ef_search=ef_search)
        if not index.is_trained:
            size = train_size or min(MAX_TRAIN, max(64 * nlist, 10_000))
            print(f"[index] training {factory} on {min(size, total)} of {total} vectors")
            index.train(_training_sample(stores, size))
    for store in stores:
        index.add_store(store, progress=progress)
    index.save(out_dir)
    return index


def search_sharded(indexes: Sequence[GalleryIndex], queries: np.ndarray, k: int
                   ) -> Tuple[np.ndarray, np.ndarray, List[Tuple[str, int, int]]]:
    """Search several indexes as one: each gives its top-``k``, merged with
    ``faiss.ResultHeap``. Ids are global: index j's ids are offset by the sizes of
    indexes 0..j-1, and the returned items list is their concatenation.

    Returns:
        (scores (Q, k), ids (Q, k), items)
    """
    faiss = _faiss()
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    heap = faiss.ResultHeap(len(queries), int(k), keep_max=True)
    offset, items = 0, []
    for index in indexes:
        scores, ids = index.search(queries, k)
        heap.add_result(scores, np.where(ids >= 0, ids + offset, -1))
        offset += index.ntotal
        items += index.items
    heap.finalize()
    return heap.D, heap.I, items


def search_cmc(search, q_pids: np.ndarray, q_camids: np.ndarray, g_pids: np.ndarray,
               g_camids: np.ndarray, max_rank: int = 10) -> Dict[str, float]:
    """CMC of a top-k search under the evaluator's protocol (:mod:`mpn_plugin.evaluation.rank`):
    gallery items of the query's identity and camera are removed ("junk"), a query without a
    same-identity item from another camera is not counted, Rank-r = fraction of counted
    queries whose first match is among the first r remaining results. For an exact index it
    equals the evaluator's CMC.

    Args:
        search (callable): ``k -> ids (Q, k)`` (e.g. ``lambda k: index.search(q, k)[1]``);
            called once, with ``k`` = ``max_rank`` + the most junk items of any query.
        q_pids, q_camids, g_pids, g_camids: identities and cameras (-1 pid = unknown: such
            queries are not counted).
        max_rank (int): CMC length.

    Returns:
        dict: ``rank1``, ``rank5`` ... up to ``max_rank`` (keys for 1, 5, 10, 20 that fit),
        ``cmc`` (list), ``num_valid``.
    """
    q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    same_cam = Counter(zip(g_pids.tolist(), g_camids.tolist()))
    per_id = Counter(g_pids.tolist())
    junk = np.array([same_cam[(p, c)] for p, c in zip(q_pids.tolist(), q_camids.tolist())])
    valid = np.array([p >= 0 and per_id[p] - j > 0 for p, j in zip(q_pids.tolist(), junk)])
    if not valid.any():
        raise ValueError("search_cmc: no query has a gallery item of its identity from another "
                         "camera; check the pids/camids of the feature stores")
    ids = search(int(min(len(g_pids), max_rank + (junk.max() if len(junk) else 0))))
    ok = ids >= 0
    safe = np.where(ok, ids, 0)
    is_junk = ok & (g_pids[safe] == q_pids[:, None]) & (g_camids[safe] == q_camids[:, None])
    match = ok & ~is_junk & (g_pids[safe] == q_pids[:, None])
    kept_rank = np.cumsum(ok & ~is_junk, axis=1) - 1            # 0-based rank among kept
    first = np.where(match, kept_rank, np.iinfo(np.int64).max).min(axis=1)[valid]
    cmc = [float(np.mean(first < r)) for r in range(1, max_rank + 1)]
    out = {f"rank{r}": cmc[r - 1] for r in (1, 5, 10, 20) if r <= max_rank}
    out.update(cmc=cmc, num_valid=int(valid.sum()))
    return out
