"""Training objectives over pooled representations: Bradley-Terry and the VRM negative ELBO.

Both take h(x) (B, H), h(x, y+) (B, H), h(x, y-) (B, H) and return a :class:`ObjectiveOutput` whose
``loss`` is the mean over pairs. The VRM objective is a Pyro program (``model`` and ``guide`` with
``pyro.plate`` over pairs, sample sites ``w``, ``z_chosen``, ``z_rejected`` and the observed
``preference``), and its loss is a Pyro ELBO's ``differentiable_loss``, so Lightning owns the optimizer.
The inference and prior networks run once per step (:class:`VariationalParams`); the guide samples from
their outputs, and the logged KL terms and the deterministic rewards read the same tensors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO
from torch import nn

from vrm.models.heads import BTHead, VRMHead

#: Sample-site names, defined once for model and guide.
SITE_W, SITE_Z_CHOSEN, SITE_Z_REJECTED, SITE_PREFERENCE = "w", "z_chosen", "z_rejected", "preference"
PLATE = "pairs"
log = logging.getLogger(__name__)
#: (rated aspects, heads) pairs already warned about (see :func:`trained_aspects`).
_WARNED_ASPECTS: set[tuple[int, int]] = set()

#: poutine.scale refuses a scale of 0, so annealed KL weights start from this floor.
KL_SCALE_FLOOR = 1e-6


@dataclass
class VariationalParams:
    """Distribution parameters of one batch of B pairs (see :meth:`VRMObjective.variational_params`)."""

    alpha_q: torch.Tensor | None  # (B, K) posterior concentration of w (None: weight latent ablated)
    alpha_p: torch.Tensor | None  # (B, K) prior concentration of w
    mu: torch.Tensor  # (2B, d) posterior means of z: the B chosen responses, then the B rejected
    sigma: torch.Tensor  # (2B, d) posterior standard deviations of z


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar, mean over pairs
    reward_chosen: torch.Tensor  # (B,) deterministic rewards
    reward_rejected: torch.Tensor  # (B,)
    #: Extra scalar terms to log (already means over pairs).
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    #: (B, K) E[w | x] (VRM only), for logging the entropy and for evaluation.
    weights: torch.Tensor | None = None


def centering_loss(reward_chosen: torch.Tensor, reward_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of (r+ + r-)^2 on the deterministic rewards (TRL's ``center_rewards_coefficient`` term)."""
    return ((reward_chosen + reward_rejected) ** 2).mean()


ASPECT_LOSSES = ("bt", "mse", "diff")
#: What trains the rated objectives' scores: the likelihood and the aspect loss (``joint``), or the aspect loss only.
SCORE_TRAINING = ("joint", "aspects")


def aspect_loss(s_pos: torch.Tensor, s_neg: torch.Tensor, a_pos: torch.Tensor, a_neg: torch.Tensor,
                kind: str = "bt") -> torch.Tensor:
    """L_aspect of (B, A) aspect scores against (B, A) ratings of chosen and rejected; NaN ratings are ignored.

    ``bt``: -log sigmoid(sign(a+ - a-) (s+ - s-)) over the aspects rated differently on both sides; ``mse``: the
    mean of (s - a)^2 over every rating; ``diff``: the mean of ((s+ - s-) - (a+ - a-))^2 over the aspects rated on
    both sides (the ratings' scale, not their offset, which cancels in every comparison).
    """
    if kind == "diff":
        valid = ~torch.isnan(a_pos) & ~torch.isnan(a_neg)
        err = (s_pos - s_neg) - torch.nan_to_num(a_pos - a_neg)
        return torch.where(valid, err ** 2, torch.zeros_like(err)).sum() / valid.sum().clamp_min(1)
    if kind == "mse":
        terms = [(s - a) ** 2 for s, a in ((s_pos, a_pos), (s_neg, a_neg))]
        valid = [~torch.isnan(a) for a in (a_pos, a_neg)]
        total = sum(torch.where(v, t, torch.zeros_like(t)).sum() for t, v in zip(terms, valid))
        count = sum(v.sum() for v in valid)
        return total / count.clamp_min(1)
    valid = ~torch.isnan(a_pos) & ~torch.isnan(a_neg) & (a_pos != a_neg)
    sign = torch.sign(torch.nan_to_num(a_pos - a_neg))
    loss = -F.logsigmoid(sign * (s_pos - s_neg))
    return torch.where(valid, loss, torch.zeros_like(loss)).sum() / valid.sum().clamp_min(1)


def trained_aspects(num_aspects: int, num_heads: int, heads: str) -> int:
    """How many of the rated aspects train heads: all of them, or the first ``num_heads`` when there are more
    ratings than heads (warned once per combination, naming the setting to raise)."""
    if num_aspects > num_heads and (num_aspects, num_heads) not in _WARNED_ASPECTS:
        _WARNED_ASPECTS.add((num_aspects, num_heads))
        log.warning("the data rates %d aspects but %s=%d: only the first %d ratings train the heads (raise %s to "
                    "use them all, or set model.aspect_coef=0 to use none)", num_aspects, heads, num_heads,
                    num_heads, heads)
    return min(num_aspects, num_heads)


def _check_aspect_loss(kind: str) -> None:
    if kind not in ASPECT_LOSSES:
        raise ValueError(f"aspect_loss={kind!r} is not one of {ASPECT_LOSSES}")


class BTObjective(nn.Module):
    """-log sigmoid(r+ - r-) (+ optional reward centering), plus ``aspect_coef`` L_aspect on the head's aspect heads
    when it has them (``bt_aspect_heads``) and the batch carries ratings (the same loss as VRM's)."""

    def __init__(self, head: BTHead, center_coef: float = 0.0, tau: float = 1.0, aspect_coef: float = 1.0,
                 aspect_loss: str = "bt"):
        super().__init__()
        _check_aspect_loss(aspect_loss)
        self.head, self.center_coef, self.tau = head, center_coef, tau
        self.aspect_coef, self.aspect_loss = aspect_coef, aspect_loss

    def forward(self, h_x, h_chosen, h_rejected, *, progress: float = 1.0, aspects=None,
                groups: torch.Tensor | None = None) -> ObjectiveOutput:
        """``groups`` (the prompts' group labels) are read only by a VRM with ``weight_posterior=groups``."""
        out = self.head(torch.cat([h_chosen, h_rejected]))
        r_pos, r_neg = out.reward.chunk(2)
        nll = -F.logsigmoid((r_pos - r_neg) / self.tau).mean()
        loss = nll
        terms = {"nll": nll}
        if self.center_coef:
            terms["center"] = centering_loss(r_pos, r_neg)
            loss = loss + self.center_coef * terms["center"]
        if out.objective_scores is not None and aspects is not None and aspects[0].shape[-1] > 0 \
                and self.aspect_coef:
            used = trained_aspects(aspects[0].shape[-1], out.objective_scores.shape[-1], "model.bt_aspect_heads")
            s_pos, s_neg = (s[:, :used] for s in out.objective_scores.chunk(2))
            terms["aspect"] = aspect_loss(s_pos, s_neg, *(a[:, :used] for a in aspects), kind=self.aspect_loss)
            loss = loss + self.aspect_coef * terms["aspect"]
        return ObjectiveOutput(loss, r_pos, r_neg, {k: v.detach() for k, v in terms.items()})


def annealed(beta: float, progress: float) -> float:
    """Linear KL annealing: beta * progress, floored at :data:`KL_SCALE_FLOOR` (progress in [0, 1])."""
    return max(beta * min(max(progress, 0.0), 1.0), KL_SCALE_FLOOR)


def dirichlet_entropy_of_mean(weights: torch.Tensor) -> torch.Tensor:
    """(B,) Shannon entropy of the weight vectors E[w | x]."""
    return -(weights * weights.clamp_min(1e-12).log()).sum(-1)


class VRMObjective(nn.Module):
    """Negative ELBO of the spec, per pair:

        -E_q[log sigmoid((r+ - r-) / tau)] + beta_w KL(q(w) || p(w)) + beta_z (KL(q(z+)||p(z)) + KL(q(z-)||p(z)))
        + lambda_aspect L_aspect + lambda_center (r+ + r-)^2

    The KL terms are analytic (TraceMeanField_ELBO), the expectation is a Monte Carlo average over
    ``num_samples`` reparameterised, vectorised particles. The aspect and centering terms are
    deterministic functions of the posterior means, added outside the Pyro program.
    """

    def __init__(self, head: VRMHead, *, num_samples: int = 4, beta_w: float = 0.05, beta_z: float = 0.05,
                 tau: float = 1.0, center_coef: float = 0.0, aspect_coef: float = 1.0, aspect_loss: str = "bt",
                 group_coef: float = 1.0,
                 score_training: str = "joint", validate_distributions: bool = False):
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples} must be >= 1")
        if min(beta_w, beta_z) < 0:
            raise ValueError(f"beta_w={beta_w} and beta_z={beta_z} must be >= 0")
        if tau <= 0:
            raise ValueError(f"tau={tau} must be > 0")
        _check_aspect_loss(aspect_loss)
        if score_training not in SCORE_TRAINING:
            raise ValueError(f"score_training={score_training!r} is not one of {SCORE_TRAINING}")
        self.head = head
        self.score_training = score_training
        #: Rated objectives whose scores the likelihood must not train in the current step (score_training=aspects).
        self._frozen_scores = 0
        self.beta_w, self.beta_z, self.tau = beta_w, beta_z, tau
        self.center_coef, self.aspect_coef, self.aspect_loss = center_coef, aspect_coef, aspect_loss
        self.group_coef = group_coef
        self.num_samples = num_samples
        self.validate_distributions = validate_distributions
        self.elbo = TraceMeanField_ELBO(num_particles=num_samples, vectorize_particles=True,
                                        max_plate_nesting=1)

    @property
    def config(self):
        return self.head.config

    # -- the Pyro program -----------------------------------------------------------------------
    def variational_params(self, h_x, h_chosen, h_rejected) -> VariationalParams:
        """The inference and prior networks' outputs for a batch of pairs, computed once per step: the guide
        draws from them, the KL terms and the deterministic rewards read them."""
        cfg = self.config
        alpha_q = self.head.posterior_concentration(h_x, h_chosen, h_rejected) if cfg.use_weight_latent else None
        alpha_p = self.head.prior_concentration(h_x) if cfg.use_weight_latent else None
        mu, sigma = self.head.feature_posterior_params(torch.cat([h_chosen, h_rejected]))
        return VariationalParams(alpha_q, alpha_p, mu, sigma)

    def _reward(self, w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        scores = self.head.score_head(z)
        if self._frozen_scores:  # the likelihood's gradient stops at the rated objectives' scores
            a = self._frozen_scores
            scores = torch.cat([scores[..., :a].detach(), scores[..., a:]], dim=-1)
        return self.head.reward_scale() * (w * scores).sum(-1)

    def model(self, params: VariationalParams, scale_w: float, scale_z: float):
        cfg, n = self.config, params.mu.shape[0] // 2
        d = cfg.feature_dim
        with pyro.plate(PLATE, n):
            if cfg.use_weight_latent:
                with poutine.scale(scale=scale_w):
                    w = pyro.sample(SITE_W, dist.Dirichlet(params.alpha_p))
            else:
                w = params.mu.new_full((n, cfg.num_objectives), 1.0 / cfg.num_objectives)
            if cfg.use_feature_latent:
                prior_z = dist.Normal(params.mu.new_zeros(n, d), params.mu.new_ones(n, d)).to_event(1)
                with poutine.scale(scale=scale_z):
                    z_pos = pyro.sample(SITE_Z_CHOSEN, prior_z)
                    z_neg = pyro.sample(SITE_Z_REJECTED, prior_z)
            else:
                z_pos, z_neg = params.mu[:n], params.mu[n:]
            logits = (self._reward(w, z_pos) - self._reward(w, z_neg)) / self.tau
            pyro.sample(SITE_PREFERENCE, dist.Bernoulli(logits=logits), obs=torch.ones_like(logits))

    def guide(self, params: VariationalParams, scale_w: float, scale_z: float):
        cfg, n = self.config, params.mu.shape[0] // 2
        with pyro.plate(PLATE, n):
            if cfg.use_weight_latent:
                with poutine.scale(scale=scale_w):
                    pyro.sample(SITE_W, dist.Dirichlet(params.alpha_q))
            if cfg.use_feature_latent:
                with poutine.scale(scale=scale_z):
                    for site, rows in ((SITE_Z_CHOSEN, slice(0, n)), (SITE_Z_REJECTED, slice(n, 2 * n))):
                        pyro.sample(site, dist.Normal(params.mu[rows], params.sigma[rows]).to_event(1))

    # -- analytic terms for logging -------------------------------------------------------------
    def kl_terms(self, params: VariationalParams) -> dict[str, torch.Tensor]:
        """Mean-over-pairs KL(q(w)||p(w)) and KL(q(z+)||p(z)) + KL(q(z-)||p(z)) (unweighted)."""
        terms = {}
        n = params.mu.shape[0] // 2
        if self.config.use_weight_latent:
            q_w, p_w = dist.Dirichlet(params.alpha_q), dist.Dirichlet(params.alpha_p)
            terms["kl_w"] = torch.distributions.kl_divergence(q_w, p_w).mean()
        if self.config.use_feature_latent:
            mu, sigma = params.mu, params.sigma
            kl_z = (0.5 * (sigma ** 2 + mu ** 2 - 1.0) - sigma.log()).sum(-1)  # (2B,): chosen rows, then rejected
            terms["kl_z"] = kl_z.sum() / n
        return terms

    def aspect_term(self, h_chosen, h_rejected, aspects: tuple[torch.Tensor, torch.Tensor],
                    scores: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """L_aspect on g_k(mu_z) for the first A objectives (the first K ratings when A > K, with a warning); unrated
        (NaN) aspects are ignored. ``scores``: the (B, K) g(mu_z) of chosen and rejected when already computed (else
        from ``h_chosen``, ``h_rejected``)."""
        num_aspects = trained_aspects(aspects[0].shape[-1], self.config.num_objectives, "model.num_objectives")
        a_pos, a_neg = (a[:, :num_aspects] for a in aspects)  # (B, A) each, NaN where missing
        if scores is None:
            scores = tuple(self.head.score_head(self.head.feature_posterior_params(h)[0])
                           for h in (h_chosen, h_rejected))
        s_pos, s_neg = (s[:, :num_aspects] for s in scores)
        return aspect_loss(s_pos, s_neg, a_pos, a_neg, kind=self.aspect_loss)

    def group_term(self, h_x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """``weight_posterior=groups``: the mean cross-entropy of the prompt-group classifier over the prompts with a
        group label (``groups`` (B,), -1: unlabelled, ignored); 0 when the batch has none."""
        labelled = groups >= 0
        if not bool(labelled.any()):
            return h_x.new_zeros(())
        return F.cross_entropy(self.head.group_logits(h_x[labelled]), groups[labelled].long())

    def forward(self, h_x, h_chosen, h_rejected, *, progress: float = 1.0,
                aspects: tuple[torch.Tensor, torch.Tensor] | None = None,
                groups: torch.Tensor | None = None) -> ObjectiveOutput:
        n = h_x.shape[0]
        scale_w, scale_z = annealed(self.beta_w, progress), annealed(self.beta_z, progress)
        use_aspects = aspects is not None and aspects[0].shape[-1] > 0 and bool(self.aspect_coef)
        self._frozen_scores = min(aspects[0].shape[-1], self.config.num_objectives) \
            if use_aspects and self.score_training == "aspects" else 0
        with pyro.validation_enabled(self.validate_distributions):
            params = self.variational_params(h_x, h_chosen, h_rejected)
            loss = self.elbo.differentiable_loss(self.model, self.guide, params, scale_w, scale_z) / n
            with torch.no_grad():  # logged only
                terms = self.kl_terms(params)
        # The ELBO is exactly the MC likelihood term plus the scaled analytic KLs; recover the former.
        terms["nll"] = loss.detach() - scale_w * terms.get("kl_w", 0.0) - scale_z * terms.get("kl_z", 0.0)
        # The deterministic rewards need gradients only for the extra losses.
        with torch.set_grad_enabled(torch.is_grad_enabled() and (bool(self.center_coef) or use_aspects)):
            weights = self.head.scoring_weights(h_x, params.alpha_q, params.alpha_p)
            out = self.head.rewards(weights, params.mu)
        r_pos, r_neg = out.reward[:n], out.reward[n:]
        if self.center_coef:
            terms["center"] = centering_loss(r_pos, r_neg)
            loss = loss + self.center_coef * terms["center"]
        if use_aspects:
            scores = out.objective_scores
            if self._frozen_scores and self.config.use_feature_latent:
                # The ratings alone train the rated scores, so they also set the features' noise: the aspect loss
                # reads a reparameterised draw of z, not its mean (else nothing but KL_z would shape sigma, and its
                # noise would only blur the likelihood).
                scores = self.head.score_head(params.mu + params.sigma * torch.randn_like(params.sigma))
            terms["aspect"] = self.aspect_term(h_chosen, h_rejected, aspects, scores=(scores[:n], scores[n:]))
            loss = loss + self.aspect_coef * terms["aspect"]
        if self.config.weight_posterior == "groups" and groups is not None:
            terms["group"] = self.group_term(h_x, groups)
            loss = loss + self.group_coef * terms["group"]
        terms["entropy_w"] = dirichlet_entropy_of_mean(out.weights).mean()
        terms["beta_w"] = torch.tensor(scale_w)
        terms["beta_z"] = torch.tensor(scale_z)
        terms = {k: v.detach() if torch.is_tensor(v) else v for k, v in terms.items()}
        return ObjectiveOutput(loss, r_pos, r_neg, terms, weights=out.weights)
