"""weight_posterior=groups: the weights read the prompt's predicted group, a classifier of the data's subset labels."""

from __future__ import annotations

import json

import numpy as np
import pyro
import pytest
import torch
from conftest import TINY_OVERRIDES, compose_train
from test_latents import head_of, two_groups

from vrm.data.schema import MAX_PROMPT_GROUPS, PROMPT_GROUP, prompt_groups_of
from vrm.data.synthetic import CATEGORIES
from vrm.evaluation.synthetic_eval import weight_recovery_report
from vrm.models.modeling_vrm import VRMForSequenceClassification
from vrm.models.objectives import VRMObjective

NAMES = ["first", "second"]


def groups_head(**overrides):
    return head_of(reward_scale="learned", weight_posterior="groups", prompt_groups=NAMES, **overrides)


def test_prompt_groups_are_the_distinct_subsets_only_when_they_group():
    assert prompt_groups_of(["b", "a", "", "b", "a"]) == ["a", "b"]
    assert prompt_groups_of(["a", "a", ""]) == []  # one group carries no kind of prompt
    assert prompt_groups_of([""] * 3) == []
    many = [f"s{i}" for i in range(MAX_PROMPT_GROUPS + 1)]
    assert prompt_groups_of(many) == []  # more look like ids
    assert len(prompt_groups_of(many[:-1])) == MAX_PROMPT_GROUPS


def test_group_settings_are_named():
    for bad in (None, ["only"], ["a", "a"], ["a", 3]):
        with pytest.raises(ValueError, match="needs prompt_groups"):
            head_of(weight_posterior="groups", prompt_groups=bad)


def test_the_group_loss_by_hand_ignores_unlabelled_prompts_and_trains_only_the_classifier():
    """L_group is the mean cross-entropy over the labelled prompts (label -1 ignored), by hand; it (and only it)
    reaches the classifier: the ELBO reads the group probabilities detached."""
    head = groups_head()
    h_x, h_pos, h_neg, ratings, _ = two_groups(6)
    labels = torch.tensor([0, 1, -1, 1, -1, 0])
    objective = VRMObjective(head, aspect_loss="diff", group_coef=0.5)
    logits = head.group_logits(h_x).detach()
    by_hand = np.mean([-torch.log_softmax(logits[i], -1)[labels[i]].item() for i in (0, 1, 3, 5)])
    assert objective.group_term(h_x, labels).item() == pytest.approx(by_hand, rel=1e-6)
    assert objective.group_term(h_x, torch.full((6,), -1)).item() == 0.0
    pyro.set_rng_seed(0)
    with_groups = objective(h_x, h_pos, h_neg, aspects=ratings, groups=labels)
    assert with_groups.terms["group"].item() == pytest.approx(by_hand, rel=1e-6)
    pyro.set_rng_seed(0)
    without = objective(h_x, h_pos, h_neg, aspects=ratings)
    assert "group" not in without.terms
    without.loss.backward()
    assert head.group_classifier.weight.grad is None  # the ELBO never reaches the classifier
    assert torch.any(head.weight_posterior[0].weight.grad != 0)
    head.zero_grad()
    (0.5 * objective.group_term(h_x, labels)).backward()
    assert torch.any(head.group_classifier.weight.grad != 0)
    assert head.weight_posterior[0].weight.grad is None or torch.all(head.weight_posterior[0].weight.grad == 0)


def test_weights_move_per_prompt_group():
    """The two groups with opposite true weights; the prompt's h(x) is the group one-hot in noise. Trained on the
    pairs and the group labels, the classifier finds the groups and E[w | x] moves to each group's heavy attribute
    on its own objective, nearly the same for every prompt of a group."""
    pyro.set_rng_seed(0)
    torch.manual_seed(0)
    h_x, h_pos, h_neg, ratings, true_w = two_groups(128)
    h_x = h_x + 0.3 * torch.randn(h_x.shape, generator=torch.Generator().manual_seed(1))
    labels = h_x.new_tensor((true_w[:, 1] == 0.9).astype(np.int64)).long()
    head = groups_head()
    objective = VRMObjective(head, beta_w=0.001, aspect_loss="diff", score_training="aspects")
    optimizer = torch.optim.Adam(objective.parameters(), lr=0.01)
    for step in range(300):
        loss = objective(h_x, h_pos, h_neg, progress=step / 300, aspects=ratings, groups=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = head.group_probabilities(h_x).argmax(-1)
        weights = head.scoring_weights(h_x).numpy()
    assert torch.equal(predicted, labels)
    report = weight_recovery_report(weights, true_w, true_names=("first", "second"))
    assert report["weight_recovery"] > 0.95
    assert report["matched_objective"] == {"first": 0, "second": 1}
    assert 0.5 * report["true_spread"] <= report["spread"] <= 2 * report["true_spread"]
    for group in (0, 1):  # about one weight vector per group: prompts differ only in how sure the classifier is
        rows = weights[labels.numpy() == group]
        assert np.abs(rows - rows.mean(0)).mean() < 0.05  # the groups are 0.8 apart


def write_pairs(path, subsets):
    with path.open("w") as f:
        for i, subset in enumerate(subsets):
            row = {"prompt": f"Question {i} about {subset or 'nothing'}?", "chosen": f"A good answer {i}.",
                   "rejected": f"A bad answer {i}."}
            if subset is not None:
                row["subset"] = subset
            f.write(json.dumps(row) + "\n")
    return path


RUN = ["callbacks=none", "test=false", "trainer.enable_checkpointing=false"]


@pytest.mark.parametrize("train_mode", ["full", "frozen"])
def test_auto_reads_the_synthetic_categories_and_the_export_keeps_the_groups(tmp_path, train_mode):
    """On the default data (subsets = the synthetic categories) ``auto`` is ``groups``: batches (tokens, or cached
    features when frozen) carry each pair's group, training lowers the group loss, and the export scores as the
    trained model does, group classifier included."""
    from vrm.scoring.export import export_model
    from vrm.scoring.scorer import RewardScorer
    from vrm.training.build import build, build_trainer

    cfg = compose_train([*TINY_OVERRIDES, *RUN, f"encoder.train_mode={train_mode}", "trainer.max_epochs=3"], tmp_path)
    run = build(cfg, tmp_path)
    config = run.module.net.config
    assert (config.weight_posterior, config.prompt_groups) == ("groups", sorted(CATEGORIES))
    batch = next(iter(run.datamodule.train_dataloader()))
    rows = run.datamodule.splits["train"]
    assert rows[PROMPT_GROUP] == [sorted(CATEGORIES).index(s) for s in rows["subset"]]
    assert batch[PROMPT_GROUP].shape == (8,) and set(batch[PROMPT_GROUP].tolist()) <= set(range(6))
    def group_loss() -> float:  # over the training split, without dropout
        run.module.eval()
        with torch.no_grad():
            return float(np.mean([run.module.pair_forward(b).terms["group"].item()
                                  for b in run.datamodule.train_dataloader()]))

    first = group_loss()
    build_trainer(cfg).fit(run.module, datamodule=run.datamodule)
    assert group_loss() < first - 0.05
    folder = export_model(run.module.net, run.encoder.tokenizer, tmp_path / "export")
    exported = VRMForSequenceClassification.from_pretrained(str(folder))
    assert exported.config.prompt_groups == sorted(CATEGORIES)
    prompts, responses = ["How do I fix a memory leak?", "My order never came."], ["Use a profiler.", "Sorry!"]
    with torch.no_grad():
        scorer = RewardScorer.from_pretrained(folder)
        expected = RewardScorer(run.module.net.eval(), run.encoder.tokenizer).score(prompts, responses)
    np.testing.assert_allclose(scorer.score(prompts, responses), expected, atol=1e-5)


def test_without_subsets_auto_is_prompt_and_groups_is_refused(tmp_path):
    """Pairs without a subset: ``auto`` reads the prompt's h(x) and says so; an explicit ``groups`` stops with the
    column to fill. Subsets of validation pairs unseen in training get group -1 (no label)."""
    from vrm.training.build import build

    plain = write_pairs(tmp_path / "plain.jsonl", [None] * 12)
    data = ["data=jsonl", f"data.train={plain}", "data.validation_fraction=0.25", "data.test_fraction=0"]
    run = build(compose_train([*TINY_OVERRIDES, *RUN, *data], tmp_path / "auto"), tmp_path / "auto")
    assert (run.module.net.config.weight_posterior, run.module.net.config.prompt_groups) == ("prompt", None)
    with pytest.raises(ValueError, match="weight_posterior=groups needs prompt groups.*subset"):
        build(compose_train([*TINY_OVERRIDES, *RUN, *data, "model.weight_posterior=groups"], tmp_path / "g"),
              tmp_path / "g")
    train = write_pairs(tmp_path / "train.jsonl", ["math", "chat"] * 6)
    val = write_pairs(tmp_path / "val.jsonl", ["chat", "poetry", "math"])
    data = ["data=jsonl", f"data.train={train}", f"data.validation={val}", "data.test_fraction=0"]
    run = build(compose_train([*TINY_OVERRIDES, *RUN, *data], tmp_path / "mixed"), tmp_path / "mixed")
    assert run.module.net.config.prompt_groups == ["chat", "math"]
    assert run.datamodule.splits["validation"][PROMPT_GROUP] == [0, -1, 1]
    batch = next(iter(run.datamodule.val_dataloader()))
    assert batch[PROMPT_GROUP].tolist() == [0, -1, 1]
    assert torch.isfinite(run.module.pair_forward(batch).loss)
