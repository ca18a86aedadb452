"""Validation at the boundary: every check a training config must pass, run once, before
any run exists (a bad value fails in seconds and leaves nothing behind).

A recipe calls :func:`check_training_config` once; each check it runs reads only the
config slice it names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from tsp_mlflow.data.checks import expand_root
from tsp_mlflow.errors import UserInputError
from tsp_mlflow.tracking.background import writes_in_background
from tsp_mlflow.training.distributed import check_batch_size
from tsp_mlflow.training.finetune import is_learning_rate
from tsp_mlflow.training.monitoring import MonitoringSettings
from tsp_mlflow.training.progress import progress_mode
from tsp_mlflow.training.runtime import resolve_device


def check_training_config(cfg: DictConfig, encoder_modalities: Sequence[str]) -> None:
    """Every setting a training run reads, checked: trainer, seed, optimizer and scheduler,
    tracking and monitoring switches, the data root, the arguments of the encoders built
    from scratch (``encoder_modalities``) and the device."""
    check_trainer(cfg.trainer)
    check_seed(cfg.get("seed", 0))  # the run's seed (the pipeline's configs set their own)
    writes_in_background(cfg.tracking.background_writes, "cpu")  # a valid value
    MonitoringSettings.from_config(cfg.get("monitoring"))
    progress_mode()  # a bad TSP_PROGRESS fails here, not inside an open run
    check_optimizer(cfg.optim, cfg.scheduler)
    check_batch_size(cfg.trainer.batch_size)
    check_data_root(cfg.data)
    check_encoder_args(cfg.model.encoders, encoder_modalities)
    resolve_device(cfg.runtime.device)


def check_trainer(trainer: DictConfig) -> None:
    """``trainer.*``: epochs, batch size, loader workers, checkpointing, the skip switches."""
    epochs = trainer.epochs
    if not _is_int(epochs) or epochs <= 0:
        raise UserInputError(
            f"epochs must be a positive integer, got {epochs!r}; e.g. -P epochs=10"
        )
    for key, minimum, maximum, example in (
        ("batch_size", 1, 2**20, "trainer.batch_size=32"),
        ("num_workers", 0, 256, "trainer.num_workers=2"),
    ):
        value = trainer[key]
        if not _is_int(value) or not minimum <= value <= maximum:
            raise UserInputError(
                f"trainer.{key} must be an integer in [{minimum}, {maximum}], got {value!r}; "
                f"e.g. {example}"
            )
    every = trainer.checkpoint.every_n_epochs
    if not _is_int(every) or every < 0:
        raise UserInputError(
            f"trainer.checkpoint.every_n_epochs must be an integer >= 0 (0: no checkpoints), "
            f"got {every!r}"
        )
    interval = trainer.checkpoint.min_interval_s
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval >= 0:
        raise UserInputError(
            "trainer.checkpoint.min_interval_s must be a number of seconds >= 0 (0: every "
            f"epoch), got {interval!r}"
        )
    for key in ("skip_train", "skip_test"):
        if not isinstance(trainer.get(key, False), bool):
            raise UserInputError(f"trainer.{key} must be true or false, got {trainer[key]!r}")


def check_seed(seed: object) -> None:
    if not _is_int(seed) or not 0 <= seed < 2**32:  # type: ignore[operator]
        raise UserInputError(f"seed must be an integer in [0, 2^32), got {seed!r}; e.g. -P seed=0")


def check_optimizer(optim: DictConfig, scheduler: DictConfig) -> None:
    """Build the configured optimizer and scheduler on a stand-in parameter, so that
    torch's own argument checks (and ours: a learning rate must be positive) run before
    any run exists rather than inside one."""
    lr = optim.get("lr")  # per-encoder rates (finetune.lr) are checked by finetune
    if "lr" in optim and not is_learning_rate(lr):
        raise UserInputError(
            f"optim.lr must be a positive, finite number, got {lr!r}; e.g. optim.lr=1e-3"
        )
    stand_in = [torch.nn.Parameter(torch.zeros(1))]
    with config_errors("optim"):
        optimizer = instantiate(optim)(stand_in)
    with config_errors("scheduler"):
        instantiate(scheduler)(optimizer)


def check_data_root(data: DictConfig) -> None:
    """A dataset's root must exist before any run starts; its files are checked on load."""
    if "root" in data:
        expand_root(data.root, data.name)


def check_encoder_args(encoders: DictConfig, modalities: Sequence[str]) -> None:
    """Let encoder classes vet their arguments before any run exists (``check_args``):
    a text encoder pointed at a hub id fails here, in seconds."""
    for m in modalities:
        node = encoders[m]
        check = getattr(get_object(node._target_), "check_args", None)
        if check is not None:
            try:
                check(**{k: v for k, v in node.items() if not str(k).startswith("_")})
            except UserInputError as err:
                raise UserInputError(f"model.encoders.{m}: {err}") from None


@contextlib.contextmanager
def config_errors(group: str) -> Iterator[None]:
    """A constructor's own argument error, as a one-line error naming the config group."""
    try:
        yield
    except (InstantiationException, TypeError, ValueError) as err:
        cause = (err.__cause__ if isinstance(err, InstantiationException) else None) or err
        first = (str(cause).splitlines() or [type(cause).__name__])[0]
        raise UserInputError(
            f"{group}: {first}; fix the values under {group}.* (conf/{group}/)"
        ) from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
