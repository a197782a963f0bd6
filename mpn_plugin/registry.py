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
    from .models import register_models
    register_models()
    register_prior_datasets()
    _DONE = True
