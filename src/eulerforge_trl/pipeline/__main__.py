"""`python -m eulerforge_trl.pipeline PIPELINE ...`: the entry point only; `eulerforge_trl.cli` parses."""

import sys

from ..cli import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main())
