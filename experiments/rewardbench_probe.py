"""Score (prompt, chosen, rejected) pairs through RewardBench's own formatting and pipeline call, on CPU.

Run with a Python that has ``rewardbench`` (it pins an older transformers, so it lives in its own environment); this
file imports neither ``vrm`` nor anything of this project::

    python experiments/rewardbench_probe.py EXPORT pairs.json scores.json

It runs what ``rewardbench --model EXPORT --trust_remote_code --not_quantized`` runs for a sequence classifier,
except the parts that need a GPU or the hub: the tokenizer's chat template renders each pair
(``rewardbench.utils.prepare_dialogue_from_tokenizer``, as ``load_eval_dataset`` does when no fastchat template is
named), and transformers' ``text-classification`` pipeline (RewardBench's default ``pipeline_builder``) scores the
texts with RewardBench's ``reward_pipeline_kwargs``. The model is loaded with ``trust_remote_code=True`` (a
``--with-code`` or ``--plain`` export). Writes ``{"chosen": [...], "rejected": [...], "texts": [...]}``.
"""

import json
import sys

from rewardbench.utils import check_tokenizer_chat_template, prepare_dialogue_from_tokenizer
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

#: rewardbench.py's reward_pipeline_kwargs, with its default --batch_size 64 and --max_length 2048.
PIPELINE_KWARGS = {"batch_size": 64, "truncation": True, "padding": True, "max_length": 2048,
                   "function_to_apply": "none", "return_token_type_ids": False}


def main(export: str, pairs_path: str, out_path: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(export, trust_remote_code=True)
    if not check_tokenizer_chat_template(tokenizer):
        raise SystemExit(f"{export}: the tokenizer has no chat template")
    model = AutoModelForSequenceClassification.from_pretrained(export, trust_remote_code=True).eval()
    reward_pipe = pipeline("text-classification", model=model, tokenizer=tokenizer)
    if reward_pipe.tokenizer.pad_token_id is None:  # as rewardbench.py
        reward_pipe.model.config.pad_token_id = reward_pipe.tokenizer.eos_token_id
        reward_pipe.tokenizer.pad_token_id = reward_pipe.tokenizer.eos_token_id
    if reward_pipe.model.config.pad_token_id is None:
        reward_pipe.model.config.pad_token_id = reward_pipe.tokenizer.pad_token_id
    examples = [prepare_dialogue_from_tokenizer(dict(pair), tokenizer) for pair in json.load(open(pairs_path))]
    scores = {side: [r["score"] for r in reward_pipe([e[f"text_{side}"] for e in examples], **PIPELINE_KWARGS)]
              for side in ("chosen", "rejected")}
    scores["texts"] = [e["text_chosen"] for e in examples]
    json.dump(scores, open(out_path, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
