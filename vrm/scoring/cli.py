"""Console entry points of the scoring stage: ``vrm-export``, ``vrm-score`` and ``vrm-serve`` (parse, then call)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vrm.scoring.base import DEFAULT_RESPONSE_MARKER, QuerySplitError

RESPONSE_MARKER_HELP = ("where the response starts in a full conversation text (split at its LAST occurrence); "
                        "default: the chat template's generation prompt, or "
                        f"{DEFAULT_RESPONSE_MARKER!r} without a template")


class InputLineError(ValueError):
    """A bad line of a ``vrm-score`` input file; the message names the file, the line and the field."""

    def __init__(self, path: Path, line: int, field: str | None, why: str):
        where = f"file {path}, line {line}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {why}")


def _count(minimum: int, maximum: int | None = None):
    """An argparse type: an integer of at least ``minimum`` (and at most ``maximum``); a bad one is an option error
    naming the value, before anything is loaded."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"{value} must be {bound}")
        return value
    return parse


def _scorer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scorer", choices=("model", "proxy"), default="model",
                        help="model: an exported reward model (--model, the default); proxy: the white-box proxy "
                             "reward of conf/scorer/proxy.yaml (rewards only)")
    parser.add_argument("--model", default=None, help="folder written by vrm-export (--scorer model)")
    parser.add_argument("--proxy-encoder", default=None,
                        help="--scorer proxy: the relevance encoder, a hub name or local folder (default: "
                             "proxy.yaml's)")
    parser.add_argument("--batch-size", type=_count(1), default=None,
                        help="sequences per forward pass (default 32; for --scorer proxy, proxy.yaml's)")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:1, ... (default: cuda if available; for --scorer proxy, proxy.yaml's)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="cast the model to this dtype (default: as saved; not with --scorer proxy)")
    parser.add_argument("--response-marker", default=None, help=RESPONSE_MARKER_HELP)


def _check_scorer_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.scorer == "model" and args.model is None:
        parser.error("--model is required (or --scorer proxy)")
    if args.scorer == "proxy":
        for option, value in (("--model", args.model), ("--dtype", args.dtype)):
            if value is not None:
                parser.error(f"{option} does not go with --scorer proxy")
    elif args.proxy_encoder is not None:
        parser.error("--proxy-encoder needs --scorer proxy")


def build_scorer(args: argparse.Namespace):
    """The scorer of the scoring options: an export loaded as a ``RewardScorer``, or the proxy as a ``TextScorer``."""
    if args.scorer == "proxy":
        from omegaconf import OmegaConf

        from vrm.proxy import ProxyRewardScorer
        from vrm.scoring.base import TextScorer
        from vrm.training.compose import CONFIG_DIR

        cfg = OmegaConf.load(CONFIG_DIR / "scorer" / "proxy.yaml")
        for key, value in (("encoder", args.proxy_encoder), ("batch_size", args.batch_size),
                           ("device", None if args.device == "auto" else args.device)):
            if value is not None:
                cfg[key] = value
        return TextScorer(ProxyRewardScorer.from_config(cfg), response_marker=args.response_marker)
    from vrm.scoring.scorer import RewardScorer

    return RewardScorer.from_pretrained(args.model, batch_size=args.batch_size or 32, device=args.device,
                                        dtype=args.dtype, response_marker=args.response_marker)


def _run(main, *args) -> None:
    from vrm.cli import report_and_exit, user_error_types

    try:
        main(*args)
    except (RuntimeError, OSError, *user_error_types()) as err:
        report_and_exit(err)


# -- vrm-export -------------------------------------------------------------------------------------
def export_main(argv: Sequence[str] | None = None) -> None:
    """``vrm-export CHECKPOINT OUT_DIR [--with-code | --plain]``."""
    parser = argparse.ArgumentParser(
        prog="vrm-export",
        description="Export a vrm training checkpoint (.ckpt) as a Hugging Face folder: config.json, "
                    "model.safetensors, the tokenizer, a model card (README.md) and vrm_manifest.json (package "
                    "versions, file hashes). 'import vrm' then lets AutoModelForSequenceClassification load it. "
                    "Written atomically.")
    parser.add_argument("checkpoint", help="Lightning checkpoint written by vrm-train (e.g. .../checkpoints/last.ckpt)")
    parser.add_argument("out_dir", help="folder to write; an existing export there is replaced when complete")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--with-code", action="store_true",
                      help="also write modeling_vrm.py and an auto_map, so from_pretrained(OUT_DIR, "
                           "trust_remote_code=True) works without the vrm package")
    kind.add_argument("--plain", action="store_true",
                      help="BT models with a decoder-only encoder: write the encoder architecture's own "
                           "...ForSequenceClassification (e.g. LlamaForSequenceClassification), loadable without vrm")
    args = parser.parse_args(argv)

    def main() -> None:
        from vrm.scoring.export import export_checkpoint

        out = export_checkpoint(args.checkpoint, args.out_dir, with_code=args.with_code, plain=args.plain)
        print(f"exported {args.checkpoint} -> {out}")

    _run(main)


# -- vrm-score --------------------------------------------------------------------------------------
def _text(value, path: Path, line: int, field: str) -> str:
    """A string that is text (no invalid UTF-8, no lone surrogate: :func:`vrm.data.textio.undecodable`)."""
    from vrm.data.textio import undecodable

    if not isinstance(value, str):
        raise InputLineError(path, line, field, "must be a string")
    why = undecodable(value)
    if why is not None:
        raise InputLineError(path, line, field, f"undecodable text: {why}")
    return value


def _messages(value, path: Path, line: int, field: str) -> list[dict]:
    from vrm.data.schema import MESSAGE_ROLES

    if not isinstance(value, list) or not value:
        raise InputLineError(path, line, field, "must be a non-empty list of {\"role\", \"content\"} messages")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise InputLineError(path, line, f"{field}[{i}]", "must be an object with 'role' and 'content'")
        for key in ("role", "content"):
            _text(message.get(key), path, line, f"{field}[{i}].{key}")
        if message["role"] not in MESSAGE_ROLES:
            raise InputLineError(path, line, f"{field}[{i}].role", f"unknown role {message['role'][:40]!r}; expected "
                                                                   f"one of {list(MESSAGE_ROLES)}")
    return value


def _encode_row(row: dict, scorer, path: Path, line: int):
    """The encoded sequence of one input object (``prompt``+``response``, ``messages`` or ``query``)."""
    from vrm.data.schema import QUESTION_TYPES

    if row.get("question_type") not in (None, *QUESTION_TYPES):
        raise InputLineError(path, line, "question_type", f"must be one of {list(QUESTION_TYPES)}")
    if not isinstance(row.get("reference", ""), str | None):
        raise InputLineError(path, line, "reference", "must be a string (a reference answer)")
    if row.get("reference") is not None:
        _text(row["reference"], path, line, "reference")
    if "query" in row:
        if not isinstance(row["query"], str):
            raise InputLineError(path, line, "query", "must be a string (a full conversation text)")
        _text(row["query"], path, line, "query")
        try:
            return scorer.encode_query(row["query"])
        except QuerySplitError as err:
            raise InputLineError(path, line, "query", str(err)) from err
    if "messages" in row:
        messages = _messages(row["messages"], path, line, "messages")
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise InputLineError(path, line, "messages", "must end with the assistant response after at least one "
                                                         "other message")
        prompt, response, field = messages[:-1], messages[-1]["content"], "messages"
    else:
        if "prompt" not in row:
            raise InputLineError(path, line, "prompt", "missing: give 'prompt' and 'response', 'messages', or "
                                                       "'query'")
        prompt = row["prompt"]
        prompt = _text(prompt, path, line, "prompt") if isinstance(prompt, str) else _messages(prompt, path, line,
                                                                                               "prompt")
        if "response" not in row:
            raise InputLineError(path, line, "response", "missing")
        response, field = _text(row["response"], path, line, "response"), "prompt"
    try:
        return scorer.encode_pair(prompt, response)
    except ValueError as err:
        raise InputLineError(path, line, field, f"cannot be tokenised: {err}") from err


def read_score_input(path: Path, scorer) -> tuple[list[dict], list]:
    """Every non-blank line of a JSON Lines file and its encoded sequence; the first bad line raises (the file is
    decoded as training files are: :func:`vrm.data.textio.json_lines`)."""
    from vrm.data.textio import json_lines

    rows, encoded = [], []
    for line, _, row in json_lines(path):
        if isinstance(row, ValueError):
            raise InputLineError(path, line, None, f"not valid JSON ({row})")
        if not isinstance(row, dict):
            raise InputLineError(path, line, None, f"must be a JSON object, not {type(row).__name__}")
        encoded.append(_encode_row(row, scorer, path, line))
        rows.append(row)
    return rows, encoded


def score_file(scorer, input_path: Path, output_path: Path, num_samples: int = 0, progress: bool = True) -> int:
    """Score a JSON Lines file of prompt/response lines, or a file of preference pairs
    (:mod:`vrm.scoring.inputs`), into a JSON Lines file (each input row plus its rewards); returns the rows.

    A line's ``question_type`` and ``reference`` go to the scorer (the proxy uses them).
    """
    from vrm.data.textio import write_jsonl_atomically
    from vrm.scoring.inputs import is_pairs_file, score_pairs_file

    if is_pairs_file(input_path):
        records = score_pairs_file(scorer, input_path, num_samples, progress)
    else:
        rows, encoded = read_score_input(input_path, scorer)
        details = scorer.score_encoded(encoded, num_samples=num_samples, progress=progress,
                                       question_types=[row.get("question_type") for row in rows],
                                       references=[row.get("reference") for row in rows])
        records = [{**row, **{key: values[i] for key, values in details.items()}} for i, row in enumerate(rows)]
    write_jsonl_atomically(output_path, records)
    return len(records)


def score_main(argv: Sequence[str] | None = None) -> None:
    """``vrm-score --model DIR | --scorer proxy --input FILE --output FILE``."""
    parser = argparse.ArgumentParser(
        prog="vrm-score",
        description="Score a JSON Lines file with an exported reward model (or the white-box proxy reward, "
                    "--scorer proxy). Each line is an object with 'prompt' "
                    "(a string or a list of {role, content} messages) and 'response', or 'messages' (a conversation "
                    "ending with the assistant response), or 'query' (a full conversation text, split at the "
                    "response marker); optional 'question_type' (open, closed or \"\") and 'reference' go to the "
                    "proxy. Each output line is the input object plus 'reward' and, for a VRM, 'objective_scores' "
                    "and 'weights' (and 'reward_std' with --num-samples). A file of preference pairs (a JSON Lines "
                    "file whose first line has 'chosen', or a .json, .csv or .parquet file; TRL's explicit "
                    "prompt/chosen/rejected or conversational layout, read as vrm-train reads data=jsonl files) "
                    "gets 'reward_chosen', 'reward_rejected' and 'reward_margin' (chosen minus rejected) per pair, "
                    "and the VRM outputs with the same _chosen/_rejected suffixes.")
    _scorer_options(parser)
    parser.add_argument("--input", required=True, type=Path,
                        help="JSON Lines file of prompt/response lines, or a file of preference pairs, to score")
    parser.add_argument("--output", required=True, type=Path, help="JSON Lines file to write (replaced when done)")
    parser.add_argument("--num-samples", type=_count(0), default=0,
                        help="VRM: Monte Carlo samples for a reward standard deviation (default 0: none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    _check_scorer_options(parser, args)
    if args.scorer == "proxy" and args.num_samples:
        parser.error("--num-samples needs a VRM export (--model)")

    if args.output.is_dir():
        parser.error(f"--output {args.output} is a folder; give the file to write")

    def main() -> None:
        if not args.input.is_file():
            raise FileNotFoundError(f"--input {args.input} " + ("is a folder, not a file" if args.input.is_dir()
                                                                else "does not exist"))
        scorer = build_scorer(args)
        n = score_file(scorer, args.input, args.output, args.num_samples, progress=not args.no_progress)
        print(f"scored {n} lines -> {args.output}", file=sys.stderr)

    _run(main)


# -- vrm-serve --------------------------------------------------------------------------------------
def serve_main(argv: Sequence[str] | None = None) -> None:
    """``vrm-serve --model DIR | --scorer proxy --port N``."""
    from vrm.scoring.server import DEFAULT_HOST, DEFAULT_PORT, ServerLimits

    defaults = ServerLimits()
    parser = argparse.ArgumentParser(
        prog="vrm-serve",
        description="Serve an exported reward model (or the white-box proxy reward, --scorer proxy) over HTTP: POST /get_reward (OpenRLHF's {\"query\": [...]} -> "
                    "{\"rewards\": [...]}), POST /score ({\"pairs\": [{prompt, response}]} -> rewards and VRM "
                    "extras), GET /health.")
    _scorer_options(parser)
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=_count(0, 65535), default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size,
                        help=f"texts per request (default {defaults.max_batch_size})")
    parser.add_argument("--max-text-chars", type=int, default=defaults.max_text_chars,
                        help=f"characters per text (default {defaults.max_text_chars})")
    parser.add_argument("--max-num-samples", type=int, default=defaults.max_num_samples,
                        help=f"Monte Carlo samples per /score request (default {defaults.max_num_samples})")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    args = parser.parse_args(argv)
    _check_scorer_options(parser, args)

    def main() -> None:
        from vrm.scoring.server import serve

        limits = ServerLimits(args.max_batch_size, args.max_text_chars, args.max_num_samples)
        name = args.model or f"proxy ({args.proxy_encoder or 'conf/scorer/proxy.yaml'})"
        serve(build_scorer(args), args.host, args.port, limits, name, args.log_level)

    _run(main)
