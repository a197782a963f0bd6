"""Coarse priors of body part locations (Sec. 3.2): pipeline, tool adapters, cache."""
from .cache import (
                       PriorCache,
                       PriorCacheWriter,
                       PriorRecord,
                       StalePriorCacheError,
                       dataset_fingerprint,
)
from .pipeline import (
                       CoarsePrior,
                       PriorConfig,
                       coarse_prior_from_mask,
                       compute_coarse_prior,
                       evidence_from_keypoints,
                       evidence_from_parsing,
                       feature_size_for,
                       union_person_mask,
)

__all__ = ["CoarsePrior", "PriorConfig", "coarse_prior_from_mask", "compute_coarse_prior",
           "evidence_from_parsing", "evidence_from_keypoints", "feature_size_for",
           "union_person_mask", "PriorCache", "PriorCacheWriter", "PriorRecord",
           "StalePriorCacheError", "dataset_fingerprint"]
