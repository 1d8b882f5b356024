"""The example tasks behind the shipped data (`examples/data/`): how each file is generated, and the
rule it was built to reward, so tests, `eulerforge evaluate --judge` and `training.reward_funcs` can
check what a run really learned. Not part of the library's training path.

- `animals`: the tiny model's task (`examples/data/*.jsonl`): `pleasant_score(prompt, response)`,
  the judges `pleasant_score_judge` and `well_formed`.
- `reviews`: the conversational review task's rule (`examples/data/chat/`): `review_reward`, a reward
  function with TRL's signature; `review_data` generates its files.
- `arithmetic`: a task with a right answer (`examples/data/math/`): `exact_match_reward`, the
  reward function that checks the `answer` column, its judge `exact_match`, and the generator.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl_files(out_dir: str | Path, files: dict[str, list[dict]]) -> dict[str, Path]:
    """`{name: rows}` -> one JSONL file each under `out_dir` (created if needed); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, rows in files.items():
        path = out / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        written[name] = path
    return written
