"""Re-render report.md, summary.json and the figures of a finished run from its saved files.

    python scripts/report.py results/<run>
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from grouping import run_files  # noqa: E402
from grouping.artifacts import RunDirectory  # noqa: E402
from grouping.config import ConfigError  # noqa: E402
from grouping.evaluation.report import write_report  # noqa: E402

REQUIRED = (run_files.CONFIG, run_files.MANIFEST, run_files.GROUPS, run_files.COMPARISON,
            run_files.AFFINITY)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/report.py RUN_DIRECTORY_OR_URI", file=sys.stderr)
        return 2
    try:
        run = RunDirectory(argv[0], resume=True)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    missing = [name for name in REQUIRED if not run.file(name).is_file()]
    if missing:
        print(f"error: {argv[0]}: not a finished run (missing {', '.join(missing)})",
              file=sys.stderr)
        return 2
    write_report(run.path)
    run.publish()
    print(f"report: {run.location.rstrip('/')}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
