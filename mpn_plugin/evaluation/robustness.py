"""Robustness sweep: retrieval of trained models as their queries are perturbed (Fig. 1a errors).

Protocol (``tools/robustness_sweep.py`` is the command line):

1. The query and gallery lists of one dataset, as torchreid's parser gives them. Only the
   queries are perturbed, by one perturbation of :mod:`.perturbations` at one amount, on the
   crop as read from disk; the gallery stays clean and its features are extracted once per model.
2. Every model sees the same perturbed crops (per-image seeds, :func:`~.perturbations.image_seed`),
   through its own test transform (torchreid's: resize to its ``data.height x data.width``,
   normalise) and extracts features as its engine does (``test.flip`` adds the flipped image's).
3. Ranking with the project's evaluator (:func:`~.rank.rank_and_evaluate`) under the model's
   own ``test.dist_metric``, ``test.normalize_feature``, ``test.rerank`` and CUHK03 metric;
   numpy's global random state is re-seeded before each evaluation (the CUHK03 draws).
4. Part-based models, whose test feature is K part features concatenated (the MPN family:
   h = [f_1, ..., f_K], Eq. 2, and the Baseline's g; torchreid's PCB), also get the mean
   per-part cosine distance over matching query-gallery pairs (same identity, other camera:
   the protocol's correct matches), i.e. which parts break first as the perturbation grows.

When a perturbation leaves every query unchanged (its clean amount) the clean features are
reused: the images are bit-identical, so are the features and the metrics.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import compat
from ..progress import progress_bar as tqdm  # throttled without a terminal
from .perturbations import MEAN_FILL, Perturbation, choose_occluder, image_seed, perturbations
from .rank import rank_and_evaluate

__all__ = ["Split", "load_split", "ReidModel", "part_count", "matching_part_distances",
           "part_cosine_distances", "perturbed_queries", "run_sweep", "explain_pair",
           "summary_markdown", "read_rgb"]


@dataclass
class Split:
    """Image paths, identities and cameras of a query or gallery set."""
    paths: List[str]
    pids: np.ndarray
    camids: np.ndarray

    @classmethod
    def from_items(cls, items) -> "Split":
        """From torchreid's ``(path, pid, camid, dsetid)`` items."""
        return cls([it[0] for it in items], np.array([it[1] for it in items], np.int64),
                   np.array([it[2] for it in items], np.int64))

    def __len__(self):
        return len(self.paths)

    def subset(self, index: Sequence[int]) -> "Split":
        index = np.asarray(index, np.int64)
        return Split([self.paths[i] for i in index], self.pids[index], self.camids[index])


def load_split(dataset: str, root: str) -> Tuple[Split, Split]:
    """(query, gallery) of a registered torchreid dataset (``synthetic_pedestrians``,
    ``market1501``...) under ``root``."""
    with contextlib.redirect_stdout(io.StringIO()):
        ds = compat.data.datasets.init_image_dataset(dataset, root=root, mode="query",
                                                     transform=None, verbose=False)
    if not ds.query or not ds.gallery:
        raise ValueError(f"dataset {dataset!r} under {root!r} has {len(ds.query)} query and "
                         f"{len(ds.gallery)} gallery images; both are needed")
    return Split.from_items(ds.query), Split.from_items(ds.gallery)


def read_rgb(path: str) -> np.ndarray:
    """An image as torchreid reads it (PIL, RGB), as a (H, W, 3) uint8 array."""
    return np.asarray(compat.read_image(path))


def part_count(model: torch.nn.Module) -> Optional[int]:
    """K when the model's test feature is K concatenated part features: the MPN family
    (``num_parts``), torchreid's PCB (``parts``); None for a global feature."""
    for attr in ("num_parts", "parts"):
        k = getattr(model, attr, None)
        if isinstance(k, int) and not isinstance(k, bool) and k > 1:
            return k
    return None


def _parts(features: torch.Tensor, num_parts: int) -> torch.Tensor:
    """(N, K*D) -> (N, K, D), each part L2-normalised, float64."""
    N, dim = features.shape
    if dim % num_parts:
        raise ValueError(f"feature dimension {dim} is not a multiple of K={num_parts} parts")
    return F.normalize(features.double().view(N, num_parts, dim // num_parts), dim=2)


def part_cosine_distances(qf: torch.Tensor, gf: torch.Tensor, num_parts: int) -> torch.Tensor:
    """1 - cos(q_k, g_k) of each part of paired rows: (N, K*D), (N, K*D) -> (N, K)."""
    return 1 - (_parts(qf, num_parts) * _parts(gf, num_parts)).sum(2)


def matching_part_distances(qf: torch.Tensor, gf: torch.Tensor, q_pids, g_pids, q_camids,
                            g_camids, num_parts: int) -> np.ndarray:
    """Mean over all matching pairs (same identity, other camera) of the per-part cosine
    distance 1 - cos(q_k, g_k): (K,).

    Without a (Q, G) matrix: the sum over the matches of query i is ``q_i . (S[pid] -
    S[pid, cam])`` with S the sums of the normalised gallery parts per identity and per
    (identity, camera).

    Examples::

        >>> d = matching_part_distances(qf, gf, q_pids, g_pids, q_camids, g_camids, 6)
        >>> d.shape
        (6,)
    """
    q_pids, g_pids = np.asarray(q_pids, np.int64), np.asarray(g_pids, np.int64)
    q_cams, g_cams = np.asarray(q_camids, np.int64), np.asarray(g_camids, np.int64)
    qn, gn = _parts(qf, num_parts), _parts(gf, num_parts)            # (Q, K, D), (G, K, D)
    base = int(max(q_cams.max(), g_cams.max())) + 1
    sums = []
    for q_key, g_key in ((q_pids, g_pids), (q_pids * base + q_cams, g_pids * base + g_cams)):
        keys, g_code = np.unique(g_key, return_inverse=True)
        S = torch.zeros(len(keys) + 1, *gn.shape[1:], dtype=gn.dtype)    # last row: absent
        S.index_add_(0, torch.from_numpy(g_code.reshape(-1)), gn)
        n = np.append(np.bincount(g_code.reshape(-1), minlength=len(keys)), 0)
        pos = np.minimum(np.searchsorted(keys, q_key), len(keys) - 1)
        code = np.where(keys[pos] == q_key, pos, len(keys))             # (Q,)
        sums.append((S[torch.from_numpy(code)], n[code]))
    (S_id, n_id), (S_cam, n_cam) = sums
    count = int((n_id - n_cam).sum())
    if count == 0:
        raise ValueError("no matching query-gallery pair (same identity, other camera)")
    cos = (qn * (S_id - S_cam)).sum(2).sum(0) / count                   # (K,)
    return (1 - cos).numpy()


def _test_transform(cfg):
    with contextlib.redirect_stdout(io.StringIO()):                     # torchreid prints it
        return compat.transforms.build_transforms(
            cfg.data.height, cfg.data.width, transforms=None, norm_mean=cfg.data.norm_mean,
            norm_std=cfg.data.norm_std)[1]


class ReidModel:
    """A trained model with the test protocol of its config.

    Args:
        name (str): label in the outputs.
        model (torch.nn.Module): in eval mode (:func:`mpn_plugin.build.load_model_spec`).
        cfg: its config (input size, normalisation, ``test.*``).
        device (str, optional): default CUDA when available, else CPU.

    Examples::

        >>> name, model, cfg = load_model_spec('MPN=configs/mpn_synthetic.yaml:ckpt')
        >>> m = ReidModel(name, model, cfg)
        >>> qf = m.features([read_rgb(p) for p in query.paths])
    """

    def __init__(self, name: str, model: torch.nn.Module, cfg, device: Optional[str] = None):
        self.name, self.cfg = name, cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.transform = _test_transform(cfg)
        self.num_parts = part_count(model)

    @torch.no_grad()
    def features(self, images: Sequence, desc: Optional[str] = None) -> torch.Tensor:
        """Test features (N, D) float32 of RGB uint8 arrays or image paths, in batches of
        ``test.batch_size`` (+ the flipped image's with ``test.flip``; autocast with
        ``test.amp``), as the engines extract them."""
        out = []
        for x in self.input_batches(images, desc):
            with torch.autocast(self.device.type, dtype=torch.bfloat16 if self.device.type == "cpu"
                                else torch.float16, enabled=bool(self.cfg.test.amp)):
                f = self.model(x).float()
                if self.cfg.test.flip:
                    f = f + self.model(torch.flip(x, dims=[3])).float()
            out.append(f.cpu())
        return torch.cat(out)

    def input_batches(self, images: Sequence, desc: Optional[str] = None):
        """The model's inputs (B, 3, height, width) on its device, ``test.batch_size`` images at
        a time: RGB uint8 arrays or image paths through the test transform."""
        bs = int(self.cfg.test.batch_size)
        steps = range(0, len(images), bs)
        for s in tqdm(steps, desc=desc, leave=False, disable=desc is None, unit="batch"):
            batch = [Image.fromarray(x) if isinstance(x, np.ndarray) else compat.read_image(x)
                     for x in images[s:s + bs]]
            yield torch.stack([self.transform(im) for im in batch]).to(self.device)

    def evaluate(self, qf: torch.Tensor, gf: torch.Tensor, query: Split, gallery: Split,
                 seed: int = 0) -> Tuple[float, float]:
        """(Rank-1, mAP) under the model's distance, normalisation, re-ranking and metric."""
        np.random.seed(seed)                       # the CUHK03 metric draws from numpy's state
        cmc, mAP, _ = rank_and_evaluate(
            qf, gf, query.pids, gallery.pids, query.camids, gallery.camids,
            self.cfg.test.dist_metric, 50, normalize=self.cfg.test.normalize_feature,
            use_metric_cuhk03=self.cfg.cuhk03.use_metric_cuhk03, rerank=self.cfg.test.rerank)
        return float(cmc[0]), float(mAP)

    def part_distances(self, qf, gf, query: Split, gallery: Split) -> Optional[List[float]]:
        """Mean per-part cosine distance over matching pairs (K,), None for a global feature."""
        if self.num_parts is None:
            return None
        return matching_part_distances(qf, gf, query.pids, gallery.pids, query.camids,
                                       gallery.camids, self.num_parts).tolist()

    def describe(self) -> dict:
        c = self.cfg
        return dict(model_name=c.model.name, input=[c.data.height, c.data.width],
                    dist_metric=c.test.dist_metric,
                    normalize_feature=bool(c.test.normalize_feature),
                    flip=bool(c.test.flip), rerank=bool(c.test.rerank), num_parts=self.num_parts)


class _Occluders:
    """Per query, one gallery image of another identity (:func:`choose_occluder`), the same at
    every amount; images read once."""

    def __init__(self, gallery: Split, seed: int):
        self.gallery, self.seed, self.cache = gallery, seed, {}

    def __call__(self, index: int, pid: int) -> np.ndarray:
        g = choose_occluder(pid, self.gallery.pids, image_seed(self.seed, "occluder", index))
        if g not in self.cache:
            self.cache[g] = read_rgb(self.gallery.paths[g])
        return self.cache[g]


def perturbed_queries(p: Perturbation, level: float, images: Sequence[np.ndarray],
                      query: Split, occluders: Optional[_Occluders], seed: int,
                      index: Optional[Sequence[int]] = None) -> List[np.ndarray]:
    """The query crops under ``p`` at ``level`` (``index``: their positions in the query set,
    which fix their seeds; default 0..N-1)."""
    index = range(len(images)) if index is None else index
    return [p.fn(img, level, image_seed(seed, p.name, i),
                 occluders(i, int(query.pids[i])) if p.needs_occluder else None)
            for i, img in zip(index, images)]


def run_sweep(models: Sequence[ReidModel], query: Split, gallery: Split,
              plan: Dict[str, Sequence[float]], seed: int = 0, rect_fill=MEAN_FILL,
              progress: bool = True) -> dict:
    """Every model at every (perturbation, amount) of ``plan``.

    Args:
        models (list of ReidModel): models to compare.
        query, gallery (Split): the dataset's query (perturbed) and gallery (clean) sets.
        plan (dict): perturbation name -> amounts (see :data:`~.perturbations.PERTURBATIONS`).
        seed (int): seeds the perturbations and the evaluation.
        rect_fill: fill of the rectangle occluder (RGB or ``"noise"``).
        progress (bool): tqdm bars.

    Returns:
        dict: ``models`` (per name: protocol, clean ``rank1``/``mAP``/``part_distances``) and
        ``points`` (one dict per model, perturbation and amount: ``rank1``, ``mAP``, the clean
        scores, ``mAP_retained`` = mAP / clean mAP, ``part_distances`` or None).

    Examples::

        >>> res = run_sweep([ReidModel(n, m, c) for n, m, c in specs], query, gallery,
        ...                 {"shift": [-0.2, 0.0, 0.2], "occlusion_rect": [0.0, 0.3]})
    """
    registry = perturbations(rect_fill)
    unknown = sorted(set(plan) - set(registry))
    if unknown:
        raise ValueError(f"unknown perturbations {unknown}; choose from {sorted(registry)}")
    images = [read_rgb(p) for p in tqdm(query.paths, desc="read queries", leave=False,
                                           disable=not progress)]
    gallery_features, clean = {}, {}
    for m in models:
        gf = m.features(gallery.paths, desc=f"{m.name}: gallery" if progress else None)
        qf = m.features(images, desc=f"{m.name}: clean queries" if progress else None)
        gallery_features[m.name] = gf
        r1, mAP = m.evaluate(qf, gf, query, gallery, seed)
        clean[m.name] = dict(m.describe(), rank1=r1, mAP=mAP,
                             part_distances=m.part_distances(qf, gf, query, gallery))
    occluders = _Occluders(gallery, seed)
    jobs = [(name, float(level)) for name, levels in plan.items() for level in levels]
    points = []
    for name, level in tqdm(jobs, desc="robustness sweep", unit="point", disable=not progress):
        p = registry[name]
        perturbed = perturbed_queries(p, level, images, query, occluders, seed)
        unchanged = all(a.shape == b.shape and np.array_equal(a, b)
                        for a, b in zip(perturbed, images))
        for m in models:
            c = clean[m.name]
            if unchanged:
                r1, mAP, parts = c["rank1"], c["mAP"], c["part_distances"]
            else:
                qf = m.features(perturbed)
                gf = gallery_features[m.name]
                r1, mAP = m.evaluate(qf, gf, query, gallery, seed)
                parts = m.part_distances(qf, gf, query, gallery)
            points.append(dict(model=m.name, perturbation=name, level=level, rank1=r1, mAP=mAP,
                               clean_rank1=c["rank1"], clean_mAP=c["mAP"],
                               mAP_retained=mAP / c["mAP"] if c["mAP"] > 0 else None,
                               part_distances=parts, queries_unchanged=unchanged))
    return dict(models=clean, points=points)


def explain_pair(models: Sequence[ReidModel], query: Split, gallery: Split, query_index: int,
                 gallery_index: int, perturbation: Optional[Tuple[str, float]] = None,
                 seed: int = 0, rect_fill=MEAN_FILL) -> dict:
    """Per-part cosine distances 1 - cos(q_k, g_k) of one query-gallery pair for every
    part-based model (clean query, and perturbed when ``perturbation = (name, amount)``).

    Returns:
        dict: ``query``/``gallery`` (path, pid, camid), ``images`` (the RGB crops: query,
        perturbed query or None, gallery) and per model name ``clean`` (K,), ``perturbed``
        (K,) or None, ``distance``: the model's own distance (its metric) clean / perturbed.
    """
    for i, n, what in ((query_index, len(query), "query"),
                       (gallery_index, len(gallery), "gallery")):
        if not 0 <= i < n:
            raise IndexError(f"{what} index {i} out of range: the {what} set has {n} images")
    parts_models = [m for m in models if m.num_parts]
    if not parts_models:
        raise ValueError("--explain needs a part-based model (MPN family or PCB); got "
                         + ", ".join(m.name for m in models))
    q_img, g_img = read_rgb(query.paths[query_index]), read_rgb(gallery.paths[gallery_index])
    p_img = None
    if perturbation is not None:
        name, level = perturbation
        p = perturbations(rect_fill)[name]
        p_img = perturbed_queries(p, level, [q_img], query, _Occluders(gallery, seed), seed,
                                  [query_index])[0]
    out = dict(query=dict(index=query_index, path=query.paths[query_index],
                          pid=int(query.pids[query_index]), camid=int(query.camids[query_index])),
               gallery=dict(index=gallery_index, path=gallery.paths[gallery_index],
                            pid=int(gallery.pids[gallery_index]),
                            camid=int(gallery.camids[gallery_index])),
               perturbation=list(perturbation) if perturbation else None,
               images=(q_img, p_img, g_img), models={})
    for m in parts_models:
        crops = [q_img, g_img] + ([p_img] if p_img is not None else [])
        f = m.features(crops)                                         # (2 or 3, K*D)
        qf, gf = f[:1], f[1:2]
        row = dict(clean=part_cosine_distances(qf, gf, m.num_parts)[0].tolist(), perturbed=None)
        dist = [_model_distance(m, qf, gf)]
        if p_img is not None:
            row["perturbed"] = part_cosine_distances(f[2:], gf, m.num_parts)[0].tolist()
            dist.append(_model_distance(m, f[2:], gf))
        row["distance"] = dist
        out["models"][m.name] = row
    return out


def _model_distance(m: ReidModel, qf, gf) -> float:
    from .distance import compute_distance_matrix
    if m.cfg.test.normalize_feature:
        qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
    return float(compute_distance_matrix(qf, gf, m.cfg.test.dist_metric)[0, 0])


def summary_markdown(results: dict, registry: Optional[Dict[str, Perturbation]] = None) -> str:
    """Table "mAP retained at 30% occlusion / 20% shift" (retained = perturbed mAP / clean mAP)
    over the summary amounts of each swept perturbation (``Perturbation.summary_levels``)."""
    registry = registry or perturbations()
    points = results["points"]
    cols = []
    for name in dict.fromkeys(p["perturbation"] for p in points):
        swept = {p["level"] for p in points if p["perturbation"] == name}
        for lv in registry[name].summary_levels:
            match = [s for s in swept if np.isclose(s, lv)]
            if match:
                cols.append((name, match[0]))
    header = ["model", "clean Rank-1 / mAP"] + [f"{n} {registry[n].label(lv)}" for n, lv in cols]
    lines = ["mAP retained (perturbed query mAP / clean mAP; clean gallery) at 30% occlusion / "
             "20% shift and the other summary amounts:", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for name, c in results["models"].items():
        cells = []
        for pert, lv in cols:
            hit = [p for p in points if p["model"] == name and p["perturbation"] == pert
                   and p["level"] == lv]
            r = hit[0]["mAP_retained"] if hit else None
            cells.append(f"{r:.0%} ({100 * hit[0]['mAP']:.1f})" if r is not None else "-")
        lines.append("| " + " | ".join([name, f"{100 * c['rank1']:.1f} / {100 * c['mAP']:.1f}"]
                                       + cells) + " |")
    lines += ["", "Cells: mAP retained (perturbed mAP in %)."]
    return "\n".join(lines) + "\n"
