"""`python -m eulerforge_trl.pipeline PIPELINE ...`: the entry point only; `pipeline.command` parses."""

import sys

from .command import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main())
