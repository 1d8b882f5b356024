"""Run several `eulerforge_trl.train` commands one after another in one launched process.

The multi-process tests start `accelerate launch` once for several stages: on a small CPU, starting
two processes (torch, transformers and TRL imported twice) costs more than training the tiny model.

    accelerate launch --config_file CONFIG tests/multiprocess_stages.py RUNS.json

RUNS.json: `[{"argv": [...], "digests": "DIR"}, ...]`; each run's ranks write their digests and
holdings into its own DIR (`rank_probe.py`). Stops at the first run that fails, with its code.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    from eulerforge_trl.train import main as train
    from rank_probe import RANK_DIGEST_ENV, install

    install()
    for run in json.loads(Path(sys.argv[1]).read_text()):
        os.environ[RANK_DIGEST_ENV] = run["digests"]
        code = train(run["argv"])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
