"""The Pyro ELBO of the VRM equals the spec's closed form on a tiny hand-built case."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from transformers import BertConfig, BertModel

from vrm.models.modeling_vrm import VRMConfig, VRMForSequenceClassification
from vrm.models.objectives import (
    KL_SCALE_FLOOR,
    SITE_W,
    SITE_Z_CHOSEN,
    SITE_Z_REJECTED,
    VRMObjective,
    annealed,
)

H, K, D, B = 8, 3, 2, 4


def tiny_head(**overrides):
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=50, hidden_size=H, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=16))
    config = VRMConfig(encoder_config=encoder.config.to_dict(), num_objectives=K, feature_dim=D, **overrides)
    return VRMForSequenceClassification(config, encoder=encoder).head


def dirichlet_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(Dir(a) || Dir(b)) written out by hand (per row)."""
    a0, b0 = a.sum(-1), b.sum(-1)
    return (torch.lgamma(a0) - torch.lgamma(a).sum(-1) - torch.lgamma(b0) + torch.lgamma(b).sum(-1)
            + ((a - b) * (torch.digamma(a) - torch.digamma(a0).unsqueeze(-1))).sum(-1))


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over features, by hand."""
    return (0.5 * (sigma ** 2 + mu ** 2 - 1) - torch.log(sigma)).sum(-1)


@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("prior", ["fixed", "learned"])
def test_pyro_loss_equals_closed_form(num_samples, prior):
    head = tiny_head(weight_prior=prior, prior_concentration=1.5)
    beta_w, beta_z, tau = 0.3, 0.2, 0.7
    objective = VRMObjective(head, num_samples=num_samples, beta_w=beta_w, beta_z=beta_z, tau=tau)
    g = torch.Generator().manual_seed(1)
    h_x, h_pos, h_neg = (torch.randn(B, H, generator=g) for _ in range(3))
    progress = 0.5  # half-way through KL annealing
    sw, sz = annealed(beta_w, progress), annealed(beta_z, progress)
    assert (sw, sz) == (0.15, 0.1)

    params = objective.variational_params(h_x, h_pos, h_neg)
    pyro.set_rng_seed(7)
    loss = objective.elbo.differentiable_loss(objective.model, objective.guide, params, sw, sz) / B

    # Same seed: the guide draws the same particles; recompute the spec's loss from them by hand.
    pyro.set_rng_seed(7)
    _, guide_trace = next(objective.elbo._get_traces(objective.model, objective.guide, (params, sw, sz), {}))
    # (S, B, K) and (S, B, D); a single particle is not vectorised, so it has no leading dim.
    w = guide_trace.nodes[SITE_W]["value"].reshape(num_samples, B, K)
    z_pos = guide_trace.nodes[SITE_Z_CHOSEN]["value"].reshape(num_samples, B, D)
    z_neg = guide_trace.nodes[SITE_Z_REJECTED]["value"].reshape(num_samples, B, D)
    scores_pos, scores_neg = head.score_head(z_pos), head.score_head(z_neg)
    r_pos, r_neg = (w * scores_pos).sum(-1), (w * scores_neg).sum(-1)
    likelihood = torch.nn.functional.logsigmoid((r_pos - r_neg) / tau).mean(0)  # MC average, (B,)

    alpha_q = torch.nn.functional.softplus(head.weight_posterior(h_x)) + 1e-3
    alpha_p = (torch.nn.functional.softplus(head.weight_prior(h_x)) + 1e-3 if prior == "learned"
               else torch.full((B, K), 1.5))
    kl_z = 0.0
    for h in (h_pos, h_neg):
        mu, raw = head.feature_posterior(h).chunk(2, dim=-1)
        kl_z = kl_z + gaussian_kl(mu, torch.nn.functional.softplus(raw) + 1e-4)
    expected = (-likelihood + sw * dirichlet_kl(alpha_q, alpha_p) + sz * kl_z).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_forward_terms_decompose_the_loss():
    head = tiny_head()
    objective = VRMObjective(head, num_samples=2, beta_w=0.05, beta_z=0.05, center_coef=0.1)
    h = [torch.randn(B, H) for _ in range(3)]
    out = objective(*h, progress=1.0)
    t = out.terms
    rebuilt = t["nll"] + 0.05 * t["kl_w"] + 0.05 * t["kl_z"] + 0.1 * t["center"]
    torch.testing.assert_close(out.loss.detach(), rebuilt.detach(), rtol=1e-5, atol=1e-6)
    assert 0 < float(t["entropy_w"]) <= math.log(K) + 1e-6


@pytest.mark.parametrize("center_coef", [0.0, 0.1])
def test_forward_runs_each_network_once(center_coef):
    """The guide, the logged KL terms and the deterministic rewards share one pass of each network."""
    head = tiny_head(weight_prior="learned")
    calls = {name: 0 for name in ("weight_posterior", "weight_prior", "feature_posterior")}
    for name in calls:
        getattr(head, name).register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    VRMObjective(head, num_samples=3, center_coef=center_coef)(*(torch.randn(B, H) for _ in range(3)))
    assert calls == {"weight_posterior": 1, "weight_prior": 1, "feature_posterior": 1}


def test_annealing_starts_from_positive_floor():
    assert annealed(0.05, 0.0) == KL_SCALE_FLOOR
    assert annealed(0.05, 0.5) == pytest.approx(0.025)
    assert annealed(0.05, 3.0) == pytest.approx(0.05)
    assert annealed(0.0, 1.0) == KL_SCALE_FLOOR


def test_aspect_loss_by_hand():
    head = tiny_head()
    objective = VRMObjective(head, aspect_coef=1.0)
    h_pos, h_neg = torch.randn(2, H), torch.randn(2, H)
    nan = float("nan")
    a_pos = torch.tensor([[5.0, 1.0], [nan, 2.0]])
    a_neg = torch.tensor([[3.0, 1.0], [4.0, 4.0]])
    s_pos = head.score_head(head.feature_posterior_params(h_pos)[0])
    s_neg = head.score_head(head.feature_posterior_params(h_neg)[0])
    # Rated and different: (row 0, aspect 0) chosen better; (row 1, aspect 1) rejected better.
    expected = -(torch.nn.functional.logsigmoid(s_pos[0, 0] - s_neg[0, 0])
                 + torch.nn.functional.logsigmoid(-(s_pos[1, 1] - s_neg[1, 1]))) / 2
    torch.testing.assert_close(objective.aspect_term(h_pos, h_neg, (a_pos, a_neg)), expected)


def test_pair_posterior_requires_learned_prior():
    with pytest.raises(ValueError, match="weight_prior='learned'"):
        tiny_head(weight_posterior="pair")


def test_distribution_validation_is_a_switch():
    """model.validate_distributions: Pyro's parameter checks name the bad parameter; off (the default, faster),
    the same batch gives a non-finite loss, which the training loop's non-finite policy reports."""
    head = tiny_head()
    h = [torch.randn(B, H) for _ in range(3)]
    h[0][1] = float("nan")  # one prompt's representation
    with pytest.raises(ValueError, match="concentration"):
        VRMObjective(head, num_samples=2, validate_distributions=True)(*h)
    assert not torch.isfinite(VRMObjective(head, num_samples=2)(*h).loss)
