"""``vrm-serve``: an export or the proxy over HTTP (:mod:`vrm.scoring.server`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from vrm.cli.app import call_reporting_errors
from vrm.cli.scorer_options import add_scorer_options, build_scorer, check_scorer_options, count_option
from vrm.config.eval import MAX_UNCERTAINTY_SAMPLES


def main(argv: Sequence[str] | None = None) -> None:
    """``vrm-serve --model DIR | --scorer proxy --port N``."""
    from vrm.scoring.batching import BatchSettings
    from vrm.scoring.server import DEFAULT_HOST, DEFAULT_PORT, ServerLimits

    defaults, batch_defaults = ServerLimits(), BatchSettings()
    parser = argparse.ArgumentParser(
        prog="vrm-serve",
        description="Serve an exported reward model (or the white-box proxy reward, --scorer proxy) over HTTP: POST /get_reward (OpenRLHF's {\"query\": [...]} -> "
                    "{\"rewards\": [...]}), POST /score ({\"pairs\": [{prompt, response}]} -> rewards and VRM "
                    "extras), GET /health.")
    add_scorer_options(parser)
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=count_option(0, 65535), default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size,
                        help=f"texts per request (default {defaults.max_batch_size})")
    parser.add_argument("--max-text-chars", type=int, default=defaults.max_text_chars,
                        help=f"characters per text (default {defaults.max_text_chars})")
    parser.add_argument("--max-num-samples", type=count_option(0, MAX_UNCERTAINTY_SAMPLES),
                        default=defaults.max_num_samples,
                        help=f"Monte Carlo samples per /score request (default and most {defaults.max_num_samples})")
    parser.add_argument("--header-timeout", type=float, default=defaults.header_timeout,
                        help=f"seconds a connection may take to send a request's headers (default "
                             f"{defaults.header_timeout:g}; a slower one is closed)")
    parser.add_argument("--body-timeout", type=float, default=defaults.body_timeout,
                        help=f"seconds a request may take to send its body (default {defaults.body_timeout:g}; a "
                             "slower one gets a 408)")
    parser.add_argument("--batch-window-ms", type=float, default=batch_defaults.window_ms,
                        help="milliseconds the oldest waiting request waits for concurrent ones to share its forward "
                             f"passes (default {batch_defaults.window_ms:g}; 0: only those already waiting)")
    parser.add_argument("--max-batch-rows", type=count_option(1), default=batch_defaults.max_rows,
                        help=f"most texts gathered from concurrent requests into one batch (default "
                             f"{batch_defaults.max_rows})")
    parser.add_argument("--max-batch-tokens", type=count_option(1), default=batch_defaults.max_tokens,
                        help=f"most tokens gathered into one batch (default {batch_defaults.max_tokens})")
    parser.add_argument("--no-batching", action="store_true",
                        help="score each request alone, one at a time (concurrent requests are not gathered)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    args = parser.parse_args(argv)
    check_scorer_options(parser, args)
    if not 0 <= args.batch_window_ms <= 10_000:
        parser.error(f"--batch-window-ms {args.batch_window_ms:g} must be in [0, 10000]")

    def run() -> None:
        from vrm.scoring.server import serve

        limits = ServerLimits(args.max_batch_size, args.max_text_chars, args.max_num_samples, args.header_timeout,
                              args.body_timeout)
        name = args.model or f"proxy ({args.proxy_encoder or 'conf/scorer/proxy.yaml'})"
        batching = BatchSettings(not args.no_batching, args.batch_window_ms, args.max_batch_rows,
                                 args.max_batch_tokens)
        serve(build_scorer(args), args.host, args.port, limits, name, args.log_level, batching)

    call_reporting_errors(run, extra=(RuntimeError, OSError))
