"""A sweep's search space, written in Hydra's own sweep syntax and sampled by Optuna.

The syntax is the one Hydra users know from ``-m`` and from the Optuna sweeper plugin::

    optim.lr: tag(log, interval(1e-4, 1e-2))    # float, log-uniform
    trainer.batch_size: choice(16, 32, 64)      # categorical
    model.head.dropout: interval(0.0, 0.5)      # float, uniform
    model.encoders.audio.width: range(8, 33, 8)  # int with a step (Hydra's stop is exclusive)
    model/fusion: choice(concat, sum, gated)    # a config group option
    trainer.epochs: 5                           # not a sweep: fixed for every trial

Hydra's grammar parses every value (no home-made parser); this module maps the result to
Optuna distributions and a sampled trial back to Hydra overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from tsp_mlflow.config import quote
from tsp_mlflow.errors import UserInputError

SYNTAX_HINT = (
    "write choice(a, b, ...), interval(low, high), tag(log, interval(low, high)), "
    "tag(int, interval(low, high)) or range(start, stop, step)"
)


@dataclass(frozen=True)
class SearchSpace:
    """Distributions to sample, per Hydra key, and overrides every trial shares."""

    distributions: dict[str, BaseDistribution]
    fixed: tuple[str, ...] = ()
    expressions: tuple[tuple[str, str], ...] = ()  # (key, the sweep text as written)

    def is_group(self, key: str) -> bool:
        """``model/fusion`` chooses a config group option; ``optim.lr`` sets a value."""
        return "/" in key

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask ``trial`` for a value of every dimension (in declaration order)."""
        return {key: suggest(trial, key, dist) for key, dist in self.distributions.items()}

    def overrides(self, values: Mapping[str, Any]) -> list[str]:
        """Hydra overrides that set ``values`` (plus the fixed ones)."""
        return [*self.fixed, *(f"{k}={self.format(k, v)}" for k, v in values.items())]

    def format(self, key: str, value: Any) -> str:
        if self.is_group(key):
            return str(value)  # an option name, e.g. sum
        if isinstance(value, bool) or value is None:
            return {True: "true", False: "false", None: "null"}[value]
        if isinstance(value, int | float):
            return repr(value)
        return quote(str(value))

    def corners(self) -> list[dict[str, Any]]:
        """Values that together touch every bound and every choice, for validation: each
        categorical choice once, and every numeric dimension at its low and its high."""
        lows = {k: _ends(d)[0] for k, d in self.distributions.items()}
        highs = {k: _ends(d)[1] for k, d in self.distributions.items()}
        out = [lows, highs]
        for key, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                out += [{**lows, key: choice} for choice in dist.choices[1:-1]]
        return out

    def grid(self) -> dict[str, list[Any]]:
        """The space as a grid for ``GridSampler``; every dimension must be a list."""
        grid: dict[str, list[Any]] = {}
        for key, dist in self.distributions.items():
            continuous = isinstance(dist, FloatDistribution) and dist.step is None
            if continuous or (isinstance(dist, IntDistribution) and dist.log):
                raise UserInputError(
                    f"sweep.params.{key}: a grid sampler needs every dimension as a list of "
                    f"values; write choice(...) or range(...) instead of an interval"
                )
            grid[key] = _bounds(dist)
        return grid


def parse_search_space(params: Mapping[str, Any]) -> SearchSpace:
    """``{key: expression}`` (``sweep.params``) as a :class:`SearchSpace`."""
    if not params:
        raise UserInputError(
            "sweep.params is empty: name at least one dimension, e.g. "
            "sweep.params={optim.lr: 'tag(log, interval(1e-4, 1e-2))'}"
        )
    parser = OverridesParser.create()
    distributions: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    expressions: list[tuple[str, str]] = []
    for key, expression in params.items():
        text = f"{key}={expression}"
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as err:
            raise UserInputError(
                f"sweep.params.{key}={expression!r}: {err}; {SYNTAX_HINT}"
            ) from None
        if override.is_sweep_override():
            distributions[str(key)] = to_distribution(override, where=f"sweep.params.{key}")
            expressions.append((str(key), str(expression)))
        else:
            fixed.append(text)
    if not distributions:
        raise UserInputError(
            f"sweep.params has no dimension to search, only fixed values ({', '.join(fixed)}); "
            f"{SYNTAX_HINT}"
        )
    return SearchSpace(distributions, tuple(fixed), tuple(expressions))


def to_distribution(override: Override, *, where: str) -> BaseDistribution:
    """One parsed Hydra sweep as an Optuna distribution."""
    value = override.value()
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_iterator())
        odd = [c for c in choices if c is not None and not isinstance(c, bool | int | float | str)]
        if odd:
            raise UserInputError(
                f"{where}: choices must be numbers, strings, booleans or null, got {odd}; "
                "to search over lists or dicts, make each one a config option and choose "
                "among the options (e.g. model/fusion)"
            )
        if len(set(map(repr, choices))) != len(choices) or not choices:
            raise UserInputError(f"{where}: choice(...) needs distinct values, got {choices}")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise UserInputError(f"{where}: {override.input_line} is empty (stop is exclusive)")
        if value.shuffle:
            return CategoricalDistribution(values)
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if low is None or high is None or not low < high:
            raise UserInputError(f"{where}: interval needs low < high, got ({low}, {high})")
        log = "log" in value.tags
        if log and low <= 0:
            raise UserInputError(f"{where}: a log interval needs a positive low, got {low}")
        if "int" in value.tags:
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise UserInputError(f"{where}: {override.input_line} is not a searchable sweep; {SYNTAX_HINT}")


def suggest(trial: optuna.Trial, key: str, dist: BaseDistribution) -> Any:
    """Optuna's public ``suggest_*`` call for ``dist``."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


def _ends(dist: BaseDistribution) -> tuple[Any, Any]:
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[0], dist.choices[-1]
    assert isinstance(dist, IntDistribution | FloatDistribution)
    high = dist.high
    if isinstance(dist, IntDistribution) and not dist.log:  # the last value on the step
        high = dist.low + (dist.high - dist.low) // dist.step * dist.step
    return dist.low, high


def _bounds(dist: BaseDistribution) -> list[Any]:
    """A categorical's choices, an int range's values, or a float's (low, high)."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        if dist.log:
            return [dist.low, dist.high]
        return list(range(dist.low, dist.high + 1, dist.step))
    assert isinstance(dist, FloatDistribution)
    if dist.step is not None:
        n = round((dist.high - dist.low) / dist.step)
        return [dist.low + i * dist.step for i in range(n + 1)]
    return [dist.low, dist.high]
