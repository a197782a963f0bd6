"""From a trained model to answers: features of any images, a sharded on-disk feature store,
and faiss gallery search.

* :class:`FeatureExtractor` - (N, K*D) L2-normalised features, the evaluator's test-time path,
  from a config + checkpoint, an ONNX graph or a model object.
* :mod:`.feature_store` - fixed-size, resumable ``.npy`` + CSV shards with the model's hashes.
* :mod:`.gallery_index` - faiss indexes (exact / IVF-PQ / HNSW) built shard by shard, top-k
  search, and the merge of sharded indexes at query time.
"""
from .feature_extractor import Extraction, FeatureExtractor, UnreadableImageError

__all__ = ["FeatureExtractor", "Extraction", "UnreadableImageError"]
