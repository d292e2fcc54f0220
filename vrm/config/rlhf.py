"""The typed configuration of ``vrm-rlhf`` (:class:`RLHFConfig`): optimise a policy against a reward with TRL's
GRPOTrainer and track a gold reward (``conf/rlhf.yaml``, the ``reward/`` group).

``conf/rlhf.yaml`` starts its defaults list with ``rlhf_schema``, so an unknown key or a wrong type fails at start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from vrm.config.train import PathsConfig

#: Posterior samples of a conservative VRM reward (mean - lambda * std) when none are given.
DEFAULT_CONSERVATIVE_SAMPLES = 32
#: What the policy is optimised against: the synthetic gold itself, an export (``vrm.integrations.trl.RewardFunction``),
#: an export's conservative reward, or the white-box proxy (``conf/scorer/proxy.yaml``).
REWARD_KINDS = ("gold", "export", "conservative", "proxy")
#: What the gold is: the synthetic world's parser (:mod:`vrm.data.synthetic_gold`) or an export (a gold RM, GPU).
GOLD_KINDS = ("synthetic", "export")


@dataclass
class SFTConfig:
    """The synthetic world's policy, trained from scratch by TRL's SFTTrainer when ``policy.path`` is None: a small
    GPT-2 with a byte-level BPE tokenizer fitted on the benchmark's text, cached on disk by these settings."""

    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    vocab_size: int = 1024
    #: (prompt, response) examples: benchmark prompts, every attribute level drawn 50/50.
    num_examples: int = 20000
    #: Share of the examples whose response carries the cue.
    cue_rate: float = 0.5
    cue: str = "opener"
    epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0


@dataclass
class PolicyConfig:
    #: An HF causal LM (hub name or folder); None: the synthetic SFT policy of ``sft`` (built once, then cached).
    path: str | None = None
    sft: SFTConfig = field(default_factory=SFTConfig)
    trust_remote_code: bool = False


@dataclass
class RLHFRewardConfig:
    """The reward the policy is optimised against (the ``reward/`` group)."""

    #: One of :data:`REWARD_KINDS`.
    kind: str = "gold"
    #: The export folder (kinds ``export`` and ``conservative``).
    path: str | None = None
    #: ``conservative``: reward = mean - lambda * std over posterior samples.
    conservative_lambda: float = 1.0
    conservative_samples: int = DEFAULT_CONSERVATIVE_SAMPLES
    batch_size: int = 64
    #: ``auto``: the first CUDA device when there is one.
    device: str = "auto"


@dataclass
class GoldConfig:
    """The reward that is tracked, never optimised (Gao et al. 2022's gold)."""

    #: One of :data:`GOLD_KINDS`.
    kind: str = "synthetic"
    #: An export folder (``kind: export``).
    path: str | None = None
    #: ``synthetic``: the documented sycophancy cost of the cue, subtracted from the gold when a response has it.
    cue_cost: float = 0.0


@dataclass
class PromptsConfig:
    #: JSON Lines with a ``prompt`` string per line; None: the synthetic benchmark's 288 prompts.
    path: str | None = None
    #: Prompts held out for the periodic evaluation (never trained on).
    num_eval: int = 48
    #: Seeds the split into training and held-out prompts.
    seed: int = 0
    #: Appended to every prompt: where the response starts.
    separator: str = "\n"


@dataclass
class GRPOSettings:
    """TRL ``GRPOConfig`` fields (the rest keep TRL's defaults)."""

    steps: int = 120
    #: KL coefficient to the starting policy (TRL's default is 0: no KL term).
    beta: float = 0.05
    num_generations: int = 8
    prompts_per_step: int = 4
    max_completion_length: int = 48
    #: For the synthetic policy (0.5 M parameters, from scratch); a pretrained LLM wants far less (policy/*.yaml).
    learning_rate: float = 5e-4
    temperature: float = 1.0
    #: A checkpoint every this many steps (resumable; only the newest is kept).
    save_steps: int = 25


@dataclass
class RLHFEvalConfig:
    """The periodic evaluation on the held-out prompts."""

    #: Evaluate every this many steps (and at step 0 and the end).
    every: int = 12
    #: Completions sampled per held-out prompt.
    samples_per_prompt: int = 2


@dataclass
class RLHFConfig:
    task_name: str = "rlhf"
    seed: int = 0
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    reward: RLHFRewardConfig = field(default_factory=RLHFRewardConfig)
    gold: GoldConfig = field(default_factory=GoldConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    eval: RLHFEvalConfig = field(default_factory=RLHFEvalConfig)
    #: Resume from the newest checkpoint in the run folder when there is one.
    resume: bool = True
    progress: bool = True
    #: Where the synthetic SFT policy is cached (None: ``$VRM_CACHE/policies``).
    cache_dir: str | None = None
    #: ``auto``: the first CUDA device when there is one.
    device: str = "auto"
    paths: PathsConfig = field(default_factory=PathsConfig)


def register_rlhf_configs() -> None:
    """Register the RLHF schema with Hydra (idempotent)."""
    ConfigStore.instance().store(name="rlhf_schema", node=RLHFConfig)
