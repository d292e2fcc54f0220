"""The scorer options ``vrm-score`` and ``vrm-serve`` share, and the scorer they name."""

from __future__ import annotations

import argparse

from vrm.config.eval import MAX_UNCERTAINTY_SAMPLES
from vrm.config.rlhf import DEFAULT_CONSERVATIVE_SAMPLES
from vrm.scoring.base import DEFAULT_RESPONSE_MARKER

RESPONSE_MARKER_HELP = ("where the response starts in a full conversation text that the export's chat template did "
                        "not render (split at its LAST occurrence; a rendered one is split where the model finds "
                        f"its marker); default {DEFAULT_RESPONSE_MARKER!r}")


def count_option(minimum: int, maximum: int | None = None):
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


def add_scorer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scorer", choices=("model", "proxy"), default="model",
                        help="model: an exported reward model (--model, the default); proxy: the white-box proxy "
                             "reward of conf/scorer/proxy.yaml (rewards only)")
    parser.add_argument("--model", default=None, help="folder written by vrm-export (--scorer model)")
    parser.add_argument("--proxy-encoder", default=None,
                        help="--scorer proxy: the relevance encoder, a hub name or local folder (default: "
                             "proxy.yaml's)")
    parser.add_argument("--batch-size", type=count_option(1), default=None,
                        help="sequences per forward pass (default 32; for --scorer proxy, proxy.yaml's)")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:1, ... (default: cuda if available; for --scorer proxy, proxy.yaml's)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="cast the model to this dtype (default: as saved; not with --scorer proxy)")
    parser.add_argument("--response-marker", default=None, help=RESPONSE_MARKER_HELP)
    parser.add_argument("--conservative-lambda", type=float, default=None,
                        help="VRM export: reward = mean - LAMBDA * std over posterior samples (the conservative "
                             "reward); default: the deterministic reward")
    parser.add_argument("--conservative-samples", type=count_option(2, MAX_UNCERTAINTY_SAMPLES), default=None,
                        help="posterior samples of the conservative reward (default "
                             f"{DEFAULT_CONSERVATIVE_SAMPLES}, at most {MAX_UNCERTAINTY_SAMPLES})")


def check_scorer_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.scorer == "model" and args.model is None:
        parser.error("--model is required (or --scorer proxy)")
    if args.conservative_lambda is not None and not 0 <= args.conservative_lambda < float("inf"):
        parser.error(f"--conservative-lambda {args.conservative_lambda} must be a finite number >= 0")
    if args.conservative_samples is not None and args.conservative_lambda is None:
        parser.error("--conservative-samples needs --conservative-lambda")
    if args.scorer == "proxy":
        for option, value in (("--model", args.model), ("--dtype", args.dtype),
                              ("--conservative-lambda", args.conservative_lambda)):
            if value is not None:
                parser.error(f"{option} does not go with --scorer proxy")
    elif args.proxy_encoder is not None:
        parser.error("--proxy-encoder needs --scorer proxy")


def build_scorer(args: argparse.Namespace):
    """The scorer of the scoring options: an export loaded as a ``RewardScorer``, or the proxy as a ``TextScorer``."""
    if args.scorer == "proxy":
        from omegaconf import OmegaConf

        from vrm.config.compose import CONFIG_DIR
        from vrm.proxy import ProxyRewardScorer
        from vrm.scoring.base import TextScorer

        cfg = OmegaConf.load(CONFIG_DIR / "scorer" / "proxy.yaml")
        for key, value in (("encoder", args.proxy_encoder), ("batch_size", args.batch_size),
                           ("device", None if args.device == "auto" else args.device)):
            if value is not None:
                cfg[key] = value
        return TextScorer(ProxyRewardScorer.from_config(cfg), response_marker=args.response_marker)
    from vrm.scoring.scorer import RewardScorer

    return RewardScorer.from_pretrained(args.model, batch_size=args.batch_size or 32, device=args.device,
                                        dtype=args.dtype, response_marker=args.response_marker,
                                        conservative_lambda=args.conservative_lambda,
                                        conservative_samples=args.conservative_samples or DEFAULT_CONSERVATIVE_SAMPLES)
