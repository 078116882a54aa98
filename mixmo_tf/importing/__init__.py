"""The MixMo authors' released checkpoints, imported as runs of this package.

- `torch_format`: reading `torch.save` files without PyTorch, running nothing in them;
- `authors_checkpoint`: the authors' checkpoints, read and checked (no TensorFlow);
- `pytorch_import`: those checkpoints as a `MixMoModel` and a run folder;
- `released`: the table of the authors' released checkpoints, one row per file (no TensorFlow);
- `downloads`: a row's file (or a URL's) downloaded, checked and cached (no TensorFlow).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["authors_checkpoint", "downloads", "pytorch_import", "released", "torch_format"],
    submod_attrs={"pytorch_import": ["load_pytorch_checkpoint"]},
)
