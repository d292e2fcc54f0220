"""A preference-pairs file whose prompt and response lengths follow Anthropic HH-RLHF's (helpful subset).

The texts are made up (common English words that MiniLM's WordPiece tokenizer keeps whole, so one word is about
one token); only the lengths matter: the padding a training loader adds depends on them alone.

Where the lengths come from: the Llama 2 paper (Touvron et al. 2023, arXiv:2307.09288), Table 6 "Statistics of
human preference data for reward modeling", row "Anthropic Helpful" (the hh-rlhf helpful subsets): 122,387
comparisons, 3.0 turns per dialogue, 251.5 tokens per example, 17.7 tokens in the prompt (a human turn) and 88.4 in
the response (an assistant turn), all averages, in Llama 2 tokens. A dialogue of T human turns has T - 1 earlier
assistant turns in its prompt; chosen and rejected are two independent final assistant turns (as in hh-rlhf, where
the two transcripts differ only in the last turn). T is 1 + Poisson(m) with m set so that the mean example
(prompt + response) has the table's 251.5 tokens: 106.1 T = 251.5, so E[T] = 2.37 (the table's "3.0 turns" counts
turns its own way; the example length is what padding depends on). The table gives means only: the spread is our
assumption, a log-normal length per turn (``SIGMA``), as text lengths usually are.

    python experiments/hh_lengths.py OUT.jsonl [--pairs 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

#: Llama 2 paper, Table 6, "Anthropic Helpful": mean tokens of a human turn, of an assistant turn, of an example.
PROMPT_TURN_TOKENS, RESPONSE_TURN_TOKENS, EXAMPLE_TOKENS = 17.7, 88.4, 251.5
#: Mean human turns of a dialogue, so that the mean example has EXAMPLE_TOKENS tokens (about 2.37).
MEAN_TURNS = EXAMPLE_TOKENS / (PROMPT_TURN_TOKENS + RESPONSE_TURN_TOKENS)
#: Log-normal spread of one turn's length (our assumption: the source gives means only).
SIGMA = {"human": 0.7, "assistant": 0.8}
MAX_HUMAN_TURNS = 8
WORDS = ("the of and to in is you that it for on are with as be this have from or one had by but not what all were "
         "when we there can an your which their said if do will each about how up out them then she many some so "
         "these would other into has more her two like him see time could no make than first been its who now people "
         "my made over did down only way find use may water long little very after words called just where most know "
         "get through back much before go good new write our used me man too any day same right look think also around "
         "another came come work three word must because does part even place well such here take why help put "
         "different away again off went old number great tell men say small every found still between name should "
         "home big give air line set own under read last never us left end along while might next sound below saw "
         "something thought both few those always show large often together asked house world going want school "
         "important until form food keep children feet land side without boy once animal life enough took four head "
         "above kind began almost live page got earth need far hand high year mother light country father let night "
         "picture being study second soon story since white ever paper hard near sentence better best across during "
         "today however sure knew try told young sun thing whole hear example heard several change answer room sea "
         "against top turned learn point city play toward five himself usually money seen car morning").split()


def _turn(rng: np.random.Generator, kind: str) -> str:
    mean = PROMPT_TURN_TOKENS if kind == "human" else RESPONSE_TURN_TOKENS
    sigma = SIGMA[kind]
    # A log-normal with this mean: mu = log(mean) - sigma^2 / 2.
    n = max(1, int(round(rng.lognormal(np.log(mean) - sigma ** 2 / 2, sigma))))
    return " ".join(rng.choice(WORDS, size=n))


def hh_length_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` TRL-explicit pairs (prompt, chosen, rejected) with HH-RLHF-like lengths, the same for the same seed."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        turns = min(MAX_HUMAN_TURNS, 1 + int(rng.poisson(MEAN_TURNS - 1)))
        dialogue = []
        for t in range(turns):
            dialogue.append(f"Human: {_turn(rng, 'human')}")
            if t < turns - 1:
                dialogue.append(f"Assistant: {_turn(rng, 'assistant')}")
        pairs.append({"prompt": "\n\n".join(dialogue), "chosen": _turn(rng, "assistant"),
                      "rejected": _turn(rng, "assistant")})
    return pairs


def write_hh_length_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """Write :func:`hh_length_pairs` as JSON Lines, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(p) + "\n" for p in hh_length_pairs(n, seed)))
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_hh_length_pairs(args.out, args.pairs, args.seed)


if __name__ == "__main__":
    main()
