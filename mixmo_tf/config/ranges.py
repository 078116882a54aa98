"""The allowed range of a numeric setting, shown in `--help` and checked before anything is built.

Each numeric `Config` field carries its `Range` as field metadata (`Config.validate` checks them
all in one loop); the command line's own numbers (`--temperature`) use the same class. Imports
no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math

from mixmo_tf.config.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Range:
    """Numbers from `low` to `high`, each end included unless marked open.

    Attributes:
        low: the smallest allowed value (excluded if `low_open`).
        high: the largest allowed value (excluded if `high_open`).
        low_open: whether `low` itself is refused (e.g. a learning rate must be > 0).
        high_open: whether `high` itself is refused (e.g. a momentum must be < 1).
        why: what the range protects, said in the refusal; empty for the obvious ones.
    """

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{opening}{self.low}, {self.high}{closing}"

    def check(self, name: str, value: float) -> None:
        """Raises ConfigError naming `--name`, this range and `value` if it is outside."""
        if not isinstance(value, int) and not math.isfinite(value):  # nan, inf of any float type
            raise ConfigError(f"--{name} must be a finite number. Received: {name}={value}")
        if value not in self:
            reason = f" ({self.why})" if self.why else ""
            raise ConfigError(f"--{name} must be in {self}{reason}. Received: {name}={value}")


# Temperature of export and predict (not a Config field: they read a run). Fitted temperatures
# are about 1 to 3; a T above 100 flattens any trained model's probabilities to near uniform.
TEMPERATURE = Range(0.0, 100.0, low_open=True)
