"""Contrastive pretraining: InfoNCE, retrieval recall, the queue and the temperature."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tsp_mlflow.errors import UserInputError
from tsp_mlflow.models.contrastive import ContrastiveProjection
from tsp_mlflow.models.late_fusion import LateFusionModel
from tsp_mlflow.training.contrastive import ContrastiveObjective, info_nce, retrieval_recall


def _unit(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


# --- retrieval_recall ------------------------------------------------------------------


def test_recall_of_identical_embeddings_is_perfect_in_both_directions() -> None:
    z = _unit(50, 16)
    assert retrieval_recall(z, z.clone())[1] == 1.0
    assert retrieval_recall(z.clone(), z)[1] == 1.0


def test_recall_of_permuted_keys_is_near_chance() -> None:
    z = _unit(50, 16)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    recall = retrieval_recall(z, z[perm])
    # A row is retrieved only where the permutation fixes it (about 1 of 50).
    assert recall[1] == pytest.approx(float((perm == torch.arange(50)).float().mean()))
    assert recall[1] <= 0.1


def test_collapsed_embeddings_get_zero_recall() -> None:
    """Every key ties with the match, and ties count against it."""
    z = torch.ones(50, 4)
    recall = retrieval_recall(z, z, ks=(1, 5, 10, 50))
    assert recall == {1: 0.0, 5: 0.0, 10: 0.0, 50: 1.0}  # rank 49 for every row


def test_recall_k_above_n_counts_every_row() -> None:
    q, k = _unit(6, 4, seed=2), _unit(6, 4, seed=3)
    assert retrieval_recall(q, k, ks=(6, 100)) == {6: 1.0, 100: 1.0}


def test_chunked_recall_equals_unchunked() -> None:
    q, k = _unit(50, 8, seed=4), _unit(50, 8, seed=5) + 0.8 * _unit(50, 8, seed=4)
    whole = retrieval_recall(q, k, chunk=1024)
    assert 0.0 < whole[1] < 1.0  # a case where the ranks matter
    assert retrieval_recall(q, k, chunk=7) == whole


def test_recall_by_hand_on_three_rows() -> None:
    """Similarities (row: query, column: key), normalisation applied inside:
    q0 = e0 -> keys e0, e1, (e0+e1)/sqrt2: sims 1, 0, .71 -> match rank 0
    q1 = e0 -> same sims; match is key 1 (0), beaten by keys 0 and 2 -> rank 2
    q2 = e1 -> sims 0, 1, .71; match key 2 (.71) beaten by key 1 -> rank 1
    """
    q = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert retrieval_recall(q, k, ks=(1, 2, 3)) == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})


# --- info_nce -----------------------------------------------------------------------------


def _ce_numpy(logits: np.ndarray) -> float:
    """Mean over rows of -log softmax(row)[i], the diagonal being the positive."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-np.mean([log_softmax[i, i] for i in range(len(logits))]))


def test_info_nce_equals_numpy_without_and_with_negatives() -> None:
    za, zb = _unit(3, 4, seed=6), _unit(3, 4, seed=7)
    na, nb = _unit(2, 4, seed=8), _unit(2, 4, seed=9)
    s = 5.0
    a, b, a_neg, b_neg = (t.numpy() for t in (za, zb, na, nb))

    want = (_ce_numpy(s * a @ b.T) + _ce_numpy(s * b @ a.T)) / 2
    got = info_nce(za, zb, torch.tensor(s, dtype=torch.float64))
    assert float(got) == pytest.approx(want, rel=1e-12)

    ab = s * np.concatenate([a @ b.T, a @ b_neg.T], axis=1)  # (3, 3 + 2)
    ba = s * np.concatenate([b @ a.T, b @ a_neg.T], axis=1)
    want_q = (_ce_numpy(ab) + _ce_numpy(ba)) / 2
    got_q = info_nce(za, zb, torch.tensor(s, dtype=torch.float64), negatives_a=na, negatives_b=nb)
    assert float(got_q) == pytest.approx(want_q, rel=1e-12)
    assert float(got_q) > float(got)  # more negatives, harder problem (here)


def test_info_nce_is_symmetric() -> None:
    za, zb = _unit(5, 4, seed=10), _unit(5, 4, seed=11)
    na, nb = _unit(3, 4, seed=12), _unit(3, 4, seed=13)
    scale = torch.tensor(7.0, dtype=torch.float64)
    assert float(info_nce(za, zb, scale)) == pytest.approx(float(info_nce(zb, za, scale)))
    swapped = info_nce(zb, za, scale, negatives_a=nb, negatives_b=na)
    assert float(info_nce(za, zb, scale, negatives_a=na, negatives_b=nb)) == pytest.approx(
        float(swapped)
    )


# --- ContrastiveObjective ----------------------------------------------------------------


def test_metrics_loss_equals_full_matrix_computation_and_ignores_chunking() -> None:
    obj = ContrastiveObjective(("a", "b", "c"), dim=4, temperature=0.1)
    z = {m: _unit(23, 4, seed=20 + i).float() for i, m in enumerate("abc")}
    out = torch.cat([z["a"], z["b"], z["c"]], dim=1)  # (23, 12)
    labels = torch.arange(23)
    s = 10.0
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    want = sum(
        (F.cross_entropy(s * z[x] @ z[y].T, labels) + F.cross_entropy(s * z[y] @ z[x].T, labels))
        / 2
        for x, y in pairs
    ) / len(pairs)

    whole = obj.metrics(out, torch.zeros(23))
    obj.eval_chunk = 5
    chunked = obj.metrics(out, torch.zeros(23))

    assert whole["loss"] == pytest.approx(float(want), rel=1e-5)
    assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert {k: v for k, v in chunked.items() if k != "loss"} == {
        k: v for k, v in whole.items() if k != "loss"
    }
    assert float(obj.loss(out, torch.zeros(23)).detach()) == pytest.approx(whole["loss"], rel=1e-5)
    assert set(whole) == {"loss", *obj.metrics_names}
    assert whole["temperature"] == pytest.approx(0.1)
    assert whole["recall_at_1"] == pytest.approx(
        np.mean([whole[f"{x}_to_{y}_recall_at_1"] for x in "abc" for y in "abc" if x != y])
    )


def test_metrics_names_monitor_and_attributes() -> None:
    obj = ContrastiveObjective(["img", "txt"], dim=8)
    assert obj.metrics_names == (
        "img_to_txt_recall_at_1",
        "img_to_txt_recall_at_5",
        "img_to_txt_recall_at_10",
        "txt_to_img_recall_at_1",
        "txt_to_img_recall_at_5",
        "txt_to_img_recall_at_10",
        "recall_at_1",
        "recall_at_5",
        "recall_at_10",
        "temperature",
    )
    assert obj.num_outputs == 16
    assert obj.higher_is_better("recall_at_1") and not obj.higher_is_better("loss")
    x = torch.randn(3, 16)
    assert obj(x) is x
    assert ContrastiveObjective(["img", "txt"], monitor="loss").monitor == "loss"
    with pytest.raises(UserInputError, match="recall_at_5"):
        ContrastiveObjective(["img", "txt"], monitor="accuracy")


def test_queue_is_a_ring_buffer_filled_only_in_training() -> None:
    obj = ContrastiveObjective(("a", "b"), dim=2, queue_size=4)
    assert {"queue_a", "queue_b", "queue_ptr", "queue_filled"} <= set(obj.state_dict())
    batches = [
        torch.cat([_unit(3, 2, seed=30 + i), _unit(3, 2, seed=40 + i)], dim=1).float()
        for i in range(3)
    ]

    obj.eval()
    obj.loss(batches[0], torch.zeros(3))
    assert int(obj.queue_filled) == 0 and int(obj.queue_ptr) == 0
    assert not obj.queue_a.any()

    obj.train()
    first = obj.loss(batches[0], torch.zeros(3))
    first_want = info_nce(*batches[0].split(2, 1), obj.scale)
    assert float(first.detach()) == pytest.approx(float(first_want.detach()))
    assert int(obj.queue_filled) == 3 and int(obj.queue_ptr) == 3
    second = obj.loss(batches[1], torch.zeros(3))
    # The second batch saw the first as negatives (enqueued after its own loss).
    want = info_nce(
        *batches[1].split(2, 1),
        obj.scale,
        negatives_a=batches[0][:, :2],
        negatives_b=batches[0][:, 2:],
    )
    assert float(second.detach()) == pytest.approx(float(want.detach()))
    # Ring order: slots 0-2 held batch 0; batch 1 wrote slot 3, then wrapped to 0 and 1.
    assert int(obj.queue_filled) == 4 and int(obj.queue_ptr) == 2
    expected_a = torch.stack(
        [batches[1][1, :2], batches[1][2, :2], batches[0][2, :2], batches[1][0, :2]]
    )
    expected_b = torch.stack(
        [batches[1][1, 2:], batches[1][2, 2:], batches[0][2, 2:], batches[1][0, 2:]]
    )
    torch.testing.assert_close(obj.queue_a, expected_a)
    torch.testing.assert_close(obj.queue_b, expected_b)

    obj.eval()
    obj.loss(batches[2], torch.zeros(3))
    torch.testing.assert_close(obj.queue_a, expected_a)
    assert int(obj.queue_ptr) == 2

    restored = ContrastiveObjective(("a", "b"), dim=2, queue_size=4)
    restored.load_state_dict(obj.state_dict())
    torch.testing.assert_close(restored.queue_b, expected_b)
    assert int(restored.queue_ptr) == 2 and int(restored.queue_filled) == 4


def test_batch_larger_than_queue_keeps_its_last_rows() -> None:
    obj = ContrastiveObjective(("a", "b"), dim=2, queue_size=2).train()
    out = torch.cat([_unit(5, 2, seed=50), _unit(5, 2, seed=51)], dim=1).float()
    obj.loss(out, torch.zeros(5))
    # Rows 0..4 go to slots 0,1,0,1,0: the survivors are row 4 (slot 0) and row 3 (slot 1).
    torch.testing.assert_close(obj.queue_a, out[[4, 3], :2])
    assert int(obj.queue_ptr) == 1 and int(obj.queue_filled) == 2


def test_temperature_is_learned_only_when_asked_and_clamped() -> None:
    out = torch.cat([_unit(4, 3, seed=60), _unit(4, 3, seed=61)], dim=1).float()
    fixed = ContrastiveObjective(("a", "b"), dim=3, learn_temperature=False)
    assert not fixed.logit_scale.requires_grad
    assert not fixed.loss(out, torch.zeros(4)).requires_grad

    learned = ContrastiveObjective(("a", "b"), dim=3, temperature=0.07)
    assert float(learned.scale.detach()) == pytest.approx(1 / 0.07)
    learned.loss(out, torch.zeros(4)).backward()
    assert learned.logit_scale.grad is not None and float(learned.logit_scale.grad) != 0.0

    hot = ContrastiveObjective(("a", "b"), dim=3, temperature=0.001)
    assert float(hot.logit_scale.detach()) == pytest.approx(math.log(1000))
    assert float(hot.scale.detach()) == 100.0
    assert hot.metrics(out, torch.zeros(4))["temperature"] == pytest.approx(0.01)


def test_bad_arguments_raise_user_input_errors() -> None:
    with pytest.raises(UserInputError, match="two distinct"):
        ContrastiveObjective(["a"])
    with pytest.raises(UserInputError, match="temperature"):
        ContrastiveObjective(["a", "b"], temperature=0.0)
    with pytest.raises(UserInputError, match="queue_size"):
        ContrastiveObjective(["a", "b"], queue_size=-1)


# --- ContrastiveProjection ---------------------------------------------------------------


def test_projection_outputs_unit_rows_in_modality_order_and_needs_pairs() -> None:
    torch.manual_seed(0)
    proj = ContrastiveProjection({"a": 5, "b": 3}, dim=4)
    feats = {"b": torch.randn(6, 3), "a": torch.randn(6, 5)}
    present = torch.ones(6, 2, dtype=torch.bool)
    out = proj(feats, present)
    assert out.shape == (6, proj.out_dim) == (6, 8)
    torch.testing.assert_close(out[:, :4], F.normalize(proj.project["a"](feats["a"]), dim=1))
    torch.testing.assert_close(out[:, 4:].norm(dim=1), torch.ones(6))

    present[2, 1] = False
    with pytest.raises(ValueError, match="paired samples"):
        proj(feats, present)
    with pytest.raises(ValueError, match="paired samples"):
        proj({"a": feats["a"]}, torch.ones(6, 2, dtype=torch.bool))


# --- end to end --------------------------------------------------------------------------


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny tensors: extra intra-op threads only add overhead (seconds on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_training_aligns_two_encoders_well_above_chance() -> None:
    """b is a fixed random linear map of a plus noise; 200 Adam steps through the late-fusion
    model learn to retrieve the pair among 64 validation rows (chance: 1/64)."""
    torch.manual_seed(0)
    mixing = torch.randn(12, 10)

    def pairs(n: int) -> dict[str, torch.Tensor]:
        a = torch.randn(n, 12)
        return {"a": a, "b": a @ mixing + 0.1 * torch.randn(n, 10)}

    train, val = pairs(512), pairs(64)
    objective = ContrastiveObjective(("a", "b"), dim=8, queue_size=64)
    model = LateFusionModel(
        {"a": nn.Linear(12, 16), "b": nn.Linear(10, 16)},
        ContrastiveProjection({"a": 16, "b": 16}, dim=8),
        objective,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    present = torch.ones(32, 2, dtype=torch.bool)

    def val_metrics() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            out = model(val, torch.ones(64, 2, dtype=torch.bool))
        return objective.metrics(out, torch.zeros(64))

    before = val_metrics()
    model.train()
    for step in range(200):
        rows = torch.arange(step * 32, step * 32 + 32) % 512
        out = model({m: x[rows] for m, x in train.items()}, present)
        loss = objective.loss(out, torch.zeros(32))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = val_metrics()

    assert before["recall_at_1"] < 0.2, before  # random encoders: near chance
    assert after["recall_at_1"] > 0.5, after
    assert after["loss"] < before["loss"]
    assert int(objective.queue_filled) == 64  # the queue took part
    assert "head.logit_scale" in model.state_dict() and "head.queue_a" in model.state_dict()
