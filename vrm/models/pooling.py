"""Token positions, pooling, the prefix attention mask and length chunks of padded batches (torch only).

Part of the exportable model: ``vrm-export --with-code`` copies this file beside ``modeling_vrm.py``, which
imports it relatively, so it imports nothing but torch.

Shapes: B = sequences, L = tokens, H = encoder hidden size.
"""

from __future__ import annotations

import torch

POOLINGS = ("last", "mean", "cls")


def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the first non-padding token; works for left and right padding."""
    return attention_mask.long().argmax(dim=1)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last non-padding token; works for left and right padding."""
    length = attention_mask.shape[1]
    return length - 1 - attention_mask.long().flip(dims=[1]).argmax(dim=1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool (B, L, H) hidden states over the non-padding tokens into (B, H)."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if mode == "last":
        return hidden[rows, last_token_index(attention_mask)]
    if mode == "cls":
        return hidden[rows, first_token_index(attention_mask)]
    if mode == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"pooling={mode!r} is not one of {POOLINGS}")


def prompt_positions(attention_mask: torch.Tensor, prompt_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) column of each prompt token in the full sequences (its first ``prompt_lengths`` real tokens; clamped
    where a row's prompt is shorter than P) and the (B, P) right-padded mask of the prompts alone."""
    start = first_token_index(attention_mask)
    width = int(prompt_lengths.max())
    offsets = torch.arange(width, device=attention_mask.device)
    positions = (start.unsqueeze(1) + offsets).clamp(max=attention_mask.shape[1] - 1)
    mask = (offsets.unsqueeze(0) < prompt_lengths.unsqueeze(1)).to(attention_mask.dtype)
    return positions, mask


def prompt_slice(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_lengths: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None):
    """Cut the prompt prefix (its first ``prompt_lengths`` real tokens) out of full sequences.

    Returns right-padded (input_ids, attention_mask, token_type_ids) of the prompts alone, exactly the
    tokens the prompt was encoded to on its own.
    """
    positions, mask = prompt_positions(attention_mask, prompt_lengths)
    ids = input_ids.gather(1, positions) * mask
    types = None if token_type_ids is None else token_type_ids.gather(1, positions) * mask
    return ids, mask, types


def real_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) position of each token among its row's real tokens (0, 1, ...; -1 before the first, left padding)."""
    return attention_mask.long().cumsum(-1) - 1


def prompt_token_mask(attention_mask: torch.Tensor, prompt_lengths: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: the first ``prompt_lengths`` real tokens of each row (left or right padding)."""
    return attention_mask.bool() & (real_token_positions(attention_mask) < prompt_lengths.unsqueeze(1))


def prefix_attention_mask(attention_mask: torch.Tensor, prompt_lengths: torch.Tensor, dtype: torch.dtype,
                          additive: bool) -> torch.Tensor:
    """(B, 1, L, L) attention mask of one bidirectional pass that also encodes each prompt on its own.

    Prompt tokens attend to prompt tokens only, so in every layer their states are those of the prompt encoded
    alone (same tokens, positions and segments); response tokens attend to every real token. Padding queries
    attend to the prompt (never to nothing, which would make NaNs). ``additive``: 0 / dtype-min floats (eager
    attention), else booleans, True = attend (SDPA).
    """
    prompt = prompt_token_mask(attention_mask, prompt_lengths)
    allowed = attention_mask.bool().unsqueeze(1) & (~prompt.unsqueeze(2) | prompt.unsqueeze(1))
    allowed = allowed.unsqueeze(1)
    if not additive:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed,
                                                                                     torch.finfo(dtype).min)


#: An extra encoder pass must save at least this fraction of a batch's padded tokens, and at least this many
#: tokens: a pass has a fixed cost (a MiniLM forward and backward on CPU: about 30-60 tokens' worth).
CHUNK_MIN_SAVING, CHUNK_MIN_TOKENS = 0.05, 64


def chunk_ends(sorted_lengths: list[int], max_chunks: int, min_saving: float = CHUNK_MIN_SAVING,
               min_tokens: int = CHUNK_MIN_TOKENS) -> list[int]:
    """End rows of at most ``max_chunks`` consecutive groups of ascending lengths that minimise the padded tokens.

    Each group is padded to its own longest row, so it costs ``rows * longest``, plus, for every group after the
    first, the larger of ``min_saving`` times the one-group cost and ``min_tokens``. The groups are chosen by dynamic
    programming over the points where the length changes (exact, and cheap: a batch has few distinct lengths); ties
    go to fewer groups.
    """
    n = len(sorted_lengths)
    if n == 0:
        return []
    # A group can only usefully end after the last row of a length.
    ends = [i + 1 for i in range(n) if i + 1 == n or sorted_lengths[i + 1] != sorted_lengths[i]]
    m = len(ends)
    # costs[c][j]: fewest padded tokens of rows [0, ends[j]) in exactly c + 1 groups; cuts[c][j]: where that
    # solution's last group starts (an index into ends).
    costs = [[ends[j] * sorted_lengths[ends[j] - 1] for j in range(m)]]
    cuts: list[list[int]] = [[-1] * m]
    for c in range(1, min(max_chunks, m)):
        cost, cut = [float("inf")] * m, [-1] * m
        for j in range(c, m):
            width = sorted_lengths[ends[j] - 1]
            for i in range(c - 1, j):
                total = costs[c - 1][i] + (ends[j] - ends[i]) * width
                if total < cost[j]:
                    cost[j], cut[j] = total, i
        costs.append(cost)
        cuts.append(cut)
    penalty = max(min_saving * costs[0][m - 1], min_tokens)
    groups = min(range(len(costs)), key=lambda c: (costs[c][m - 1] + c * penalty, c))
    bounds, j = [n], m - 1
    for c in range(groups, 0, -1):
        j = cuts[c][j]
        bounds.append(ends[j])
    return bounds[::-1]


def length_groups(attention_mask: torch.Tensor, max_chunks: int) -> list[tuple[torch.Tensor, slice]] | None:
    """Rows of a padded batch cut into length-sorted groups, each as (row indices, the columns of its longest row).

    None when one pass is best: ``max_chunks`` 1, every row as long as the batch, or mixed left and right padding.
    Each group then runs trimmed to its longest row, so fewer padding tokens go through the encoder; the real tokens
    see exactly what they saw in one padded pass (padding is masked out of attention).
    """
    if max_chunks <= 1:
        return None
    lengths = attention_mask.sum(dim=1)
    width = attention_mask.shape[1]
    if bool((lengths == width).all()):
        return None
    right = bool(attention_mask[:, 0].bool().all())
    left = bool(attention_mask[:, -1].bool().all())
    if right == left:  # neither (mixed padding) or both (impossible with short rows)
        return None
    order = torch.argsort(lengths, stable=True)
    sorted_lengths = lengths[order].tolist()
    ends = chunk_ends(sorted_lengths, max_chunks)
    if len(ends) == 1:
        return None
    starts = [0, *ends[:-1]]
    return [(order[a:b], slice(0, sorted_lengths[b - 1]) if right else slice(width - sorted_lengths[b - 1], width))
            for a, b in zip(starts, ends)]
