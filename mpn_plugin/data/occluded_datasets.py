"""Occluded and partial person ReID benchmarks as torchreid image datasets (issue 16).

Registered, when the package is imported, by :mod:`mpn_plugin.data.prior_datasets` (folders
relative to ``data.root``):

* ``occluded_duke``: ``Occluded_Duke/{bounding_box_train,query,bounding_box_test}/*.jpg``
  (camid = camera - 1), and ``occluded_duke_prior`` (MPN's coarse priors on its train images,
  with the options of every other prior-aware dataset; cache ``priors_*.npz`` in the
  ``Occluded_Duke`` folder, made by ``tools/generate_priors.py --dataset occluded_duke_prior``);
* ``occluded_reid`` (test-only): query ``Occluded_REID/occluded_body_images/<pid>/*.tif``
  (camid 0), gallery ``Occluded_REID/whole_body_images/<pid>/*.tif`` (camid 1);
* ``partial_reid`` (test-only): query ``Partial_REID/partial_body_images/*.jpg`` (camid 0),
  gallery ``Partial_REID/whole_body_images/*.jpg`` (camid 1).

Layouts and conventions, as the field uses them (checked against the sources below):

* **Occluded-Duke** (Miao et al., "Pose-Guided Feature Alignment for Occluded Person
  Re-Identification", ICCV 2019; github.com/lightas/Occluded-DukeMTMC-Dataset): a re-split of
  DukeMTMC-reID whose queries are all occluded; ``convert_duke_to_occduke.py`` writes
  ``Occluded_Duke/{bounding_box_train,query,bounding_box_test}`` in the DukeMTMC-reID layout
  (``0001_c2_f0046182.jpg``: pid, camera 1-8, frame), so torchreid's DukeMTMC-reID parser is
  reused (camid = camera - 1, train pids relabelled 0..N-1). 702 / 519 / 1,110 identities,
  15,618 / 2,210 / 17,661 images (train / query / gallery). Folder name ``Occluded_Duke`` as in
  bpbreid, KPR (VlSomers/bpbreid, VlSomers/keypoint_promptable_reidentification)
  and PVPM (hh23333/PVPM).
* **Occluded-REID** (Zhuo et al., "Occluded Person Re-identification", ICME 2018;
  github.com/tinajia2012/ICME2018_Occluded-Person-Reidentification_datasets): 200 identities,
  5 occluded + 5 whole-body images each, one folder per identity, ``.tif`` files whose name
  starts with the pid (``<pid>_<n>.tif``). Test-only: PVPM, bpbreid and KPR train on
  Market-1501 and use query = occluded (camid 0), gallery = whole body (camid 1).
* **Partial-REID** (Zheng et al., "Partial Person Re-identification", ICCV 2015): 60
  identities, 5 partial + 5 whole-body images each, flat folders of ``<pid>_<n>.jpg``. Query =
  ``partial_body_images`` (camid 0), gallery = ``whole_body_images`` (camid 1), as in PVPM,
  bpbreid and fast-reid (the release also has ``occluded_body_images``, not read here; KPR's
  copy queries those instead). Folder ``Partial_REID`` as in bpbreid, KPR and fast-reid.

Camera ids matter: torchreid's evaluation drops gallery images with the query's pid *and*
camid, so giving both sides of a test-only set the same camid would silently remove every true
match. Each folder is also found under the names PVPM uses
(``ICME2018_Occluded-Person-Reidentification_datasets/Occluded_{Duke,REID}``,
``Partial-REID_Dataset``).

Test-only sets have no train split: as targets (``data.sources [market1501_prior]``,
``data.targets [occluded_reid]``) they build query/gallery loaders as usual; as a source
(mode ``train``) they raise, unless ``data.combineall`` makes query + gallery the train split
(torchreid's meaning of combineall). They have no ``*_prior`` variant: MPN needs priors only
for training items (:class:`~mpn_plugin.data.prior_mixin.PriorAwareMixin` returns plain items
in query/gallery mode), so the plain name is the target.
"""
from __future__ import annotations

import glob
import os.path as osp
import re
from typing import List, Sequence, Tuple

from .. import compat

ICME = "ICME2018_Occluded-Person-Reidentification_datasets"
DOCS = "docs/occluded_datasets.md"
QUERY_CAMID, GALLERY_CAMID = 0, 1  # test-only sets: one "camera" per side (PVPM, bpbreid, KPR)
_PID = re.compile(r"(\d+)_")


def dataset_folder(root: str, name: str, candidates: Sequence[str], required: Sequence[str],
                   source: str) -> str:
    """The first of ``candidates`` (folders under ``root``) that exists, after checking it holds
    the ``required`` sub-folders.

    Raises:
        FileNotFoundError: naming the folder expected, the sub-folders and where to get it.
    """
    root = osp.abspath(osp.expanduser(root))
    found = next((osp.join(root, c) for c in candidates if osp.isdir(osp.join(root, c))), None)
    layout = ", ".join(f"{d}/" for d in required)
    if found is None:
        also = f" (also looked for {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
        raise FileNotFoundError(
            f"dataset '{name}' not found: the folder '{osp.join(root, candidates[0])}' does not "
            f"exist{also}. Get it from {source}; put it there so that it holds {layout} "
            f"(data.root is its parent), or change data.root / --root; see {DOCS}")
    missing = [d for d in required if not osp.isdir(osp.join(found, d))]
    if missing:
        raise FileNotFoundError(
            f"dataset '{name}' in '{found}' has no {', '.join(d + '/' for d in missing)} folder "
            f"(expected {layout}). Get it from {source}; see {DOCS}")
    return found


class OccludedDuke(compat.submodule("data.datasets.image.dukemtmcreid").DukeMTMCreID):
    """Occluded-Duke (Miao et al., ICCV 2019): DukeMTMC-reID re-split, all queries occluded.

    Reads ``<root>/Occluded_Duke/{bounding_box_train,query,bounding_box_test}/*.jpg`` with
    torchreid's DukeMTMC-reID parser (see the module docstring for the sources).
    """
    dataset_dir = "Occluded_Duke"
    dataset_url = None
    folders = ("Occluded_Duke", f"{ICME}/Occluded_Duke")
    splits = ("bounding_box_train", "query", "bounding_box_test")
    source = ("github.com/lightas/Occluded-DukeMTMC-Dataset (run its convert_duke_to_occduke.py "
              "on DukeMTMC-reID.zip)")

    def __init__(self, root: str = "", **kwargs):
        self.root = osp.abspath(osp.expanduser(root))
        self.dataset_dir = dataset_folder(root, "occluded_duke", self.folders, self.splits,
                                          self.source)
        self.train_dir, self.query_dir, self.gallery_dir = (
            osp.join(self.dataset_dir, s) for s in self.splits)
        train, query, gallery = (
            sorted(self.process_dir(d, relabel=d == self.train_dir))
            for d in (self.train_dir, self.query_dir, self.gallery_dir))
        for d, items in zip(self.splits, (train, query, gallery)):
            if not items:
                raise ValueError(f"dataset 'occluded_duke': no .jpg images in "
                                 f"'{osp.join(self.dataset_dir, d)}'; get them from {self.source}")
        compat.ImageDataset.__init__(self, train, query, gallery, **kwargs)


class QueryGalleryDataset(compat.ImageDataset):
    """A test-only benchmark: query and gallery folders of the same identities, no train split.

    Query items get camid :data:`QUERY_CAMID` (0), gallery items :data:`GALLERY_CAMID` (1); the
    pid is the number before the first ``_`` of the file name. Subclasses set the class
    attributes below.
    """
    name = ""                    # registered name (for messages)
    folders: Tuple[str, ...] = ()  # candidate dataset folders under root, preferred first
    query_folder = gallery_folder = ""
    pattern = "*"                # file pattern inside a split folder, without extension
    extensions: Tuple[str, ...] = (".jpg",)  # the first one with files is read
    source = ""

    def __init__(self, root: str = "", combineall: bool = False, verbose: bool = True, **kwargs):
        self.root = osp.abspath(osp.expanduser(root))
        self.dataset_dir = dataset_folder(root, self.name, self.folders,
                                          (self.query_folder, self.gallery_folder), self.source)
        self.query_dir = osp.join(self.dataset_dir, self.query_folder)
        self.gallery_dir = osp.join(self.dataset_dir, self.gallery_folder)
        query = self.read_split(self.query_dir, QUERY_CAMID)
        gallery = self.read_split(self.gallery_dir, GALLERY_CAMID)
        # torchreid's Dataset.__init__ reads train[0] (IndexError on []): pass a placeholder,
        # then empty the train split
        super().__init__(query[:1], query, gallery, combineall=False, verbose=False, **kwargs)
        self.train = []
        self.combineall = combineall
        if combineall:
            self.num_train_pids = 0
            self.combine_all()  # torchreid's meaning: train on query + gallery
        self.num_train_pids, self.num_train_cams, self.num_datasets = (
            self.get_num_pids(self.train), self.get_num_cams(self.train),
            self.get_num_datasets(self.train))
        if self.mode == "train":
            if not self.train:
                raise ValueError(
                    f"dataset '{self.name}' is test-only (no training images): use it as a "
                    f"target (data.targets / -t {self.name}) and train on another dataset, e.g. "
                    f"data.sources [market1501_prior]; see {DOCS}")
            self.data = self.train
        if verbose:
            self.show_summary()

    def read_split(self, folder: str, camid: int) -> List[Tuple[str, int, int]]:
        """``(path, pid, camid)`` of the images of ``folder``, sorted by path."""
        paths: List[str] = []
        for ext in self.extensions:
            paths = sorted(glob.glob(osp.join(folder, self.pattern + ext)))
            if paths:
                break
        if not paths:
            raise ValueError(
                f"dataset '{self.name}': no {' or '.join(self.extensions)} images in '{folder}' "
                f"(expected {osp.join(folder, self.pattern + self.extensions[0])}); get the "
                f"dataset from {self.source}")
        items = []
        for p in paths:
            m = _PID.match(osp.basename(p))
            if m is None:
                raise ValueError(f"dataset '{self.name}': cannot read the pid of '{p}' (expected "
                                 f"'<pid>_<n>{self.extensions[0]}', e.g. 001_01"
                                 f"{self.extensions[0]})")
            items.append((p, int(m.group(1)), camid))
        return items


class OccludedREID(QueryGalleryDataset):
    """Occluded-REID (Zhuo et al., ICME 2018): 200 identities, 5 occluded (query) and 5
    whole-body (gallery) images each, ``<pid>/<pid>_<n>.tif`` (PVPM's converted copy: ``.jpg``)."""
    name = "occluded_reid"
    dataset_dir = "Occluded_REID"
    folders = ("Occluded_REID", f"{ICME}/Occluded_REID")
    query_folder, gallery_folder = "occluded_body_images", "whole_body_images"
    pattern = osp.join("*", "*")
    extensions = (".tif", ".jpg")
    source = "github.com/tinajia2012/ICME2018_Occluded-Person-Reidentification_datasets"


class PartialREID(QueryGalleryDataset):
    """Partial-REID (Zheng et al., ICCV 2015): 60 identities, 5 partial (query) and 5
    whole-body (gallery) images each, ``<pid>_<n>.jpg``."""
    name = "partial_reid"
    dataset_dir = "Partial_REID"
    folders = ("Partial_REID", "Partial-REID_Dataset", "PartialREID")
    query_folder, gallery_folder = "partial_body_images", "whole_body_images"
    source = ("the authors of 'Partial Person Re-identification' (ICCV 2015), e.g. the link in "
              "github.com/hh23333/PVPM's README")


OCCLUDED_DATASETS = {"occluded_duke": OccludedDuke, "occluded_reid": OccludedREID,
                     "partial_reid": PartialREID}

