"""mpn_plugin: MPN (Multi-task Part-aware Network, Ding et al., TPAMI 2020) for torchreid.

Importing the package registers its pieces with torchreid (model factory, image datasets)
and fills the engine registry; nothing else runs at import.

Examples::

    >>> import mpn_plugin
    >>> from mpn_plugin.compat import models
    >>> model = models.build_model('mpn', num_classes=751, loss='triplet', pretrained=False)
    >>> extractor = mpn_plugin.FeatureExtractor(config_file='configs/mpn_synthetic.yaml',
    ...                                         checkpoint='log/mpn_synthetic/model/model.pth.tar-12')
"""
from . import compat  # noqa: F401  (resolves torchreid's layout first)
from .registry import register

__version__ = "0.1.0"

register()

from .inference import FeatureExtractor  # noqa: E402  (torchreid-style feature extraction)
