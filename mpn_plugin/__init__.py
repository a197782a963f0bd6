"""mpn_plugin: MPN (Multi-task Part-aware Network, Ding et al., TPAMI 2020) for torchreid.

Importing the package registers its pieces with torchreid (model factory, image datasets)
and fills the engine registry; nothing else runs at import.

Registration happens only where torch and torchreid are installed (:data:`TORCH_AVAILABLE`).
The prior generator's environment (``.venv-mediapipe``, made by
``third_party/mediapipe_env.sh``) has neither: there the package imports without registering,
and only its torch-free modules can be used (:mod:`mpn_plugin.priors` with its command
:mod:`mpn_plugin.cli.generate_priors`, and :mod:`mpn_plugin.progress`).

Examples::

    >>> import mpn_plugin
    >>> from mpn_plugin.compat import models
    >>> model = models.build_model('mpn', num_classes=751, loss='triplet', pretrained=False)
    >>> extractor = mpn_plugin.FeatureExtractor(
    ...     config_file='configs/mpn_synthetic.yaml',
    ...     checkpoint='log/mpn_synthetic/model/model.pth.tar-12')
"""
from .environment import TORCH_AVAILABLE

__version__ = "0.1.0"

if TORCH_AVAILABLE:
    from . import compat  # noqa: F401  (resolves torchreid's layout first)
    from .registry import register

    register()

    from .inference import FeatureExtractor  # noqa: F401  (torchreid-style feature extraction)
