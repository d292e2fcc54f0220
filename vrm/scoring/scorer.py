"""``RewardScorer``: load an exported reward model and score (prompt, response) pairs.

It tokenises with the rule the model was trained with, the input contract (:mod:`vrm.data.contract`: the export's
chat template and the marker in its config, through :class:`vrm.data.tokenize.PairEncoder`), passes the model the
ids alone (it finds the prompt/response boundary itself, as it does for any client), batches longest-first so
padding is small, and runs in ``torch.inference_mode``. It loads both export kinds of :mod:`vrm.scoring.export`: the VRM folder (``model_type: vrm``, either head) and the plain
``...ForSequenceClassification`` folder of a BT model (``vrm_tokenization`` in its config).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from vrm.config.eval import MAX_UNCERTAINTY_SAMPLES
from vrm.config.rlhf import DEFAULT_CONSERVATIVE_SAMPLES
from vrm.data.contract import (
    ContractError,
    InputContract,
    build_contract,
    carried_contract,
    contract_tokenizer,
    prompt_end,
    reproduces_legacy_rule,
)
from vrm.data.progress import progress_bar
from vrm.data.schema import Message
from vrm.data.tokenization import PLAIN_TOKENIZATION_KEY, TokenizationSettings
from vrm.data.tokenize import EncodedSequence, pad_sequences
from vrm.errors import ExportError, IntegrityError, UnsafeCheckpointError
from vrm.models.encoder import DTYPES
from vrm.models.modeling_vrm import VRMConfig, VRMForSequenceClassification
from vrm.scoring.base import DEFAULT_RESPONSE_MARKER, Prompt, Scorer, plain_pair, split_query
from vrm.scoring.export_folder import MANIFEST, verify_export

#: Weight files that are pickles (arbitrary code on load): a folder holding one is refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def contract_of(tokenizer, settings: TokenizationSettings) -> tuple[InputContract, PreTrainedTokenizerBase]:
    """The input contract of a loaded model and a tokenizer that carries it.

    An exported tokenizer carries it (:func:`vrm.data.contract.carried_contract`). A training run's tokenizer (vrm-eval
    on a checkpoint) gets it built, as training did, and is converted to the exported form. A model trained before
    the contract (no marker) carries on where the old rule equals the contract
    (:func:`vrm.data.contract.reproduces_legacy_rule`: BERT-like tokenizers); other old models are refused.
    """
    contract = carried_contract(tokenizer)
    if contract is None:
        if settings.prompt_end_ids is None and not reproduces_legacy_rule(tokenizer, settings.encoder_kind,
                                                                            settings.use_chat_template):
            raise ContractError(
                f"the model was trained before the input contract with the old {settings.encoder_kind} tokenisation "
                "(a blank line after the prompt, or a chat template's prompt and response tokenised apart), which "
                "the contract cannot reproduce: retrain it with this vrm version, or score it with the vrm version "
                "that trained it")
        contract = build_contract(tokenizer, settings.encoder_kind, settings.use_chat_template)
        tokenizer = contract_tokenizer(tokenizer, contract, settings.encoder_kind)
    if settings.prompt_end_ids is not None and contract.prompt_end_ids != settings.prompt_end_ids:
        raise ContractError(f"the model's prompt_end_ids {list(settings.prompt_end_ids)} are not its tokenizer's "
                            f"marker {list(contract.prompt_end_ids)}: load the tokenizer it was trained or exported "
                            "with")
    return contract, tokenizer


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU; a CUDA device this machine lacks is a
    ValueError naming it (not torch's error from deep inside the first transfer)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device (cpu, cuda, cuda:1, ..., or auto): {err}") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (resolved.index or 0) >= count:
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else f"this machine has {count} CUDA device(s)")
            raise ValueError(f"device {device!r} is not available: {why}; use cpu (or auto: CUDA when there is one)")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {tuple(DTYPES)}")
    return DTYPES[dtype]


def check_safetensors_only(path: str | Path) -> Path:
    """The folder, after checking it holds safetensors weights and no pickle file (raises naming the file)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not an exported model folder (no config.json)")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise UnsafeCheckpointError(
            f"{path} holds pickled weights ({', '.join(pickles)}); loading a pickle can run arbitrary code, so only "
            "safetensors folders are loaded: remove the file, or re-export the model with vrm-export")
    if not any(path.glob("*.safetensors")):
        raise FileNotFoundError(f"{path} has no *.safetensors weights")
    return path


def conservative_reward(samples: torch.Tensor, risk_lambda: float) -> torch.Tensor:
    """(B,) ``mean - lambda * std`` over the sample axis of (S, B) posterior rewards (unbiased std, as Coste et al.
    2024's uncertainty-weighted ensemble reward)."""
    return samples.mean(dim=0) - risk_lambda * samples.std(dim=0)


def check_conservative(model: PreTrainedModel, risk_lambda: float | None, num_samples: int) -> None:
    """A conservative reward needs a VRM head (a posterior to sample), lambda >= 0 and at least 2 samples."""
    if risk_lambda is None:
        return
    if not 0 <= risk_lambda < float("inf"):
        raise ValueError(f"conservative_lambda={risk_lambda} must be a finite number >= 0")
    if not 2 <= num_samples <= MAX_UNCERTAINTY_SAMPLES:
        raise ValueError(f"conservative_samples={num_samples} must be in [2, {MAX_UNCERTAINTY_SAMPLES}] (a standard "
                         "deviation needs two samples; the samples of a batch are held at once)")
    if not isinstance(model, VRMForSequenceClassification) or model.config.head != "vrm":
        raise ValueError("a conservative reward (mean - lambda * std over posterior samples) needs a VRM export "
                         "(model_type vrm, head vrm): this model has no posterior to sample")


class RewardScorer(Scorer):
    """Scores with an exported reward model (VRM or BT head, or a plain BT export), tokenising as training did.

    ``score`` gives one float per (prompt, response); :meth:`score_details` adds, for a VRM, the per-objective
    scores (K), the objective weights E[w | x] (K) and, with ``num_samples`` > 0, a Monte Carlo reward standard
    deviation. A prompt is a string or a list of ``{"role", "content"}`` messages. Over-long pairs are truncated
    by the model's training policy (``drop`` scores as ``truncate_prompt_left``: a reward is always given).
    """

    name = "reward_model"

    def __init__(self, model: PreTrainedModel, tokenizer, batch_size: int = 32, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype | None = None, response_marker: str | None = None,
                 conservative_lambda: float | None = None, conservative_samples: int = DEFAULT_CONSERVATIVE_SAMPLES):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        check_conservative(model, conservative_lambda, conservative_samples)
        #: With a lambda, ``reward`` is the conservative reward ``mean - lambda * std`` over posterior samples.
        self.conservative_lambda = conservative_lambda
        self.conservative_samples = conservative_samples
        self.device = resolve_device(device)
        dtype = resolve_dtype(dtype)
        self.model = model.eval().to(self.device, dtype=dtype) if dtype is not None else model.eval().to(self.device)
        self.batch_size = batch_size
        self.settings = TokenizationSettings.from_config(model.config)
        s = self.settings
        self.contract, tokenizer = contract_of(tokenizer, s)
        self.tokenizer = tokenizer
        truncation = "truncate_prompt_left" if s.truncation == "drop" else s.truncation
        self.encoder = s.pair_encoder(tokenizer, truncation, contract=self.contract)
        self.is_vrm_model = isinstance(model, VRMForSequenceClassification)
        if self.is_vrm_model and model.config.prompt_end_ids is None:  # exported before the contract (same ids)
            model.config.prompt_end_ids = list(self.contract.prompt_end_ids)
        self.name = model.config.head if self.is_vrm_model else "bt"
        if self.is_vrm_model:
            self.pad_id = tokenizer.pad_token_id or 0
        else:
            # The plain head reads the last token that is not config.pad_token_id: pad with exactly that id.
            self.pad_id = model.config.pad_token_id
            if self.pad_id is None:
                raise ValueError("a plain export needs config.pad_token_id to find the last token of a padded batch")
        self.response_marker = response_marker or DEFAULT_RESPONSE_MARKER

    @classmethod
    def from_pretrained(cls, path: str | Path, batch_size: int = 32, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype | None = None, response_marker: str | None = None,
                        conservative_lambda: float | None = None,
                        conservative_samples: int = DEFAULT_CONSERVATIVE_SAMPLES) -> RewardScorer:
        """Load an exported folder; safetensors weights only (a folder holding a pickle file is refused), every file
        checked against the export's ``vrm_manifest.json`` when it has one (a changed or truncated file is an
        :class:`~vrm.errors.IntegrityError` naming it)."""
        path = check_safetensors_only(path)
        if (path / MANIFEST).is_file():
            verify_export(path)
        config = json.loads((path / "config.json").read_text())
        try:
            if config.get("model_type") == VRMConfig.model_type:
                model = VRMForSequenceClassification.from_pretrained(str(path), use_safetensors=True)
            elif PLAIN_TOKENIZATION_KEY in config:
                model = AutoModelForSequenceClassification.from_pretrained(str(path), use_safetensors=True)
            else:
                raise ValueError(f"{path} is not a vrm export: config.json has model_type="
                                 f"{config.get('model_type')!r} and no '{PLAIN_TOKENIZATION_KEY}'")
        except (SafetensorError, OSError, RuntimeError) as err:  # a truncated or damaged weights file
            raise IntegrityError(f"{path}: the weights cannot be loaded ({type(err).__name__}: {err}); copy the "
                                 "folder again or re-export the model") from err
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError, RuntimeError) as err:
            raise IntegrityError(f"{path}: the tokenizer cannot be loaded ({type(err).__name__}: {err})") from err
        scorer = cls(model, tokenizer, batch_size=batch_size, device=device, dtype=dtype,
                     response_marker=response_marker, conservative_lambda=conservative_lambda,
                     conservative_samples=conservative_samples)
        try:  # a chat template that raises is named once, at load, not on every line
            scorer.encode_pair("Hi", "Hello")
        except ContractError as err:
            raise ExportError(f"{path}: {err}; fix or remove the file, or re-export the model") from err
        return scorer

    # -- encoding ---------------------------------------------------------------------------------
    def encode_pair(self, prompt: Prompt, response: str) -> EncodedSequence:
        return self.encoder.encode(prompt, response)

    def encode_query(self, query: str, prompt: str | None = None) -> EncodedSequence:
        """Encode a full conversation text.

        A text rendered by the export's chat template (it holds the contract's marker) is tokenised as it is and
        split where the model finds the boundary, as any client's would be. Any other text (an Anthropic HH
        transcript, a policy's own rendering) is split by :func:`vrm.scoring.base.split_query` into a (prompt,
        response) pair (:func:`vrm.scoring.base.plain_pair`) scored like any other. Padding-token text around the
        query is ignored.
        """
        query = self._strip_token_text(query, self.tokenizer.pad_token)
        ids = self.tokenizer(query, add_special_tokens=False)["input_ids"]
        if prompt_end(ids, self.contract.prompt_end_ids) is not None:
            return self.encoder.encode_rendered(ids)
        head, response = split_query(query, self.response_marker, prompt)
        prompt_value, response = plain_pair(head, response, self.response_marker)
        return self.encode_pair(prompt_value, self._strip_token_text(response, self.tokenizer.eos_token or self.tokenizer.sep_token,
                                                                    left=False))

    @staticmethod
    def _strip_token_text(text: str, token: str | None, left: bool = True) -> str:
        """``text`` without repeats of ``token`` at its end (and start) and the whitespace outside them; a text
        without the token keeps its whitespace (a chat template's rendering may end with a newline)."""
        if not token:
            return text
        while True:
            outer = text.strip()
            if outer.endswith(token):
                text = outer[:-len(token)]
            elif left and outer.startswith(token):
                text = outer[len(token):]
            else:
                return text

    # -- scoring ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_encoded(self, encoded: Sequence[EncodedSequence], num_samples: int = 0,
                      progress: bool | Callable[[int], None] = False, *,
                      question_types: Sequence[str | None] | None = None,
                      references: Sequence[str | None] | None = None,
                      return_samples: bool = False, desc: str = "scoring") -> dict[str, list]:
        """Rewards of encoded sequences; for a VRM also ``objective_scores``, ``weights`` (and ``reward_std``).

        ``progress``: True shows a tqdm bar on stderr named ``desc`` (:func:`vrm.data.progress.progress_bar`); a
        callable is called with the number of sequences done.
        ``question_types``, ``references``: ignored (as by :meth:`score`). A conservative scorer
        (``conservative_lambda``) draws ``num_samples`` posterior samples (``conservative_samples`` when 0) and gives
        ``reward`` = their mean - lambda * std, plus ``reward_mean`` and ``reward_std``; ``return_samples`` adds the
        samples themselves (``reward_samples``, S per sequence).
        """
        self.check_num_samples(num_samples)
        results: dict[str, list] = {"reward": [None] * len(encoded)}
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
        bar = progress_bar(len(encoded), desc, unit="seq", disable=progress is not True)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            for key, values in self._forward([encoded[i] for i in idx], num_samples, return_samples).items():
                column = results.setdefault(key, [None] * len(encoded))
                for i, v in zip(idx, values):
                    column[i] = v
            bar.update(len(idx))
            if callable(progress):
                progress(len(idx))
        bar.close()
        return results

    def check_num_samples(self, num_samples: int) -> None:
        """A ValueError for a ``num_samples`` this model cannot score with (checked before any work)."""
        if not 0 <= num_samples <= MAX_UNCERTAINTY_SAMPLES:
            raise ValueError(f"num_samples={num_samples} must be in [0, {MAX_UNCERTAINTY_SAMPLES}] "
                             "(vrm.config.eval.MAX_UNCERTAINTY_SAMPLES: the samples of a batch are held at once)")
        if num_samples and self.name != "vrm":
            raise ValueError(f"num_samples={num_samples}: this is a Bradley-Terry reward model, which has no posterior "
                             "to sample a reward standard deviation from; score it with num_samples=0 (vrm-score: "
                             "without --num-samples)")
        if num_samples == 1 and self.conservative_lambda is not None:
            raise ValueError("a conservative reward needs num_samples >= 2 (or 0: conservative_samples)")

    def _forward(self, batch: list[EncodedSequence], num_samples: int, return_samples: bool = False
                 ) -> dict[str, list]:
        ids, mask = pad_sequences([e.input_ids for e in batch], self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if not self.is_vrm_model:
            return {"reward": self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float().cpu().tolist()}
        if self.conservative_lambda is not None and num_samples == 0:  # (1 is refused by check_num_samples)
            num_samples = self.conservative_samples
        # The ids alone, as every client passes them: the model finds the prompt/response boundary itself.
        out = self.model(ids, mask, return_details=True, num_samples=num_samples)
        fields = {"reward": out.logits[:, 0], "objective_scores": out.objective_scores, "weights": out.weights,
                  "reward_std": out.reward_std}
        if self.conservative_lambda is not None:
            fields["reward_mean"] = out.reward_samples.mean(dim=0)
            fields["reward"] = conservative_reward(out.reward_samples, self.conservative_lambda)
        if return_samples and out.reward_samples is not None:
            fields["reward_samples"] = out.reward_samples.T
        return {k: v.float().cpu().tolist() for k, v in fields.items() if v is not None}

    def score_details(self, prompts: Sequence[Prompt], responses: Sequence[str], num_samples: int = 0,
                      progress: bool = False, return_samples: bool = False, desc: str = "scoring"
                      ) -> dict[str, list]:
        """Rewards, and for a VRM the per-objective scores, weights and (``num_samples`` > 0) reward std
        (``progress``: a bar named ``desc``)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_encoded([self.encode_pair(p, r) for p, r in zip(prompts, responses)], num_samples, progress,
                                  return_samples=return_samples, desc=desc)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], *,
              question_types: Sequence[str] | None = None, references: Sequence[str] | None = None) -> list[float]:
        return self.score_details(prompts, responses)["reward"]

    def score_conversations(self, conversations: Sequence[Sequence[Message]]) -> list[float]:
        """One reward per message list whose last message is the assistant response to score."""
        prompts, responses = [], []
        for i, messages in enumerate(conversations):
            if len(messages) < 2 or messages[-1].get("role") != "assistant":
                raise ValueError(f"conversation {i} must end with an assistant message after at least one other "
                                 f"message; got roles {[m.get('role') for m in messages]}")
            prompts.append(list(messages[:-1]))
            responses.append(messages[-1]["content"])
        return self.score(prompts, responses)

    def score_queries(self, queries: Sequence[str], prompts: Sequence[str] | None = None) -> list[float]:
        """One reward per full conversation text (see :meth:`encode_query`)."""
        if prompts is not None and len(prompts) != len(queries):
            raise ValueError(f"{len(queries)} queries but {len(prompts)} prompts")
        encoded = [self.encode_query(q, None if prompts is None else prompts[i]) for i, q in enumerate(queries)]
        return self.score_encoded(encoded)["reward"]
