"""Registration of mpn_plugin's models, datasets and engines with torchreid (at import)."""
_DONE = False


def register() -> None:
    """Register models with torchreid's factory, datasets with ``register_image_dataset`` and
    engines in :data:`mpn_plugin.engine.ENGINES`. Idempotent."""
    global _DONE
    if _DONE:
        return
    from . import engine  # noqa: F401  (fills engine.ENGINES)
    from .data.prior_datasets import register_prior_datasets
    from .data.prior_mixin import PriorOptions
    from .models import TORCHREID_STRIDE, register_models
    register_models()
    # default options, so that torchreid's own data managers get prior items at once: the
    # stride of the default backbones (a training run re-registers with its model's options)
    register_prior_datasets(PriorOptions(feature_stride=TORCHREID_STRIDE))
    _DONE = True
