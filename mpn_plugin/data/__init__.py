"""Data: prior-aware torchreid datasets, joint transforms, the synthetic pedestrian generator."""
from .prior_datasets import PRIOR_DATASETS, register_prior_datasets
from .prior_mixin import PriorOptions

__all__ = ["PRIOR_DATASETS", "PriorOptions", "register_prior_datasets"]
