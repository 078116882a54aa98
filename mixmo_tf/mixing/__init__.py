"""MixMo's mixing: sampling functions, deterministic arithmetic, the Keras mixing layer.

Written in `keras.ops`: the same functions run on TensorFlow, JAX and PyTorch, and import no
TensorFlow on the other two.

- `features`: feature mixing (docs/method.md §3, §4): Dirichlet ratios, cut boxes, masks,
  the cut-probability schedule, root-r loss weights, and the `FeatureMixing` layer;
- `inputs`: input-level MixUp / CutMix inside MixMo with the label correction and the
  pixel role swap (docs/method.md §6);
- `keyed_random`: the random numbers both draw, a function of a key such as (seed, step).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["features", "inputs", "keyed_random"],
    submod_attrs={"features": ["FeatureMixing", "MixingParams"]},
)
