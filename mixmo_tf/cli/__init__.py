"""The command line of `main.py` and the `mixmo-tf` console script.

- `flags`: one absl flag per Config field, grouped `--help` (imports no TensorFlow);
- `app`: flags -> Config -> the mode's handler; TensorFlow starts only after the flags are
  valid;
- `modes`: one handler per `--mode` (train, evaluate, export, predict), each returning its
  exit code;
- `exit_codes`: what each exit code means, and the one-line error.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["app", "exit_codes", "flags", "modes"],
    submod_attrs={"app": ["main", "run"]},
)
