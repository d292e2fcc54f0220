"""The reward heads of the exportable model: the VRM's inference networks and score head, and the BT head.

Like :mod:`vrm.models.modeling_vrm`, which imports it relatively (an export with remote code carries both), this
file imports only torch and transformers. Shapes: B = sequences, H = encoder hidden size, K = objectives, d = feature size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

#: The Bradley-Terry head: ``linear`` (a bias-free linear map of h(x, y)) or ``mlp`` (VRM's head capacity).
BT_HEADS = ("linear", "mlp")
#: What q(w | x) reads: the ``prompt``, the ``pair`` (prompt and both responses), the prompt's nearest cluster, or
#: the prompt's predicted group (a classifier of the training data's ``subset`` labels, read from h(x)).
WEIGHT_POSTERIORS = ("prompt", "pair", "clusters", "groups")
#: The VRM reward's global scale: ``fixed`` (r = w^T g) or ``learned`` (r = exp(s) w^T g, s one scalar parameter).
REWARD_SCALES = ("fixed", "learned")


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


@dataclass
class VRMHeadOutput:
    """Deterministic head quantities for a batch of (prompt, response) representations."""

    reward: torch.Tensor  # (B,)
    weights: torch.Tensor | None = None  # (B, K) E[w | x]
    objective_scores: torch.Tensor | None = None  # (B, K) g(mu_z)


class VRMHead(nn.Module):
    """Inference networks and score head of the VRM (the Pyro program uses the same modules)."""

    def __init__(self, config: PretrainedConfig, hidden_size: int):  # a VRMConfig
        super().__init__()
        self.config = config
        k, d, hid = config.num_objectives, config.feature_dim, config.head_hidden_dim
        posterior_in = hidden_size * (3 if config.weight_posterior == "pair" else 1)
        if config.weight_posterior == "groups":  # the posterior reads the prompt's predicted group probabilities
            num_groups = len(config.prompt_groups)
            self.group_classifier = nn.Linear(hidden_size, num_groups)
            posterior_in = num_groups
        self.weight_posterior = _mlp(posterior_in, hid, k)
        if config.weight_posterior == "clusters":  # the posterior reads the mean h(x) of the prompt's cluster
            m = config.prompt_clusters
            self.register_buffer("prompt_centres", torch.zeros(m, hidden_size))  # (M, H) unit directions
            self.register_buffer("prompt_means", torch.zeros(m, hidden_size))  # (M, H) mean h(x) of each cluster
        self.weight_prior = _mlp(hidden_size, hid, k) if config.weight_prior == "learned" else None
        self.feature_posterior = nn.Linear(hidden_size, 2 * d)
        self.score_head = nn.Linear(d, k) if config.score_head == "linear" else _mlp(d, hid, k)
        learned_scale = getattr(config, "reward_scale", "fixed") == "learned"
        self.log_reward_scale = nn.Parameter(torch.zeros(())) if learned_scale else None

    def reward_scale(self) -> torch.Tensor | float:
        """exp(s), the reward's learned global scale (1.0 when it is fixed)."""
        return 1.0 if self.log_reward_scale is None else self.log_reward_scale.exp()

    def concentration(self, logits: torch.Tensor) -> torch.Tensor:
        c = self.config
        return (F.softplus(logits) + c.concentration_eps).clamp(c.concentration_min, c.concentration_max)

    def posterior_concentration(self, h_x: torch.Tensor, h_chosen: torch.Tensor | None = None,
                                h_rejected: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) alpha_q: from the prompt, or (pair posterior) from prompt and both responses."""
        if self.config.weight_posterior == "pair":
            return self.concentration(self.weight_posterior(torch.cat([h_x, h_chosen, h_rejected], dim=-1)))
        if self.config.weight_posterior == "clusters":
            return self.concentration(self.weight_posterior(self.prompt_means[self.prompt_cluster(h_x)]))
        if self.config.weight_posterior == "groups":  # the classifier learns from the group labels alone (detached)
            return self.concentration(self.weight_posterior(self.group_probabilities(h_x).detach()))
        return self.concentration(self.weight_posterior(h_x))

    def group_logits(self, h_x: torch.Tensor) -> torch.Tensor:
        """(B, G) logits of the prompt's group (``weight_posterior=groups``), G = ``len(config.prompt_groups)``."""
        return self.group_classifier(h_x)

    def group_probabilities(self, h_x: torch.Tensor) -> torch.Tensor:
        """(B, G) predicted probabilities of the prompt's group (``weight_posterior=groups``)."""
        return torch.softmax(self.group_logits(h_x), dim=-1)

    def prompt_cluster(self, h_x: torch.Tensor) -> torch.Tensor:
        """(B,) index of the nearest prompt centre (cosine) of each prompt."""
        return (F.normalize(h_x, dim=-1) @ self.prompt_centres.T).argmax(dim=-1)

    def prompt_clusters_fitted(self) -> bool:
        return bool(self.prompt_centres.abs().sum() > 0)

    @torch.no_grad()
    def fit_prompt_clusters(self, h_x: torch.Tensor, seed: int = 0, iterations: int = 50, restarts: int = 10
                            ) -> torch.Tensor:
        """Spherical k-means of the prompts ``h_x`` (N, H) into ``prompt_centres`` (the best of ``restarts`` k-means++
        starts drawn from ``seed``: highest total cosine to the centres) and each cluster's mean h(x) into
        ``prompt_means``; returns the (N,) cluster of each prompt."""
        m = self.config.prompt_clusters
        points = F.normalize(h_x.detach().to(self.prompt_centres), dim=-1)
        if points.shape[0] < m:
            raise ValueError(f"prompt_clusters={m} needs at least {m} training prompts, got {points.shape[0]}")
        generator = torch.Generator().manual_seed(seed)
        runs = [_spherical_kmeans(points, m, iterations, generator) for _ in range(restarts)]
        centres = max(runs, key=lambda c: float((points @ c.T).max(dim=-1).values.sum()))
        self.prompt_centres.copy_(centres)
        labels = (points @ centres.T).argmax(dim=-1)
        raw = h_x.detach().to(self.prompt_means)
        counts = torch.bincount(labels, minlength=m).clamp_min(1).to(raw)
        self.prompt_means.copy_(torch.zeros_like(self.prompt_means).index_add_(0, labels, raw) / counts[:, None])
        return labels

    def prior_concentration(self, h_x: torch.Tensor) -> torch.Tensor:
        """(B, K) alpha_p: fixed symmetric alpha0, or the prompt-conditioned prior network."""
        if self.weight_prior is not None:
            return self.concentration(self.weight_prior(h_x))
        k = self.config.num_objectives
        return h_x.new_full((h_x.shape[0], k), float(self.config.prior_concentration))

    def scoring_weights(self, h_x: torch.Tensor, alpha_q: torch.Tensor | None = None,
                        alpha_p: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) E[w | x] used at scoring time (uniform when the weight latent is ablated). ``alpha_q``,
        ``alpha_p``: the posterior and prior concentrations when already computed (else from ``h_x``)."""
        if not self.config.use_weight_latent:
            k = self.config.num_objectives
            return h_x.new_full((h_x.shape[0], k), 1.0 / k)
        if self.config.scores_from_prior:
            alpha = alpha_p if alpha_p is not None else self.prior_concentration(h_x)
        else:  # the prompt posterior (a pair posterior scores from the prior)
            alpha = alpha_q if alpha_q is not None else self.posterior_concentration(h_x)
        return alpha / alpha.sum(dim=-1, keepdim=True)

    def feature_posterior_params(self, h_xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, d) mean and (B, d) standard deviation of q(z | x, y)."""
        mu, raw_scale = self.feature_posterior(h_xy).chunk(2, dim=-1)
        return mu, F.softplus(raw_scale) + 1e-4

    def forward(self, h_xy: torch.Tensor, h_x: torch.Tensor) -> VRMHeadOutput:
        """Deterministic outputs; ``h_xy`` may hold several responses per prompt ((R * B, H) for (B, H) prompts,
        response-major, as training's chosen-then-rejected rows): the weights are computed once per prompt."""
        return self.rewards(self.scoring_weights(h_x), self.feature_posterior_params(h_xy)[0])

    def rewards(self, weights: torch.Tensor, mu: torch.Tensor) -> VRMHeadOutput:
        """r = exp(s) E[w | x]^T g(mu) (exp(s) = 1 unless the scale is learned) from (B, K) weights and (R * B, d) posterior means (R responses per prompt)."""
        scores = self.score_head(mu)
        repeats = mu.shape[0] // weights.shape[0]
        row_weights = weights if repeats == 1 else weights.repeat(repeats, 1)
        reward = self.reward_scale() * (row_weights * scores).sum(-1)
        return VRMHeadOutput(reward=reward, weights=weights, objective_scores=scores)

    def sample_rewards(self, h_xy: torch.Tensor, h_x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """(S, B) rewards with w and z drawn from the posterior (prior net for a pair posterior)."""
        alpha = self.prior_concentration(h_x) if self.config.scores_from_prior else \
            self.posterior_concentration(h_x)
        mu, sigma = self.feature_posterior_params(h_xy)
        w = torch.distributions.Dirichlet(alpha).sample((num_samples,))
        if not self.config.use_weight_latent:
            w = torch.full_like(w, 1.0 / w.shape[-1])
        z = torch.distributions.Normal(mu, sigma).sample((num_samples,)) if self.config.use_feature_latent \
            else mu.expand(num_samples, *mu.shape)
        return self.reward_scale() * (w * self.score_head(z)).sum(-1)


def _spherical_kmeans(points: torch.Tensor, m: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """(M, H) unit centres of unit ``points`` (N, H): a k-means++ start, then ``iterations`` Lloyd steps on cosine."""
    centres = points[torch.randint(points.shape[0], (1,), generator=generator)]
    for _ in range(1, m):  # the next centre far (in cosine) from the chosen ones
        distance = (1 - points @ centres.T).min(dim=-1).values.clamp_min(0) + 1e-12
        centres = torch.cat([centres, points[torch.multinomial(distance, 1, generator=generator)]])
    for _ in range(iterations):
        labels = (points @ centres.T).argmax(dim=-1)
        sums = torch.zeros_like(centres).index_add_(0, labels, points)
        empty = sums.norm(dim=-1) == 0
        centres = torch.where(empty[:, None], centres, F.normalize(sums, dim=-1))
    return centres


class BTHead(nn.Module):
    """The Bradley-Terry head: a map of the pooled representation to a scalar reward.

    ``linear``: one bias-free linear map (as ``LlamaForSequenceClassification``'s score). ``mlp``: a hidden layer of
    ``hidden_dim`` units (GELU) first, VRM's head capacity. With ``num_aspects`` A > 0 (``mlp`` only), A aspect heads
    read the same hidden layer, so training them on rated aspects shapes the representation the reward reads (the
    multi-objective heads of ArmoRM, with the BT reward on top); their scores are ``objective_scores``. No bias on the
    reward: it cancels in r+ - r-, so it would never be trained.
    """

    def __init__(self, hidden_size: int, kind: str = "linear", hidden_dim: int = 128, num_aspects: int = 0):
        super().__init__()
        if kind not in BT_HEADS:
            raise ValueError(f"bt_head={kind!r} is not one of {BT_HEADS}")
        self.trunk = None if kind == "linear" else nn.Sequential(nn.Linear(hidden_size, hidden_dim), nn.GELU())
        width = hidden_size if self.trunk is None else hidden_dim
        self.score = nn.Linear(width, 1, bias=False)
        self.aspect_scores = nn.Linear(width, num_aspects) if num_aspects else None

    def forward(self, h_xy: torch.Tensor, h_x: torch.Tensor | None = None) -> VRMHeadOutput:
        features = h_xy if self.trunk is None else self.trunk(h_xy)
        aspects = None if self.aspect_scores is None else self.aspect_scores(features)
        return VRMHeadOutput(reward=self.score(features).squeeze(-1), objective_scores=aspects)
