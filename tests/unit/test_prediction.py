"""VICReg loss and the missing-embedding predictor: hand values, masking, gradients, learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tsp_mlflow.models.prediction import EmbeddingPredictor, vicreg_loss

DIMS = {"audio": 4, "image": 5, "text": 3}


def make(dims: dict[str, int] = DIMS, seed: int = 0, hidden: int = 16) -> EmbeddingPredictor:
    torch.manual_seed(seed)
    return EmbeddingPredictor(dims, hidden=hidden)


def feats_for(dims: dict[str, int], rows: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(rows, d, generator=g) for m, d in dims.items()}


def test_vicreg_terms_match_a_hand_computation() -> None:
    x = [[0.0, 0.0], [1.0, 2.0], [2.0, 1.0]]
    y = [[0.0, 0.0], [0.5, 0.0], [1.0, 0.5]]
    eps = 1e-4
    # invariance: mean of the 6 squared differences 0, 0, 0.25, 4, 1, 0.25
    invariance = (0 + 0 + 0.25 + 4 + 1 + 0.25) / 6
    # x centred: [[-1, -1], [0, 1], [1, 0]] -> unbiased variance 2/2 = 1 in both dims
    std_x = [math.sqrt(1 + eps), math.sqrt(1 + eps)]
    # y centred: dim 0 [-1/2, 0, 1/2] -> var 0.5/2; dim 1 [-1/6, -1/6, 1/3] -> var (6/36)/2
    std_y = [math.sqrt(0.25 + eps), math.sqrt(1 / 12 + eps)]
    hinge_x = [max(0.0, 1 - s) for s in std_x]  # both 0: std above gamma
    hinge_y = [max(0.0, 1 - s) for s in std_y]
    assert hinge_x == [0.0, 0.0] and min(hinge_y) > 0
    variance = sum(hinge_x) / 2 / 2 + sum(hinge_y) / 2 / 2
    # cov_x = [[1, 1/2], [1/2, 1]]: off-diagonal ((-1)(-1) + 0*1 + 1*0) / 2
    cov_x_off = [0.5, 0.5]
    # cov_y = [[1/4, 1/8], [1/8, 1/12]]: off-diagonal ((-1/2)(-1/6) + 0 + (1/2)(1/3)) / 2
    cov_y_off = [1 / 8, 1 / 8]
    covariance = sum(c**2 for c in cov_x_off) / 2 + sum(c**2 for c in cov_y_off) / 2
    assert covariance == pytest.approx(0.25 + 1 / 64)
    total = 25 * invariance + 25 * variance + 1 * covariance

    terms = vicreg_loss(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
    assert terms.invariance.item() == pytest.approx(invariance, abs=1e-12)
    assert terms.variance.item() == pytest.approx(variance, abs=1e-12)
    assert terms.covariance.item() == pytest.approx(covariance, abs=1e-12)
    assert terms.loss.item() == pytest.approx(total, abs=1e-10)
    assert all(t.ndim == 0 for t in terms)


def test_vicreg_matches_an_independent_numpy_version() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 8)) * 0.5
    y = x @ rng.normal(size=(8, 8)) * 0.3 + rng.normal(size=(16, 8))

    def reference(a: np.ndarray, b: np.ndarray) -> float:
        n, d = a.shape
        inv = float(np.mean((a - b) ** 2))
        var = 0.0
        cov = 0.0
        for z in (a, b):
            std = np.sqrt(z.var(axis=0, ddof=1) + 1e-4)
            var += float(np.mean(np.maximum(0.0, 1.0 - std))) / 2
            c = np.cov(z, rowvar=False)  # unbiased (n - 1), independent of the torch path
            cov += float((c**2).sum() - (np.diag(c) ** 2).sum()) / d
        return 10.0 * inv + 20.0 * var + 3.0 * cov

    terms = vicreg_loss(
        torch.from_numpy(x), torch.from_numpy(y), sim_coeff=10.0, std_coeff=20.0, cov_coeff=3.0
    )
    assert terms.loss.item() == pytest.approx(reference(x, y), abs=1e-5)


def test_vicreg_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        vicreg_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="n=1"):
        vicreg_loss(torch.zeros(1, 3), torch.zeros(1, 3))


def test_needs_two_modalities_and_keys_pairs_by_name() -> None:
    with pytest.raises(ValueError, match="at least 2 modalities"):
        EmbeddingPredictor({"audio": 4})
    predictor = make()
    assert len(predictor.pairs) == 6
    assert set(predictor.predictors) == {f"{a}_to_{b}" for a, b in predictor.pairs}
    assert predictor.predict(feats_for(DIMS, 2), "text", "image").shape == (2, 5)


def test_complete_fills_missing_rows_with_the_mean_prediction() -> None:
    predictor = make()
    feats = feats_for(DIMS, 4)
    present = torch.tensor(
        [
            [True, True, True],  # all present
            [True, True, False],  # text missing: mean of audio->text and image->text
            [True, False, False],  # image and text missing: audio alone predicts both
            [False, True, True],  # audio missing: mean of image->audio and text->audio
        ]
    )
    feats["text"][1] = float("nan")  # junk under a mask must not leak anywhere
    completed, mask = predictor.complete(feats, present)

    assert mask.dtype == torch.bool and mask.shape == present.shape and bool(mask.all())
    for j, m in enumerate(DIMS):
        rows = present[:, j]
        assert torch.equal(completed[m][rows], feats[m][rows])
        assert not completed[m].requires_grad
    with torch.no_grad():
        p = {(a, b): predictor.predict(feats, a, b) for a, b in predictor.pairs}
    assert torch.allclose(completed["text"][1], (p["audio", "text"][1] + p["image", "text"][1]) / 2)
    assert torch.allclose(completed["image"][2], p["audio", "image"][2])
    assert torch.allclose(completed["text"][2], p["audio", "text"][2])
    assert torch.allclose(
        completed["audio"][3], (p["image", "audio"][3] + p["text", "audio"][3]) / 2
    )


def test_complete_predicts_a_modality_absent_from_feats_and_keeps_encoder_grads() -> None:
    predictor = make()
    feats = {m: x.requires_grad_() for m, x in feats_for(DIMS, 3).items() if m != "image"}
    present = torch.tensor([[True, True, True], [True, False, False], [False, True, True]])
    completed, _ = predictor.complete(feats, present)
    assert set(completed) == set(DIMS)
    assert not completed["image"].requires_grad  # fully predicted: no graph to the predictor
    with torch.no_grad():
        from_audio = predictor.predict(feats, "audio", "image")
        from_text = predictor.predict(feats, "text", "image")
    assert torch.allclose(completed["image"][0], (from_audio[0] + from_text[0]) / 2)
    assert torch.allclose(completed["image"][1], from_audio[1])
    assert torch.allclose(completed["image"][2], from_text[2])
    sum(x.sum() for x in completed.values()).backward()
    assert all(p.grad is None for p in predictor.parameters())  # the classifier never trains it
    assert torch.equal(feats["audio"].grad[:, 0], torch.tensor([1.0, 1.0, 0.0]))  # present rows


def test_complete_keeps_the_input_dtype_and_rejects_empty_rows() -> None:
    predictor = make()
    feats = {m: x.double() for m, x in feats_for(DIMS, 2).items()}
    completed, _ = predictor.complete(
        feats, torch.tensor([[True, False, True], [True, True, True]])
    )
    assert all(x.dtype == torch.float64 for x in completed.values())
    with pytest.raises(ValueError, match="no modality present"):
        predictor.complete(feats, torch.tensor([[False, False, False], [True, True, True]]))


def test_complete_does_not_depend_on_modality_order() -> None:
    predictor = make()
    other = EmbeddingPredictor(dict(reversed(DIMS.items())), hidden=16)
    other.load_state_dict(predictor.state_dict())  # same weights, keyed by modality name
    feats = feats_for(DIMS, 8, seed=1)
    present = torch.rand(8, 3, generator=torch.Generator().manual_seed(1)) > 0.5
    present[~present.any(dim=1), 0] = True
    ours, _ = predictor.complete(feats, present)
    theirs, mask = other.complete(feats, present.flip(dims=[1]))
    assert bool(mask.all())
    for m in DIMS:
        assert torch.allclose(ours[m], theirs[m], atol=1e-6)


def test_loss_uses_only_paired_rows() -> None:
    predictor = make()
    feats = feats_for(DIMS, 6)
    present = torch.tensor(
        [
            [True, True, True],
            [True, True, True],
            [True, True, False],
            [True, False, True],
            [True, False, False],  # only audio: paired with nothing
            [False, True, True],
        ]
    )
    loss, stats = predictor.loss(feats, present)
    changed = {m: x.clone() for m, x in feats.items()}
    changed["audio"][4] += 100.0  # row 4 pairs with nothing
    changed["image"][4] += 100.0  # masked in row 4
    changed["text"][2] = float("nan")  # masked in row 2
    again, _ = predictor.loss(changed, present)
    assert loss is not None and again is not None
    assert torch.equal(loss, again)
    # 3 rows for each of audio/image, audio/text, image/text, in both directions
    assert stats["paired_rows"] == 3.0
    assert set(stats) == {"vicreg", "invariance", "variance", "covariance", "paired_rows"}
    assert stats["vicreg"] == pytest.approx(loss.item())
    changed["audio"][0] += 1.0  # a paired row does count
    moved, _ = predictor.loss(changed, present)
    assert moved is not None and not torch.equal(loss, moved)


def test_loss_is_none_without_two_paired_rows() -> None:
    predictor = make({"audio": 4, "image": 5})
    present = torch.tensor([[True, False], [False, True], [True, True]])
    loss, stats = predictor.loss(feats_for({"audio": 4, "image": 5}, 3), present)
    assert loss is None and stats == {}


def test_loss_trains_the_predictor_but_not_the_inputs() -> None:
    predictor = make()
    feats = {m: x.requires_grad_() for m, x in feats_for(DIMS, 8).items()}
    loss, _ = predictor.loss(feats, torch.ones(8, 3, dtype=torch.bool))
    assert loss is not None
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in predictor.parameters())
    assert all(x.grad is None for x in feats.values())


def test_vicreg_training_learns_a_linear_relation() -> None:
    dims = {"a": 5, "b": 5}
    g = torch.Generator().manual_seed(0)
    a = torch.randn(32, 5, generator=g)
    b = a @ torch.randn(5, 5, generator=g) + 0.05 * torch.randn(32, 5, generator=g)
    feats, present = {"a": a, "b": b}, torch.ones(32, 2, dtype=torch.bool)
    predictor = make(dims, hidden=32)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=3e-2)
    _, start = predictor.loss(feats, present)
    for _ in range(50):  # few steps: the unit tier runs in seconds
        loss, _ = predictor.loss(feats, present)
        assert loss is not None
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _, end = predictor.loss(feats, present)
    assert end["invariance"] < 0.2 * start["invariance"]


@pytest.mark.parametrize("fusion_name", ["gated", "avg", "concat"])
def test_predicted_embeddings_train_with_any_fusion_and_bitfit_encoders(fusion_name: str) -> None:
    from torch.utils.data import DataLoader

    from tsp_mlflow.models import LateFusionModel, SmallCNN
    from tsp_mlflow.models.fusion import AvgFusion, ConcatFusion, GatedFusion
    from tsp_mlflow.training.finetune import apply_modes
    from tsp_mlflow.training.loop import evaluate, fit
    from tsp_mlflow.training.tasks import MulticlassTask

    torch.manual_seed(0)
    encoders = {"audio": SmallCNN(out_dim=6, width=4), "image": SmallCNN(out_dim=5, width=4)}
    dims = {m: e.out_dim for m, e in encoders.items()}
    fusion = {
        "gated": lambda: GatedFusion(dims, dim=8),
        "avg": lambda: AvgFusion(dims, dim=8),
        "concat": lambda: ConcatFusion(dims),
    }[fusion_name]()
    model = LateFusionModel(
        encoders,
        fusion,
        torch.nn.Linear(fusion.out_dim, 3),
        predictor=EmbeddingPredictor(dims, hidden=16),
    )
    apply_modes(model, {"audio": "bitfit", "image": "bitfit"})
    weights = {n: p.detach().clone() for n, p in model.encoders.named_parameters()}
    predictor = {n: p.detach().clone() for n, p in model.predictor.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    present = [[True, True], [True, False], [False, True]]
    rows = [
        {
            "inputs": {
                "audio": torch.randn(1, 12, 12, generator=gen),
                "image": torch.randn(1, 12, 12, generator=gen),
            },
            "present": torch.tensor(present[i % 3]),
            "target": torch.tensor(i % 3),
        }
        for i in range(36)
    ]
    loader = DataLoader(rows, batch_size=12)
    trainable = [p for p in model.parameters() if p.requires_grad]
    result = fit(
        model,
        loader,
        loader,
        optimizer=torch.optim.Adam(trainable, lr=1e-2),
        scheduler=None,
        epochs=2,
        patterns=[("audio", "image"), ("audio",), ("image",)],
        task=MulticlassTask(3),
        monitor_pattern="audio-image",
        device=torch.device("cpu"),
    )
    assert all(math.isfinite(h["train"]["all"]["predictor_vicreg"]) for h in result.history)
    for name, before in weights.items():  # BitFit: only biases moved
        moved = not torch.equal(before, dict(model.encoders.named_parameters())[name])
        assert moved == name.endswith("bias"), name
    assert any(
        not torch.equal(before, dict(model.predictor.named_parameters())[n])
        for n, before in predictor.items()
    )
    # A single-modality pattern is classified from a predicted embedding, not a zero one.
    metrics = evaluate(model, loader, [("audio",)], torch.device("cpu"), MulticlassTask(3))
    model.predictor = None
    without = evaluate(model, loader, [("audio",)], torch.device("cpu"), MulticlassTask(3))
    assert metrics["audio"]["loss"] != without["audio"]["loss"]
