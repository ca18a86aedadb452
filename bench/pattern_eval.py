"""Pattern evaluation: every modality pattern from one pass vs one pass per pattern.

With M modalities there are 2^M - 1 patterns (audio, image, audio-image, ...). Late fusion
lets ``evaluate`` run the encoders once per batch and re-mask the embeddings for each
pattern. The naive way re-runs the data through the whole model once per pattern. Both
give the same metrics (checked here); the ratio is naive time / ours.

Two set-ups: avdigits' test split through its real DataLoader (M = 2, 3 patterns), and
M = 3 synthetic 28x28 modalities from pre-collated batches (7 patterns, compute only).

    python -m bench.pattern_eval                 # 10 rounds per arm
    python -m bench.pattern_eval --quick
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from bench.harness import Result, Table, arguments, avdigits, interleave, ratio, save
from tsp_mlflow.data.batch import Batch, all_patterns, pattern_mask, pattern_name
from tsp_mlflow.models.encoders import SmallCNN
from tsp_mlflow.models.fusion import ConcatFusion
from tsp_mlflow.models.heads import MLPHead
from tsp_mlflow.models.late_fusion import LateFusionModel
from tsp_mlflow.training.loop import evaluate, to_device
from tsp_mlflow.training.tasks import MulticlassTask, Task


@torch.no_grad()
def per_pattern(
    model: LateFusionModel,
    loader: Iterable[Batch],
    patterns: Sequence[Sequence[str]],
    device: torch.device,
    task: Task,
) -> dict[str, dict[str, float]]:
    """The naive evaluator: the whole model over the whole split, once per pattern."""
    model.eval()
    out = {}
    for pattern in patterns:
        logits, targets = [], []
        for batch in loader:
            batch = to_device(batch, device)
            mask = pattern_mask(pattern, model.modalities, len(batch["present"])).to(device)
            logits.append(model(batch["inputs"], mask).float().cpu())
            targets.append(task.target(batch["target"]).cpu())
        out[pattern_name(pattern, model.modalities)] = task.metrics(
            torch.cat(logits), torch.cat(targets)
        )
    return out


def timed(fn, *args) -> tuple[float, dict[str, dict[str, float]]]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    metrics = fn(*args)
    return time.perf_counter() - start, metrics


def compare(
    name: str,
    model: LateFusionModel,
    loader: Iterable[Batch],
    device: torch.device,
    task: Task,
    rounds: int,
    result: Result,
) -> list[object]:
    patterns = all_patterns(model.modalities)
    found: dict[str, dict[str, dict[str, float]]] = {}

    def arm(label: str, fn) -> list[float]:  # type: ignore[no-untyped-def]
        seconds, found[label] = timed(fn, model, loader, patterns, device, task)
        return [seconds]

    samples = interleave(
        {
            "one pass": lambda: arm("one pass", evaluate),
            "per pattern": lambda: arm("per pattern", per_pattern),
        },
        rounds,
    )
    for pattern, metrics in found["per pattern"].items():  # the shortcut must be exact
        for key, value in metrics.items():
            assert np.isclose(found["one pass"][pattern][key], value, rtol=1e-4, atol=1e-6), (
                pattern,
                key,
                found["one pass"][pattern][key],
                value,
            )
    result.add_ratio(
        ratio(
            f"{name}: time per pattern pass / one pass", samples["per pattern"], samples["one pass"]
        )
    )
    return [
        name,
        len(patterns),
        float(np.median(samples["one pass"])),
        float(np.median(samples["per pattern"])),
    ]


def synthetic(modalities: Sequence[str], rows: int, batch_size: int) -> list[Batch]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for start in range(0, rows, batch_size):
        n = min(batch_size, rows - start)
        batches.append(
            {
                "inputs": {m: torch.randn(n, 1, 28, 28, generator=generator) for m in modalities},
                "present": torch.ones(n, len(modalities), dtype=torch.bool),
                "target": torch.randint(0, 10, (n,), generator=generator),
            }
        )
    return batches


def main() -> None:
    args = arguments(__doc__.split("\n\n")[0]).parse_args()
    rounds = 2 if args.quick else 10
    result = Result("pattern_eval", "Pattern evaluation", quick=args.quick)
    setup = avdigits(quick=args.quick)
    loader = setup.loaders()["test"]
    rows = [
        compare(
            "avdigits test, M=2", setup.model(), loader, setup.device, setup.task, rounds, result
        )
    ]

    modalities = ("a", "b", "c")
    torch.manual_seed(0)
    encoders = {m: SmallCNN(out_dim=64) for m in modalities}
    fusion = ConcatFusion({m: 64 for m in modalities})
    model = LateFusionModel(encoders, fusion, MLPHead(fusion.out_dim, 10)).to(setup.device)
    batches = synthetic(modalities, rows=128 if args.quick else 1024, batch_size=64)
    rows.append(
        compare(
            "synthetic, M=3",
            model,
            batches,
            setup.device,
            MulticlassTask(num_classes=10),
            rounds,
            result,
        )
    )
    result.add_table(
        Table(
            f"median seconds to evaluate every pattern ({rounds} rounds per arm)",
            ["set-up", "patterns", "one pass (s)", "one pass per pattern (s)"],
            rows,
        )
    )
    save(result, args.out)


if __name__ == "__main__":
    main()
