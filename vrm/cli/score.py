"""``vrm-score``: score a JSON Lines file or a file of preference pairs with an export or the proxy
(:mod:`vrm.scoring.score_file`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vrm.cli.app import call_reporting_errors
from vrm.cli.scorer_options import add_scorer_options, build_scorer, check_scorer_options, count_option
from vrm.config.eval import MAX_UNCERTAINTY_SAMPLES
from vrm.scoring.score_file import score_file


def main(argv: Sequence[str] | None = None) -> None:
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
    add_scorer_options(parser)
    parser.add_argument("--input", required=True, type=Path,
                        help="JSON Lines file of prompt/response lines, or a file of preference pairs, to score")
    parser.add_argument("--output", required=True,
                        help="JSON Lines file to write (replaced when done; never the input, a device or a FIFO)")
    parser.add_argument("--replace-columns", action="store_true",
                        help="allow input rows that already hold an output key (e.g. a 'reward' label): the output "
                             "replaces their values (by default such a row is refused, naming it)")
    parser.add_argument("--num-samples", type=count_option(0, MAX_UNCERTAINTY_SAMPLES), default=0,
                        help="VRM: Monte Carlo samples for a reward standard deviation (default 0: none; at most "
                             f"{MAX_UNCERTAINTY_SAMPLES}; a BT export has no posterior to sample and refuses it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    check_scorer_options(parser, args)
    if args.scorer == "proxy" and args.num_samples:
        parser.error("--num-samples needs a VRM export (--model)")

    if Path(args.output).is_dir():
        parser.error(f"--output {args.output} is a folder; give the file to write")
    if args.output.endswith(("/", os.sep)):
        parser.error(f"--output {args.output} ends with '/', a folder's name; give the file to write")
    args.output = Path(args.output)

    def run() -> None:
        from vrm.data.files import check_output
        from vrm.data.textio import input_file

        if args.input.is_dir():
            raise FileNotFoundError(f"--input {args.input} is a folder, not a file")
        input_file(args.input, "--input file")
        model_files = list(Path(args.model).glob("*")) if args.model else []  # the export is an input too
        check_output(args.output, [args.input, *model_files], "--output")  # before the model loads
        scorer = build_scorer(args)
        n = score_file(scorer, args.input, args.output, args.num_samples, progress=not args.no_progress,
                       replace_columns=args.replace_columns)
        print(f"scored {n} lines -> {args.output}", file=sys.stderr)

    call_reporting_errors(run, extra=(RuntimeError, OSError))
