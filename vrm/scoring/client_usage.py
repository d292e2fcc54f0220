"""The model card's text on the input contract and, for each client, the lines that load and score an export.

One source for the card (``vrm.scoring.export.model_card``) and the conformance tests, which run these clients' own
code paths (``tests/test_clients.py``).
"""

from __future__ import annotations

INPUT_CONTRACT_TEXT = (
    "Every client gets the trained reward from one tokenised text: the conversation (prompt messages, then the "
    "response as the last, assistant, message) rendered by this tokenizer's chat template, tokenised without adding "
    "special tokens (`apply_chat_template(conversation, tokenize=True)`, or `tokenizer(rendered_text)`: this "
    "tokenizer adds none to a single text). The model finds where the prompt ends from the ids alone (the last "
    "`prompt_end_ids` = `{marker}` in config.json before the final token), so it needs no token types and no "
    "separate prompt. A bare `prompt + response` string has no such marker: it is scored as all prompt, with a "
    "warning.")

#: How each export kind is loaded: what to import first and the keyword arguments of ``from_pretrained``.
LOAD = {
    "vrm": ("import vrm  # registers model_type 'vrm' with transformers\n", ""),
    "vrm+code": ("", ", trust_remote_code=True"),
    "plain": ("", ""),
}


def client_usage(kind: str, path: str, text_pair: bool) -> str:
    """Markdown: for each client, the lines that load the export at ``path`` and score with it. ``text_pair``: the
    tokenizer lays out a (text, text_pair) as the plain template does (not with a model's own chat template)."""
    head, kwargs = LOAD[kind]
    grpo_trust = ", trust_remote_code=True" if kind == "vrm+code" else ""
    pair_line = ('\npipe({{"text": "How do I sort a list?", "text_pair": "Use sorted()."}})["score"]  '
                 "# (prompt, response)").format() if text_pair else ""
    tokenizer_note = ("`AutoTokenizer.from_pretrained(PATH, trust_remote_code=True)` (or `False`): with it unset, "
                      "transformers asks whether to run the code named by config.json's `auto_map` before it loads "
                      "any tokenizer." if kind == "vrm+code" else
                      "`AutoTokenizer.from_pretrained(PATH)` loads the tokenizer (chat template, eos) and asks nothing.")
    rewardbench = (f"""```bash
rewardbench --model={path} --not_quantized{' --trust_remote_code' if kind == 'vrm+code' else ''}  # (GPU) the tokenizer's chat template
```""" if kind != "vrm" else "RewardBench cannot `import vrm`: export with `--with-code` (or `--plain` for a BT model).")
    sections = [
        ("transformers pipeline", f"""```python
{head}from transformers import pipeline

pipe = pipeline("text-classification", model="{path}"{kwargs}, function_to_apply="none")
chat = [{{"role": "user", "content": "How do I sort a list?"}}, {{"role": "assistant", "content": "Use sorted()."}}]
pipe(pipe.tokenizer.apply_chat_template(chat, tokenize=False))[0]["score"]   # a conversation{pair_line}
```

{tokenizer_note} (The pipeline does not take a message list itself: render it as above.)"""),
        ("TRL GRPOTrainer", f"""```python
{head}from trl import GRPOConfig, GRPOTrainer

# conversational prompts ([{{"role": "user", "content": ...}}]): the export itself
GRPOTrainer(model=POLICY, reward_funcs="{path}", args=GRPOConfig(...{grpo_trust}), train_dataset=prompts)
# any prompts, plain strings too (TRL joins those into one bare string): the reward function
from vrm.integrations.trl import RewardFunction  # needs the vrm package
GRPOTrainer(model=POLICY, reward_funcs=[RewardFunction("{path}")], args=GRPOConfig(...), train_dataset=prompts)
```

TRL's default `bf16=True` runs the reward model under bf16 autocast (rewards then differ from the float32 ones
at the 1e-3 level); `GRPOConfig(bf16=False)` gives vrm-score's rewards exactly."""),
        ("TRL RewardTrainer (evaluate, or train on)", f"""```python
{head}from trl import RewardConfig, RewardTrainer

# conversational pairs: {{"prompt": [messages], "chosen": [{{"role": "assistant", ...}}], "rejected": [...]}}
trainer = RewardTrainer(model="{path}", args=RewardConfig(output_dir="out"{grpo_trust}), train_dataset=pairs)
trainer.evaluate(pairs)["eval_accuracy"]
```"""),
        ("RewardBench", rewardbench),
        ("OpenRLHF (remote reward model)", f"""```bash
vrm-serve --model {path} --port 5000   # POST /get_reward {{"query", "prompts", "labels"}} -> {{"rewards"}}
# in the OpenRLHF run: --remote_rm_url http://HOST:5000/get_reward
```"""),
        ("vrm", f"""```python
import vrm

vrm.RewardScorer.from_pretrained("{path}").score(["How do I sort a list?"], ["Use sorted()."])
```"""),
    ]
    return "\n\n".join(f"### {title}\n\n{body}" for title, body in sections)
