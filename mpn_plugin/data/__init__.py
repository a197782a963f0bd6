"""Data: prior-aware torchreid datasets, joint transforms, the synthetic pedestrian generator."""
from .prior_datasets import PRIOR_DATASETS, PriorOptions, register_prior_datasets

__all__ = ["PRIOR_DATASETS", "PriorOptions", "register_prior_datasets"]
