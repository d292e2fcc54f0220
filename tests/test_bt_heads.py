"""The fair Bradley-Terry baselines: an MLP head of VRM's capacity and aspect heads trained with VRM's aspect loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_OVERRIDES, compose_train

from vrm.models.heads import BTHead
from vrm.models.modeling_vrm import VRMConfig
from vrm.models.objectives import BTObjective, aspect_loss

H, HID = 6, 4


def test_linear_head_keeps_its_single_bias_free_weight():
    head = BTHead(H)
    assert set(head.state_dict()) == {"score.weight"}
    h = torch.randn(3, H)
    out = head(h)
    assert torch.allclose(out.reward, h @ head.score.weight[0]) and out.objective_scores is None


def test_mlp_head_is_a_hidden_layer_then_a_bias_free_score():
    torch.manual_seed(0)
    head = BTHead(H, "mlp", HID, num_aspects=2)
    h = torch.randn(5, H)
    hidden = F.gelu(h @ head.trunk[0].weight.T + head.trunk[0].bias)
    out = head(h)
    assert torch.allclose(out.reward, hidden @ head.score.weight[0], atol=1e-6)
    assert torch.allclose(out.objective_scores, hidden @ head.aspect_scores.weight.T + head.aspect_scores.bias,
                          atol=1e-6)
    assert head.score.bias is None


def test_aspect_loss_by_hand():
    s_pos, s_neg = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.0, 1.0, 2.0]])
    a_pos, a_neg = torch.tensor([[4.0, 2.0, 3.0]]), torch.tensor([[2.0, 2.0, float("nan")]])
    # only aspect 0 is rated differently on both sides: -log sigmoid(+1 * (1 - 0))
    assert float(aspect_loss(s_pos, s_neg, a_pos, a_neg)) == pytest.approx(math.log1p(math.exp(-1.0)))
    # mse: (1-4)^2, (0-2)^2, (2-3)^2 for chosen; (0-2)^2, (1-2)^2 for rejected (the NaN is skipped)
    assert float(aspect_loss(s_pos, s_neg, a_pos, a_neg, kind="mse")) == pytest.approx((9 + 4 + 1 + 4 + 1) / 5)


def test_bt_objective_adds_the_aspect_term_and_it_trains_the_shared_layer():
    torch.manual_seed(0)
    head = BTHead(H, "mlp", HID, num_aspects=3)
    objective = BTObjective(head, aspect_coef=0.5)
    h_pos, h_neg = torch.randn(4, H), torch.randn(4, H)
    a_pos, a_neg = torch.randint(1, 6, (4, 3)).float(), torch.randint(1, 6, (4, 3)).float()
    plain = objective(None, h_pos, h_neg)
    rated = objective(None, h_pos, h_neg, aspects=(a_pos, a_neg))
    scores = head(torch.cat([h_pos, h_neg])).objective_scores
    expected_aspect = aspect_loss(scores[:4], scores[4:], a_pos, a_neg)
    assert set(plain.terms) == {"nll"} and float(rated.terms["aspect"]) == pytest.approx(float(expected_aspect.detach()))
    assert float(rated.loss) == pytest.approx(float(plain.loss) + 0.5 * float(expected_aspect.detach()))
    head.zero_grad()
    objective.aspect_coef = 1.0
    assert not objective(None, h_pos, h_neg, aspects=(a_pos, a_neg)).terms["aspect"].requires_grad  # logged only
    objective(None, h_pos, h_neg, aspects=(a_pos, a_neg)).loss.backward()
    assert head.trunk[0].weight.grad.abs().sum() > 0 and head.aspect_scores.weight.grad.abs().sum() > 0


def test_more_rated_aspects_than_heads_train_the_first_heads_with_a_warning(caplog):
    from vrm.models import objectives

    objectives._WARNED_ASPECTS.clear()
    torch.manual_seed(0)
    objective = BTObjective(BTHead(H, "mlp", HID, num_aspects=2))
    h_pos, h_neg = torch.randn(2, H), torch.randn(2, H)
    ratings = torch.tensor([[1.0, 5.0, 3.0], [2.0, 1.0, 4.0]])
    with caplog.at_level("WARNING"):
        out = objective(None, h_pos, h_neg, aspects=(ratings, ratings.flip(0)))
    assert "rates 3 aspects but model.bt_aspect_heads=2" in caplog.text
    scores = objective.head(torch.cat([h_pos, h_neg])).objective_scores
    expected = aspect_loss(scores[:2], scores[2:], ratings[:, :2], ratings.flip(0)[:, :2])
    assert float(out.terms["aspect"]) == pytest.approx(float(expected.detach()))


def test_plain_bt_ignores_the_ratings():
    objective = BTObjective(BTHead(H))
    ratings = torch.ones(2, 5)
    out = objective(None, torch.randn(2, H), torch.randn(2, H), aspects=(ratings, ratings + 1))
    assert set(out.terms) == {"nll"}


@pytest.mark.parametrize("change, message", [({"bt_head": "deep"}, "bt_head"),
                                             ({"bt_aspect_heads": 2}, "needs bt_head='mlp'"),
                                             ({"bt_head": "mlp", "bt_aspect_heads": -1}, "bt_aspect_heads")])
def test_bad_bt_settings_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        VRMConfig(head="bt", **change)


def test_bt_with_aspect_heads_trains_on_the_synthetic_ratings_and_its_export_scores_the_same(tmp_path):
    from test_export import PROMPTS, RESPONSES, encode_all, rewards_one_by_one
    from transformers import AutoTokenizer

    from vrm.cli.train import train_and_export as train
    from vrm.scoring.scorer import RewardScorer
    from vrm.training.module import RewardModule

    cfg = compose_train(TINY_OVERRIDES + ["model=bt", "model.bt_head=mlp", "model.bt_aspect_heads=5",
                                          "model.head_hidden_dim=8", "data.synthetic.num_train=16",
                                          "data.synthetic.num_validation=8", "test=false",
                                          f"export_dir={tmp_path / 'export'}"], tmp_path)
    metrics = train(cfg)
    assert math.isfinite(metrics["train/aspect_epoch"]) and metrics["train/aspect_epoch"] > 0
    module = RewardModule.from_checkpoint((tmp_path / "best_checkpoint.txt").read_text().strip())
    assert module.net.head.aspect_scores.out_features == 5 and module.net.head.trunk[0].out_features == 8
    encoded = encode_all(module.net, AutoTokenizer.from_pretrained(module.hparams.tokenizer_path))
    expected = rewards_one_by_one(module.net, encoded)
    scorer = RewardScorer.from_pretrained(tmp_path / "export", batch_size=2)
    assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-5)


def test_vrm_with_fewer_objectives_than_rated_aspects_trains_on_the_first_ratings(tmp_path, caplog):
    """Benchmark v2 rates 5 aspects; model.num_objectives=2 (as sweeps try) trains on the first 2, with a warning."""
    from vrm.models import objectives
    from vrm.training.train import train

    objectives._WARNED_ASPECTS.clear()
    cfg = compose_train(TINY_OVERRIDES + ["model.num_objectives=2", "data.synthetic.num_train=16",
                                          "data.synthetic.num_validation=8", "test=false"], tmp_path)
    with caplog.at_level("WARNING"):
        metrics = train(cfg)
    assert "rates 5 aspects but model.num_objectives=2" in caplog.text
    assert math.isfinite(metrics["train/aspect_epoch"])
