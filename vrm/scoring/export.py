"""Export a training checkpoint as a Hugging Face folder, written atomically.

Three kinds of folder (``vrm-export CHECKPOINT OUT_DIR [--with-code | --plain]``):

- default: ``config.json`` (``model_type: vrm``, ``num_labels: 1``) and ``model.safetensors`` of
  :class:`~vrm.models.modeling_vrm.VRMForSequenceClassification` (either head); ``import vrm`` registers the
  class, so ``AutoModelForSequenceClassification.from_pretrained(OUT_DIR)`` loads it.
- ``with_code``: the same plus ``modeling_vrm.py`` (a copy of :mod:`vrm.models.modeling_vrm`, which imports only
  torch and transformers) and an ``auto_map``, so ``from_pretrained(OUT_DIR, trust_remote_code=True)`` works where
  ``vrm`` is not installed (RewardBench, OpenRLHF, a user's own script).
- ``plain`` (BT only): the encoder architecture's own ``...ForSequenceClassification`` (e.g.
  ``LlamaForSequenceClassification``); no ``vrm`` and no remote code needed. Only where that class pools as we do:
  decoder-only encoders with ``last`` pooling (the head reads the last non-padding token, found through
  ``config.pad_token_id``, so batches are right-padded with that id). Anything else is refused.

Every folder also holds the tokenizer (with its chat template), a model card (``README.md``: training
configuration and metrics) and ``vrm_manifest.json`` (package versions and the sha256 of every file). LoRA adapters
are merged into the encoder before saving.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from vrm.data.contract import ContractError, InputContract, lays_out_pairs
from vrm.data.progress import timed_step
from vrm.data.tokenization import PLAIN_TOKENIZATION_KEY, TokenizationSettings
from vrm.data.tokenize import pad_sequences
from vrm.errors import ExportError
from vrm.models import heads, modeling_vrm, pooling
from vrm.models.finite import check_finite_parameters
from vrm.models.modeling_vrm import VRMForSequenceClassification
from vrm.scoring.client_usage import INPUT_CONTRACT_TEXT, client_usage
from vrm.scoring.export_folder import atomic_folder, package_versions, write_manifest
from vrm.scoring.scorer import contract_of
from vrm.training.module import RewardModule

log = logging.getLogger(__name__)

MODEL_CARD = "README.md"
#: The remote-code file of a ``with_code`` export and the classes its ``auto_map`` names.
MODELING_FILE = "modeling_vrm.py"
#: The files ``modeling_vrm.py`` imports relatively (copied beside it): the heads and the torch-only pooling helpers.
HEADS_FILE, POOLING_FILE = "heads.py", "pooling.py"
AUTO_MAP = {"AutoConfig": "modeling_vrm.VRMConfig",
            "AutoModelForSequenceClassification": "modeling_vrm.VRMForSequenceClassification"}
#: Largest difference between the plain export's rewards and ours that counts as the same model.
PLAIN_ATOL = 1e-4
#: (prompt, response) pairs the plain export is checked on before it is written.
PROBE_PAIRS = [("How do I sort a list in Python?", "Use sorted(); it returns a new list."),
               ("Hi", "Hello! How can I help you today? Ask me anything about cooking, code or travel.")]


# -- entry point ------------------------------------------------------------------------------------
def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, metrics: dict | None = None, *,
                      with_code: bool = False, plain: bool = False) -> Path:
    """Export a Lightning checkpoint of :class:`RewardModule` to ``out_dir`` (see the module docstring).

    ``metrics`` go into the model card and manifest; when None they are read from the run folder's CSV logger
    (``<run>/*/version_*/metrics.csv``, the last value of each column) if there is one.
    """
    checkpoint = Path(checkpoint)
    with timed_step(f"export: loading {checkpoint}", log):
        module = RewardModule.from_checkpoint(checkpoint)
        merge_lora(module.net, in_place=True)  # the module is ours: no copy of the encoder
    note = None
    if metrics is None:
        metrics = read_run_metrics(checkpoint)
        if metrics is None:
            note = "no metrics: the run folder of the checkpoint has no CSV log (logger=csv)"
    run_config = checkpoint.parent.parent / ".hydra" / "config.yaml"
    return export_model(module.net, checkpoint_tokenizer(module, checkpoint), out_dir, metrics=metrics,
                        training_config=card_config(module.hparams), source=checkpoint.name,
                        run_config=run_config.read_text() if run_config.is_file() else None,
                        metrics_note=note, with_code=with_code, plain=plain, inputs=[checkpoint])


def export_model(net: VRMForSequenceClassification, tokenizer, out_dir: str | Path, *, metrics: dict | None = None,
                 training_config: dict | None = None, source: str = "", run_config: str | None = None,
                 metrics_note: str | None = None, with_code: bool = False, plain: bool = False,
                 inputs: list[str | Path] = ()) -> Path:
    """Write a reward model and its tokenizer as an export folder (atomically, never over a folder holding one of
    ``inputs``: :func:`vrm.scoring.export_folder.atomic_folder`); returns ``out_dir``."""
    if with_code and plain:
        raise ExportError("--plain and --with-code exclude each other: a plain export needs no code")
    check_finite_parameters(net, f"the model to export{f' ({source})' if source else ''}",
                            "a diverged run is not exported: retrain it (lower optim.lr) or export an earlier "
                            "checkpoint")
    net = merge_lora(net).eval()
    contract, tokenizer = model_contract(net, tokenizer)
    model, tokenizer = plain_model(net, tokenizer, contract) if plain else (net, tokenizer)
    kind = "plain" if plain else ("vrm+code" if with_code else "vrm")
    with timed_step(f"export: writing {out_dir}", log), atomic_folder(Path(out_dir), inputs) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # The generic fast class under the name every transformers version knows (4.x has no TokenizersBackend).
        edit_json(tmp / "tokenizer_config.json", tokenizer_class="PreTrainedTokenizerFast")
        edit_config(tmp, num_labels=1)  # transformers writes only id2label; tools read num_labels
        if with_code:
            add_remote_code(tmp)
        card = model_card(net, kind, metrics or {}, training_config or {}, source, run_config, metrics_note,
                          text_pair=lays_out_pairs(tokenizer))
        (tmp / MODEL_CARD).write_text(card)
        write_manifest(tmp, {"kind": kind, "head": net.config.head, "checkpoint": source,
                             "metrics": metrics or {}})
    return Path(out_dir)


# -- pieces -----------------------------------------------------------------------------------------
def checkpoint_tokenizer(module: RewardModule, checkpoint: Path):
    """The tokenizer a run saved (``hparams.tokenizer_path``, else ``<run>/tokenizer`` if the run folder moved)."""
    recorded = module.hparams.get("tokenizer_path")
    for candidate in (recorded, checkpoint.parent.parent / "tokenizer"):
        if candidate and Path(candidate).is_dir():
            return AutoTokenizer.from_pretrained(str(candidate))
    raise ExportError(f"checkpoint {checkpoint} records tokenizer_path={recorded!r}, which does not exist, and its "
                      f"run folder has no tokenizer/ beside checkpoints/")


def merge_lora(net: VRMForSequenceClassification, in_place: bool = False) -> VRMForSequenceClassification:
    """``net`` with a peft (LoRA) encoder merged into plain weights (a copy unless ``in_place``); ``net`` itself
    when it has none."""
    if is_peft_model(net.encoder):
        net = net if in_place else copy.deepcopy(net)
        net.encoder = net.encoder.merge_and_unload()
    leftover = [k for k in net.state_dict() if "lora_" in k]
    if leftover:
        raise ExportError(f"the encoder holds LoRA weights outside a peft PeftModel ({leftover[0]}, ...): merge them "
                          "into the base weights before exporting")
    return net


def model_contract(net: VRMForSequenceClassification, tokenizer) -> tuple[InputContract, Any]:
    """The model's input contract and a tokenizer that carries it (:func:`vrm.scoring.scorer.contract_of`); a model
    trained before the contract gets it where the old rule gave the same ids, and its config then records the
    marker."""
    try:
        contract, carrier = contract_of(tokenizer, TokenizationSettings.from_config(net.config))
    except ContractError as err:
        raise ExportError(str(err)) from err
    if net.config.prompt_end_ids is None:
        net.config.prompt_end_ids = list(contract.prompt_end_ids)
    return contract, carrier


def is_peft_model(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a peft ``PeftModel`` (False when peft is not installed: nothing to merge then)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(module, PeftModel)


def plain_model(net: VRMForSequenceClassification, tokenizer, contract: InputContract
                ) -> tuple[PreTrainedModel, Any]:
    """The BT model as its encoder architecture's ``...ForSequenceClassification``, checked to give our rewards.

    Returns the model and a tokenizer copy whose padding (right, with ``config.pad_token_id``) it needs.
    """
    cfg = net.config
    arch = cfg.encoder_config.get("model_type", "?")
    class_name = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(arch, f"{arch} ...ForSequenceClassification")
    if cfg.head != "bt":
        raise ExportError(f"--plain exports BT models only; this is a {cfg.head} model, whose head no "
                          f"{class_name} has: export without --plain (add --with-code for tools that never import "
                          "vrm)")
    if getattr(cfg, "bt_head", "linear") != "linear":
        raise ExportError(f"--plain exports a linear BT head only; bt_head={cfg.bt_head!r} has a hidden layer that "
                          f"{class_name}'s one score matrix cannot hold: export without --plain (add --with-code for "
                          "tools that never import vrm)")
    if cfg.encoder_kind != "decoder" or cfg.pooling != "last":
        raise ExportError(
            f"--plain cannot represent pooling={cfg.pooling!r} on a {cfg.encoder_kind} {arch} encoder: "
            f"{class_name} pools differently, and only decoder-only encoders with pooling='last' match a plain "
            "...ForSequenceClassification (it reads the last non-padding token). Export without --plain "
            "(add --with-code for tools that never import vrm)")
    settings = TokenizationSettings.from_config(cfg)
    probe = [settings.pair_encoder(tokenizer, "truncate_prompt_left", contract=contract).encode(p, r)
             for p, r in PROBE_PAIRS]
    tokenizer = copy.deepcopy(tokenizer)
    pad_id = plain_pad_id(tokenizer, {e.input_ids[-1] for e in probe})
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    tokenizer.padding_side = "right"
    encoder_config = {k: v for k, v in cfg.encoder_config.items()
                      if k not in ("model_type", "architectures", "id2label", "label2id", "_name_or_path",
                                   "transformers_version", "pad_token_id", "num_labels")}
    hf_config = AutoConfig.for_model(arch, **encoder_config, num_labels=1, pad_token_id=pad_id,
                                     **{PLAIN_TOKENIZATION_KEY: settings.to_dict()})
    try:
        model = AutoModelForSequenceClassification.from_config(hf_config)
    except ValueError as err:
        raise ExportError(f"transformers has no ...ForSequenceClassification for {arch}: {err}") from err
    score = getattr(model, "score", None)
    if not isinstance(score, torch.nn.Linear) or score.bias is not None or score.out_features != 1:
        raise ExportError(f"{type(model).__name__} has no bias-free linear 'score' head to carry the BT weights")
    getattr(model, model.base_model_prefix).load_state_dict(net.encoder.state_dict())
    with torch.no_grad():
        score.weight.copy_(net.head.score.weight)
    model.eval()
    check_same_rewards(net, model, [e.input_ids for e in probe], pad_id)
    return model, tokenizer


def plain_pad_id(tokenizer, last_ids: set[int]) -> int:
    """A padding id that is never the last token of a sequence, so the plain head never mistakes it for padding.

    Decoder tokenizers often pad with their end-of-sequence token, which is exactly where the reward is read.
    """
    for candidate in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id,
                      *tokenizer.all_special_ids):
        if candidate is not None and candidate not in last_ids:
            return int(candidate)
    raise ExportError(f"every special token of the tokenizer ends a sequence ({sorted(last_ids)}); no padding id "
                      "is left for a plain ...ForSequenceClassification to find the last token with")


@torch.inference_mode()
def check_same_rewards(net: VRMForSequenceClassification, plain: PreTrainedModel, seqs: list[list[int]],
                       pad_id: int) -> None:
    """Raise unless the plain model gives our rewards on a right-padded batch of ``seqs``."""
    ids, mask = pad_sequences(seqs, pad_id)
    ours = net(ids, mask).logits[:, 0]
    theirs = plain(input_ids=ids, attention_mask=mask).logits[:, 0]
    diff = float((ours - theirs).abs().max())
    if diff > PLAIN_ATOL:
        raise ExportError(f"the plain {type(plain).__name__} does not reproduce the rewards (max difference {diff:.3g}"
                          f" > {PLAIN_ATOL}); export without --plain")


def edit_config(folder: Path, **entries: Any) -> None:
    """Set top-level entries of the folder's config.json."""
    edit_json(folder / "config.json", **entries)


def edit_json(path: Path, **entries: Any) -> None:
    """Set top-level entries of a JSON object file."""
    content = json.loads(path.read_text())
    content.update(entries)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")


def add_remote_code(folder: Path) -> None:
    """Copy the self-contained modeling files and point ``auto_map`` at them."""
    shutil.copyfile(modeling_vrm.__file__, folder / MODELING_FILE)
    shutil.copyfile(heads.__file__, folder / HEADS_FILE)
    shutil.copyfile(pooling.__file__, folder / POOLING_FILE)
    edit_config(folder, auto_map=dict(AUTO_MAP))


def read_run_metrics(checkpoint: Path) -> dict[str, float] | None:
    """The last logged value of every metric in the checkpoint's run folder CSV log, or None without one."""
    logs = sorted((checkpoint.parent.parent).glob("*/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return None
    metrics: dict[str, float] = {}
    with logs[-1].open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in (None, ""):
                    metrics[key] = float(value)
    return metrics


def card_config(hparams: dict) -> dict:
    """The checkpoint's hyperparameters for the model card (the encoder's config is in config.json)."""
    config = json.loads(json.dumps({k: v for k, v in dict(hparams).items() if k != "tokenizer_path"}, default=str))
    if "vrm_config" in config:
        vrm_config = dict(config["vrm_config"])
        encoder = vrm_config.pop("encoder_config", None) or {}
        vrm_config["encoder_model_type"] = encoder.get("model_type")
        config["vrm_config"] = vrm_config
    return config


# -- model card -------------------------------------------------------------------------------------
USAGE = {
    "vrm": """```python
import vrm  # registers the "vrm" model type with transformers' Auto classes
from transformers import AutoModelForSequenceClassification

model = AutoModelForSequenceClassification.from_pretrained("{path}")  # logits (B, 1) = reward
scorer = vrm.RewardScorer.from_pretrained("{path}")  # tokenises as training did
scorer.score(["How do I sort a list?"], ["Use sorted()."])
```""",
    "vrm+code": """Without the `vrm` package (transformers, torch and safetensors only):

```python
from transformers import AutoModelForSequenceClassification

model = AutoModelForSequenceClassification.from_pretrained("{path}", trust_remote_code=True)
```

With it, `vrm.RewardScorer.from_pretrained("{path}")` scores (prompt, response) pairs directly.""",
    "plain": """A plain `{class_name}`: no `vrm` package and no remote code needed. Pad on the right with the
tokenizer's padding token (`config.pad_token_id`): the head reads the last token that is not padding.

```python
from transformers import AutoModelForSequenceClassification

model = AutoModelForSequenceClassification.from_pretrained("{path}")
```""",
}


def model_card(net: VRMForSequenceClassification, kind: str, metrics: dict, training_config: dict,
               source: str, run_config: str | None, metrics_note: str | None, text_pair: bool = True) -> str:
    cfg = net.config
    arch = cfg.encoder_config.get("model_type", "?")
    settings = TokenizationSettings.from_config(cfg)
    scoring = ("`reward = E[w | x]^T g(mu(h(x, y)))`: the objective weights' posterior mean for the prompt times "
               f"the {cfg.num_objectives} per-objective scores at the feature posterior mean (deterministic). Ask "
               "the model for `return_details=True` (per-objective scores and weights) or `num_samples > 0` "
               "(Monte Carlo reward standard deviation)." if cfg.head == "vrm" else
               "`reward = w^T h(x, y)`: a linear (Bradley-Terry) head on the pooled representation.")
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-classification",
        f"tags: [{', '.join(sorted({'reward-model', 'vrm', cfg.head}))}]", "---", "",
        f"# {cfg.head.upper()} reward model ({arch} encoder)", "",
        f"Exported by `vrm-export` (vrm {package_versions()['vrm']}) from `{source or 'a model in memory'}`"
        f" as a `{kind}` folder.", "",
        "## Use", "", USAGE[kind].replace("{path}", "PATH").replace(
            "{class_name}", MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(arch, "...ForSequenceClassification")),
        "", "## Input", "", INPUT_CONTRACT_TEXT.format(marker=list(settings.prompt_end_ids or ())), "",
        client_usage(kind, "PATH", text_pair), "", "## Scoring", "", scoring, "",
        f"Encoder kind `{settings.encoder_kind}`, pooling `{cfg.pooling}`, max {settings.max_sequence_length} tokens "
        f"per (prompt, response), over-long pairs `{settings.truncation}` (by `vrm.RewardScorer`; other clients "
        "truncate, or filter, by their own settings).", "",
        "## Metrics", "",
    ]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {float(v):.4f} |" for k, v in sorted(metrics.items())]
    else:
        lines.append(metrics_note or "No metrics were given to the export.")
    lines += ["", "## Training configuration", "", "Hyperparameters of the checkpoint:", "", "```yaml",
              yaml.safe_dump(training_config, sort_keys=False).rstrip(), "```", ""]
    if run_config:
        lines += ["Hydra configuration of the run:", "", "```yaml", run_config.rstrip(), "```", ""]
    return "\n".join(lines)
