"""The robustness experiment's compared models (training overrides per method) and its grids (methods x settings x
seeds); ``run.py`` runs and summarises them."""

from __future__ import annotations

from dataclasses import dataclass

#: The VRM defaults before issue 20, and the candidate of issue 20 (each key against the other's value).
VRM_V1 = ("model.num_objectives=8", "model.aspect_loss=bt", "model.reward_scale=fixed", "model.score_training=joint",
          "model.beta_w=0.05", "model.head_lr=null", "model.weight_posterior=prompt")
VRM_RATED = ("model.num_objectives=5", "model.aspect_loss=diff", "model.reward_scale=learned",
             "model.score_training=aspects", "model.beta_w=0.001", "model.head_lr=0.01", "model.weight_posterior=prompt")
#: The second default of issue 20, with the weights read from the prompt's h(x) (before the prompt-group posterior
#: became the default); the methods built on it ran with it.
VRM_PROMPT = ("model=vrm", "model.weight_posterior=prompt")
#: The compared models: name -> training overrides (``model=vrm_v1``: the VRM defaults before issue 20, under which
#: every VRM cell before it ran) (on benchmark v2 the data carries 5 aspect ratings, which VRM's
#: aspect loss uses by default: ``model.aspect_coef=0`` switches it off).
METHODS: dict[str, tuple[str, ...]] = {
    "bt": ("model=bt",),
    "bt_mlp": ("model=bt", "model.bt_head=mlp"),
    "bt_aspects": ("model=bt", "model.bt_head=mlp", "model.bt_aspect_heads=5"),
    "vrm": ("model=vrm_v1", "model.aspect_coef=0"),
    "vrm_aspects": ("model=vrm_v1",),
    "vrm_aspects_no_w": ("model=vrm_v1", "model.use_weight_latent=false"),
    "vrm_aspects_no_z": ("model=vrm_v1", "model.use_feature_latent=false"),
    "vrm_aspects_no_latents": ("model=vrm_v1", "model.use_weight_latent=false", "model.use_feature_latent=false"),
    # variants searched for a VRM that wins on shifted (grid "search")
    "vrm_aspects_beta_z_0.001": ("model=vrm_v1", "model.beta_z=0.001"),
    "vrm_aspects_sparse_w": ("model=vrm_v1", "model.prior_concentration=0.3"),
    "vrm_aspects_coef_3": ("model=vrm_v1", "model.aspect_coef=3"),
    # the VRM code with both latents off and no aspects: where the fine-tuned VRM trails BT, is it the latents?
    "vrm_no_latents": ("model=vrm_v1", "model.aspect_coef=0", "model.use_weight_latent=false",
                       "model.use_feature_latent=false"),
    # longer training of the best baseline and of VRM: are the heads undertrained at 6 epochs?
    "bt_mlp_20ep": ("model=bt", "model.bt_head=mlp", "trainer.max_epochs=20"),
    "bt_aspects_20ep": ("model=bt", "model.bt_head=mlp", "model.bt_aspect_heads=5", "trainer.max_epochs=20"),
    "vrm_aspects_20ep": ("model=vrm_v1", "trainer.max_epochs=20"),
    # issue 20: weights that learn, a feature latent the cue cannot ride (grids "latents_*"). The old default, spelled
    # out (so it stays the same when the default changes), and the candidate new default with its ablations.
    "vrm_v1": ("model=vrm", *VRM_V1),
    "vrm_rated": ("model=vrm", *VRM_RATED),
    "vrm_rated_no_z": ("model=vrm", *VRM_RATED, "model.use_feature_latent=false"),
    "vrm_rated_no_w": ("model=vrm", *VRM_RATED, "model.use_weight_latent=false"),
    "vrm_rated_no_latents": ("model=vrm", *VRM_RATED, "model.use_weight_latent=false",
                             "model.use_feature_latent=false"),
    "vrm_rated_learned_prior": ("model=vrm", *VRM_RATED, "model.weight_prior=learned"),
    "vrm_rated_k8": ("model=vrm", *VRM_RATED, "model.num_objectives=8"),
    "vrm_rated_lr_0.001": ("model=vrm", *VRM_RATED, "model.head_lr=0.001"),
    # the scores also learn from the likelihood (score_training=joint): the new default
    "vrm_rated_joint": ("model=vrm", *VRM_RATED, "model.score_training=joint"),
    "vrm_rated_joint_no_latents": ("model=vrm", *VRM_RATED, "model.score_training=joint",
                                   "model.use_weight_latent=false", "model.use_feature_latent=false"),
    "vrm_rated_joint_no_w": ("model=vrm", *VRM_RATED, "model.score_training=joint", "model.use_weight_latent=false"),
    "vrm_rated_joint_no_z": ("model=vrm", *VRM_RATED, "model.score_training=joint", "model.use_feature_latent=false"),
    "vrm_rated_joint_no_ratings": ("model=vrm", *VRM_RATED, "model.score_training=joint", "model.aspect_coef=0"),
    "bt_mlp_lr_0.01": ("model=bt", "model.bt_head=mlp", "optim.head_lr=0.01"),
    "bt_aspects_lr_0.01": ("model=bt", "model.bt_head=mlp", "model.bt_aspect_heads=5", "optim.head_lr=0.01"),
    "bt_lr_0.01": ("model=bt", "optim.head_lr=0.01"),
    # BT with aspect heads trained by the VRM's new aspect loss (conf/model/bt.yaml keeps `bt` for BT)
    "bt_aspects_diff_lr_0.01": ("model=bt", "model.bt_head=mlp", "model.bt_aspect_heads=5", "model.aspect_loss=diff",
                                "optim.head_lr=0.01"),
    # what caps the weight recovery (grids "ceiling*"): the new default with a richer score head, wider features,
    # scores tied harder to the ratings, longer training
    "vrm_g_mlp": (*VRM_PROMPT, "model.score_head=mlp"),
    "vrm_feature_dim_64": (*VRM_PROMPT, "model.feature_dim=64"),
    "vrm_aspect_coef_3": (*VRM_PROMPT, "model.aspect_coef=3"),
    "vrm_20ep": (*VRM_PROMPT, "trainer.max_epochs=20"),
    # a prompt-to-weights map of less capacity (narrower heads, stronger decoupled weight decay)
    "vrm_hidden_32": (*VRM_PROMPT, "model.head_hidden_dim=32"),
    "vrm_wd_0.1": (*VRM_PROMPT, "optim.weight_decay=0.1"),
    "vrm_wd_1": (*VRM_PROMPT, "optim.weight_decay=1.0"),
    # one weight posterior per prompt cluster (k-means of the frozen prompt features): what the diagnostic points to
    "vrm_clusters": ("model=vrm", "model.weight_posterior=clusters"),
    # the weights read the prompt's predicted group: a classifier of the data's subset labels (here the category),
    # trained on them (vrm_rated_joint is the same model with the weights read from the prompt's h(x))
    "vrm_groups": ("model=vrm", "model.weight_posterior=groups"),
    # ... with the heads learning faster, more Monte Carlo samples, or narrower inference networks
    "vrm_groups_head_lr_0.03": ("model=vrm", "model.weight_posterior=groups", "model.head_lr=0.03"),
    "vrm_groups_samples_16": ("model=vrm", "model.weight_posterior=groups", "model.num_samples=16"),
    "vrm_groups_hidden_32": ("model=vrm", "model.weight_posterior=groups", "model.head_hidden_dim=32"),
    "vrm_groups_samples_32": ("model=vrm", "model.weight_posterior=groups", "model.num_samples=32"),
    "vrm_groups_samples_16_lr_0.03": ("model=vrm", "model.weight_posterior=groups", "model.num_samples=16",
                                      "model.head_lr=0.03"),
    "vrm_groups_beta_w_0.0001": ("model=vrm", "model.weight_posterior=groups", "model.beta_w=0.0001"),
    # without the ratings: what the weights show when only the product w^T g is tied to the labels
    "vrm_groups_no_ratings": ("model=vrm", "model.weight_posterior=groups", "model.aspect_coef=0"),
}
BT_METHODS = ("bt", "bt_mlp", "bt_aspects", "bt_mlp_20ep", "bt_aspects_20ep", "bt_mlp_lr_0.01", "bt_aspects_lr_0.01",
              "bt_lr_0.01", "bt_aspects_diff_lr_0.01")
#: Every method of the frozen curves, in table order.
FROZEN_METHODS = ("bt", "bt_mlp", "bt_aspects", "vrm", "vrm_aspects", "vrm_aspects_no_w", "vrm_aspects_no_z",
                  "vrm_aspects_no_latents")
#: The default setting of the frozen grids: cue strength and training pairs (the size curve's other points and the
#: strength curve's other points vary one of them).
DEFAULT_STRENGTH, DEFAULT_TRAIN = 0.75, 400
#: Pairs of the validation, test and shifted splits of the frozen grids.
FROZEN_EVAL_SIZES = (150, 200, 200)


@dataclass(frozen=True)
class Grid:
    """One sweep: methods x settings (cue strength, training pairs, seeds), with the shared training overrides.

    ``cells`` names the folder of its cells: grids with the same cells folder share the cells of equal settings
    (the strength and size curves meet at the default setting)."""

    name: str
    cells: str
    methods: tuple[str, ...]
    settings: tuple[tuple[float, int, tuple[int, ...]], ...]
    train: tuple[str, ...]
    eval_sizes: tuple[int, int, int] = FROZEN_EVAL_SIZES  # validation, test, shifted pairs
    notes: str = ""


FROZEN = ("encoder=minilm", "encoder.train_mode=frozen", "trainer.max_epochs=6", "data.batch_size=16")
FINETUNE = ("encoder=minilm", "encoder.train_mode=full", "trainer.max_epochs=1", "data.batch_size=16")
#: Seeds at the default setting, and at the other points of the curves (cut to fit two shared CPU cores: encoding a
#: new data draw with the frozen MiniLM takes a minute or two there, training all heads on it under one).
SEEDS = CURVE_SEEDS = (0, 1, 2, 3, 4)
GRIDS: dict[str, Grid] = {
    "strength": Grid("strength", "frozen", FROZEN_METHODS,
                     ((DEFAULT_STRENGTH, DEFAULT_TRAIN, SEEDS),
                      *((p, DEFAULT_TRAIN, CURVE_SEEDS) for p in (0.5, 0.9, 0.95))), FROZEN),
    "size": Grid("size", "frozen", ("bt", "bt_aspects", "vrm", "vrm_aspects", "vrm_aspects_no_latents"),
                 ((DEFAULT_STRENGTH, DEFAULT_TRAIN, SEEDS), (DEFAULT_STRENGTH, 100, CURVE_SEEDS),
                  (DEFAULT_STRENGTH, 1200, CURVE_SEEDS), (DEFAULT_STRENGTH, 3000, CURVE_SEEDS)), FROZEN),
    "finetune": Grid("finetune", "finetune", ("bt", "bt_aspects", "vrm", "vrm_aspects"),
                     ((DEFAULT_STRENGTH, 256, (0, 1, 2)),), FINETUNE, eval_sizes=(100, 150, 150),
                     notes="Cut to fit two shared CPU cores (a 16-pair MiniLM step takes 2-3 s there): 256 training "
                           "pairs, 1 epoch (16 steps), 150 test and shifted pairs; with one epoch both picks are the "
                           "same checkpoint"),
    "finetune_long": Grid("finetune_long", "finetune_long", ("bt", "bt_aspects", "vrm", "vrm_aspects", "vrm_no_latents"),
                          ((DEFAULT_STRENGTH, 512, (0, 1)),), (*FINETUNE, "trainer.max_epochs=2"),
                          eval_sizes=(100, 150, 150),
                          notes="The fine-tuned grid with the budget left: 512 training pairs, 2 epochs (64 steps), "
                                "150 test and shifted pairs; 2 seeds (a run takes about 3 min here)"),
    "search": Grid("search", "frozen", ("vrm_aspects_beta_z_0.001", "vrm_aspects_sparse_w", "vrm_aspects_coef_3",
                                        "bt_mlp_20ep", "bt_aspects_20ep", "vrm_aspects_20ep"),
                   ((DEFAULT_STRENGTH, DEFAULT_TRAIN, SEEDS),), FROZEN),
    "confirm": Grid("confirm", "frozen_fresh_seeds", ("bt_mlp_20ep", "bt_aspects_20ep", "vrm_aspects_20ep"),
                    ((DEFAULT_STRENGTH, DEFAULT_TRAIN, (5, 6, 7)),), FROZEN,
                    notes="Fresh data seeds for the one candidate the search found on seeds 0-4 (VRM with aspects, "
                          "20 epochs) and the two fair baselines at the same budget"),
}
#: Issue 20: the candidate, its ablations, the old default and the fair baselines (also at the candidate's head learning
#: rate), with the weights' recovery and the cue's share of the reward's variance in every cell; searched on seeds 0-4,
#: confirmed on fresh seeds 5-9.
LATENT_METHODS = ("bt_mlp", "bt_aspects", "bt_aspects_lr_0.01", "bt_mlp_lr_0.01", "vrm_v1", "vrm_rated",
                  "vrm_rated_no_latents", "vrm_rated_no_z", "vrm_rated_no_w", "vrm_rated_learned_prior",
                  "vrm_rated_joint", "vrm_rated_k8", "vrm_rated_lr_0.001", "bt", "bt_lr_0.01",
                  "vrm_rated_joint_no_latents", "vrm_rated_joint_no_w", "vrm_rated_joint_no_z",
                  "vrm_rated_joint_no_ratings", "bt_aspects_diff_lr_0.01")
#: What the fresh seeds confirm: the fair baselines (at both head learning rates), the old default, the new one and
#: the new one with both latents off.
CONFIRM_METHODS = ("bt_mlp", "bt_aspects", "bt_aspects_lr_0.01", "bt_mlp_lr_0.01", "vrm_v1", "vrm_rated_joint",
                   "vrm_rated_joint_no_latents", "bt_aspects_diff_lr_0.01")
#: The new default and the fair baselines at its head learning rate, added to the frozen curves.
CURVE_METHODS_V2 = ("vrm_rated_joint", "bt_aspects_lr_0.01", "bt_mlp_lr_0.01")
GRIDS["latents_search"] = Grid("latents_search", "latents", LATENT_METHODS, ((DEFAULT_STRENGTH, DEFAULT_TRAIN, SEEDS),),
                               FROZEN, notes="Issue 20's variants on the search seeds 0-4")
GRIDS["latents_confirm"] = Grid("latents_confirm", "latents_fresh_seeds", CONFIRM_METHODS,
                                ((DEFAULT_STRENGTH, DEFAULT_TRAIN, (5, 6, 7, 8, 9)),), FROZEN,
                                notes="Issue 20's candidate, its no-latent ablation, the old default and the fair "
                                      "baselines on fresh data seeds 5-9")
GRIDS["strength_v2"] = Grid("strength_v2", "frozen", CURVE_METHODS_V2,
                             tuple((p, DEFAULT_TRAIN, CURVE_SEEDS) for p in (0.75, 0.5, 0.9, 0.95)), FROZEN,
                             notes="Issue 20: the new default and the baselines at its head learning rate")
GRIDS["size_v2"] = Grid("size_v2", "frozen", CURVE_METHODS_V2,
                        tuple((DEFAULT_STRENGTH, n, CURVE_SEEDS) for n in (100, 1200, 3000)), FROZEN,
                        notes="Issue 20: the new default and the baselines at its head learning rate")
GRIDS["finetune_v2"] = Grid("finetune_v2", "finetune", ("vrm_rated_joint", "bt_aspects_lr_0.01"),
                             ((DEFAULT_STRENGTH, 256, (0, 1, 2)),), FINETUNE, eval_sizes=(100, 150, 150),
                             notes="Issue 20: the new default and the fair baseline at its head learning rate, fully "
                                   "fine-tuned as the finetune grid")
GRIDS["finetune_long_v2"] = Grid("finetune_long_v2", "finetune_long", ("vrm_rated_joint", "bt_aspects_lr_0.01"),
                                  ((DEFAULT_STRENGTH, 512, (0, 1)),), (*FINETUNE, "trainer.max_epochs=2"),
                                  eval_sizes=(100, 150, 150),
                                  notes="Issue 20: the new default and the fair baseline at its head learning rate, as "
                                        "the finetune_long grid")
#: Issue 20, part 2: what caps the weight recovery (experiments/robustness/weight_ceiling.py is the diagnostic);
#: chosen on seeds 0-4 at the default setting, then the default at more pairs.
CEILING_METHODS = ("vrm_g_mlp", "vrm_feature_dim_64", "vrm_aspect_coef_3", "vrm_20ep")
GRIDS["ceiling"] = Grid("ceiling", "latents", CEILING_METHODS, ((DEFAULT_STRENGTH, DEFAULT_TRAIN, SEEDS),), FROZEN,
                        notes="Issue 20: richer heads and longer training for the weights, seeds 0-4")
GRIDS["ceiling_map"] = Grid("ceiling_map", "latents", ("vrm_hidden_32", "vrm_wd_0.1", "vrm_wd_1"),
                            ((DEFAULT_STRENGTH, DEFAULT_TRAIN, SEEDS),), FROZEN,
                            notes="Issue 20: a prompt-to-weights map of less capacity, seeds 0-4")
GRIDS["clusters"] = Grid("clusters", "latents", ("vrm_clusters",), ((DEFAULT_STRENGTH, DEFAULT_TRAIN, SEEDS),), FROZEN,
                         notes="Issue 20: one weight posterior per prompt cluster, seeds 0-4")
GRIDS["clusters_size"] = Grid("clusters_size", "frozen", ("vrm_clusters",),
                              tuple((DEFAULT_STRENGTH, n, CURVE_SEEDS) for n in (1200, 3000)), FROZEN,
                              notes="Issue 20: one weight posterior per prompt cluster at 1,200 and 3,000 pairs")
GRIDS["clusters_confirm"] = Grid("clusters_confirm", "latents_fresh_seeds", ("vrm_clusters",),
                                 ((DEFAULT_STRENGTH, DEFAULT_TRAIN, (5, 6, 7, 8, 9)),), FROZEN,
                                 notes="Issue 20: the prompt-cluster posterior on the fresh seeds 5-9")
GRIDS["ceiling_size"] = Grid("ceiling_size", "frozen", ("vrm_rated_joint", "bt_aspects_lr_0.01"),
                             ((DEFAULT_STRENGTH, 10000, (0, 1, 2)),),
                             FROZEN, notes="Issue 20: the new default at 10,000 pairs (3 seeds), for the weights")
GRIDS["groups"] = Grid("groups", "latents", ("vrm_groups",), ((DEFAULT_STRENGTH, DEFAULT_TRAIN, SEEDS),), FROZEN,
                       notes="Issue 20: the weights read the prompt's predicted group (a classifier of the subset "
                             "labels), seeds 0-4")
GRIDS["groups_confirm"] = Grid("groups_confirm", "latents_fresh_seeds", ("vrm_groups",),
                               ((DEFAULT_STRENGTH, DEFAULT_TRAIN, (5, 6, 7, 8, 9)),), FROZEN,
                               notes="Issue 20: the prompt-group posterior on the fresh seeds 5-9")
GRIDS["groups_size"] = Grid("groups_size", "frozen", ("vrm_groups",),
                            tuple((DEFAULT_STRENGTH, n, CURVE_SEEDS) for n in (1200, 3000)), FROZEN,
                            notes="Issue 20: the prompt-group posterior at 1,200 (the benchmark's default) and 3,000 "
                                  "pairs")
GRIDS["groups_issue"] = Grid("groups_issue", "issue_protocol", ("vrm_groups", "vrm_groups_samples_16", "vrm_rated_joint",
                                                              "bt_aspects_lr_0.01"),
                             ((DEFAULT_STRENGTH, 1200, (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)),),
                             (*FROZEN, "trainer.max_epochs=10"),
                             notes="Issue 20's own protocol: the benchmark's default 1,200 training pairs, frozen "
                                   "MiniLM, 10 epochs; the prompt-group posterior (also with 16 Monte Carlo samples, "
                                   "the setting the search on seeds 0-4 picked), the prompt posterior before it, and "
                                   "the fair baseline at the same head learning rate; seeds 0-9")
GRIDS["groups_search"] = Grid("groups_search", "issue_protocol",
                              ("vrm_groups_head_lr_0.03", "vrm_groups_samples_16", "vrm_groups_hidden_32",
                               "vrm_groups_samples_32", "vrm_groups_samples_16_lr_0.03", "vrm_groups_beta_w_0.0001"),
                              ((DEFAULT_STRENGTH, 1200, SEEDS),), (*FROZEN, "trainer.max_epochs=10"),
                              notes="Issue 20: settings of the prompt-group posterior, on seeds 0-4 of its protocol")
GRIDS["groups_no_ratings"] = Grid("groups_no_ratings", "issue_protocol", ("vrm_groups_no_ratings",),
                                  ((DEFAULT_STRENGTH, 1200, SEEDS),), (*FROZEN, "trainer.max_epochs=10"),
                                  notes="Issue 20: the prompt-group posterior without the aspect ratings")
GRIDS["groups_curves"] = Grid("groups_curves", "frozen", ("vrm_groups",),
                              (*((p, DEFAULT_TRAIN, CURVE_SEEDS) for p in (0.5, 0.9, 0.95)),
                               (DEFAULT_STRENGTH, 100, CURVE_SEEDS)), FROZEN,
                              notes="Issue 20: the prompt-group posterior on the rest of the strength and size curves")
GRIDS["groups_finetune"] = Grid("groups_finetune", "finetune", ("vrm_groups",), ((DEFAULT_STRENGTH, 256, (0, 1, 2)),),
                                FINETUNE, eval_sizes=(100, 150, 150),
                                notes="Issue 20: the prompt-group posterior fully fine-tuned, as the finetune grid")
GRIDS["groups_finetune_long"] = Grid("groups_finetune_long", "finetune_long", ("vrm_groups",),
                                     ((DEFAULT_STRENGTH, 512, (0, 1)),), (*FINETUNE, "trainer.max_epochs=2"),
                                     eval_sizes=(100, 150, 150),
                                     notes="Issue 20: the prompt-group posterior as the finetune_long grid")
QUICK = Grid("quick", "quick", ("bt", "bt_aspects", "vrm_aspects"), ((DEFAULT_STRENGTH, 200, (0,)),),
             ("encoder=minilm", "encoder.train_mode=frozen", "trainer.max_epochs=2", "data.batch_size=16"),
             eval_sizes=(64, 100, 100))
DEFAULT_GRIDS = ("strength", "size", "finetune")
