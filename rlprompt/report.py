"""The comparison report: ``python -m rlprompt.report RUN_DIR... [--out DIR]``.

Reads every ``result.json`` under the given run directories (a comparison directory, single runs, or a
mix) and writes ``report.md`` (one row per method: test accuracy mean ± std over seeds and the costs) and
``learning_curves.png`` (best dev accuracy so far against task-LM tokens processed, one line per method).
The driver (:mod:`rlprompt.driver`) writes it at the end of a comparison run; the library side is
:mod:`rlprompt.comparison`.
"""

from __future__ import annotations

from rlprompt.comparison import write_report
from rlprompt.console import add_verbose_flag
from rlprompt.errors import ArgumentParser, run_cli


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m rlprompt.report", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run directories (comparison directories or single runs)")
    p.add_argument(
        "--out",
        help="where to write report.md, report.json and learning_curves.png (default: the first run)",
    )
    add_verbose_flag(p)
    args = p.parse_args(argv)
    text = write_report(args.runs, args.out or args.runs[0])
    print(text)
    return 0


if __name__ == "__main__":
    run_cli(main)
