"""``python -m nitihw.sim.explore.synth REPORT.json...``: the Markdown tables of docs/synth.md."""

import json
import sys

from nitihw.sim.explore.synth.report import markdown_tables


def main(argv=None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m nitihw.sim.explore.synth REPORT.json...", file=sys.stderr)
        return 2
    reports = [json.loads(open(p).read()) for p in paths]
    print(markdown_tables(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
