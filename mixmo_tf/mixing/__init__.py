"""MixMo's mixing: sampling functions, deterministic arithmetic, the Keras mixing layer.

- `features`: feature mixing (docs/method.md §3, §4): Dirichlet ratios, cut boxes, masks,
  the cut-probability schedule, root-r loss weights, and the `FeatureMixing` layer;
- `inputs`: input-level MixUp / CutMix inside MixMo with the label correction and the
  pixel role swap (docs/method.md §6).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["features", "inputs"],
    submod_attrs={"features": ["FeatureMixing", "MixingParams"]},
)
