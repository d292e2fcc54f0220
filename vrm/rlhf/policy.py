"""The policy of ``vrm-rlhf``: any HF causal LM, or the synthetic world's own small GPT-2 trained from scratch.

The synthetic policy (``policy.path: null``) is fitted once per :class:`~vrm.config.rlhf.SFTConfig` and cached:
a byte-level BPE tokenizer (the ``tokenizers`` library) learnt from the benchmark's prompts and responses, and a
GPT-2 of ``n_layer`` x ``n_embd`` trained by TRL's ``SFTTrainer`` on (prompt, response) examples in which every
attribute is drawn 50/50 and the cue appears at ``cue_rate``, so that it writes the benchmark's language and can add or
drop the cue and each attribute. The folder is an ordinary HF model folder (safetensors), loadable by any client.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path

from vrm.config.rlhf import PolicyConfig, SFTConfig

EOS, PAD = "<|endoftext|>", "<pad>"


def cache_root(cache_dir: str | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("VRM_CACHE", Path.home() / ".cache" / "vrm")) / "policies"


def sft_examples(cfg: SFTConfig, separator: str) -> list[dict]:
    """``num_examples`` (prompt, completion) examples of the synthetic world (drawn from ``cfg.seed``)."""
    from vrm.data.synthetic import sample_candidates, sample_prompts

    if not 0.0 <= cfg.cue_rate <= 1.0:
        raise ValueError(f"policy.sft.cue_rate must lie in [0, 1], got {cfg.cue_rate}")
    rng = random.Random(cfg.seed)
    examples = []
    for info in sample_prompts(cfg.num_examples, cfg.seed):
        candidate = sample_candidates(info, 1, rng, spurious_prob=cfg.cue_rate, cue=cfg.cue)[0]
        examples.append({"prompt": info["prompt"] + separator, "completion": candidate["response"]})
    return examples


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer learnt from ``texts`` (exact round trip), as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD, bos_token=EOS,
                                   padding_side="left")


def sft_key(cfg: SFTConfig, separator: str) -> str:
    settings = json.dumps({**asdict(cfg), "separator": separator, "version": 1}, sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def synthetic_policy(cfg: SFTConfig, separator: str, cache_dir: str | None, progress: bool = True) -> Path:
    """The folder of the synthetic SFT policy of ``cfg``: trained now (written atomically) or found in the cache."""
    folder = cache_root(cache_dir) / f"sft_{sft_key(cfg, separator)}"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    examples = sft_examples(cfg, separator)
    tokenizer = build_tokenizer([e["prompt"] + e["completion"] for e in examples], cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    work = folder.with_name(folder.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    args = TRLSFTConfig(
        output_dir=str(work / "trainer"), num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=20, weight_decay=0.0,
        logging_steps=50, save_strategy="no", report_to=[], seed=cfg.seed, max_length=128, use_cpu=True,
        disable_tqdm=not progress, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer)
    trainer.train()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(str(work / "model"), safe_serialization=True)
    tokenizer.save_pretrained(str(work / "model"))
    (work / "model" / "sft_settings.json").write_text(json.dumps({**asdict(cfg), "separator": separator}, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(work / "model", folder)
    shutil.rmtree(work, ignore_errors=True)
    return folder


def policy_path(cfg: PolicyConfig, separator: str, cache_dir: str | None, progress: bool = True) -> str:
    """The policy to start from: ``cfg.path``, or the cached synthetic SFT policy."""
    if cfg.path is not None:
        return cfg.path
    return str(synthetic_policy(cfg.sft, separator, cache_dir, progress))


def load_policy(path: str, trust_remote_code: bool = False):
    """(model, tokenizer) of a causal LM folder or hub name; the tokenizer pads on the left, as generation needs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust_remote_code)
    return model, tokenizer
