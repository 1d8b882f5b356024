"""The shape of the package: one stage table that matches the schema, and imports that flow one way.

Layers, bottom to top (a module may import its own layer and the ones below, never one above):

    base      errors, runtime, distributed, stages, rundir   (no package imports above them)
    config    config/                               (the typed preset tree)
    io        data/, models/, rewards/, generation/ (rows, models, reward functions, rollout engines)
    trainers  trainers/                             (one runner per stage)
    pipeline  pipeline/                             (run one stage / the whole pipeline)
    entry     cli, api, train, the package __init__  (`python -m eulerforge_trl.pipeline` is pipeline's own)
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from pathlib import Path

import pytest

import eulerforge_trl
from eulerforge_trl.stages import STAGES, pipeline_chains

PACKAGE = "eulerforge_trl"
ROOT = Path(eulerforge_trl.__file__).resolve().parent

LAYERS = ["base", "config", "io", "trainers", "pipeline", "entry"]
# module (or package prefix) -> layer; the longest matching prefix wins
LAYER_OF = {
    "errors": "base",
    "runtime": "base",
    "distributed": "base",  # what an FSDP/DeepSpeed launch asks for; the CPU promotion to FSDP2
    "stages": "base",
    "rundir": "base",
    "config": "config",
    "examples": "io",  # the example tasks: data generators and their rewards (the tiny tokenizer trains on one)
    "data": "io",
    "models": "io",
    "rewards": "io",  # reward functions by name (TRL's signature): leaves like data/
    "generation": "io",  # rollout engines (hf, vllm): sample a model, below the trainers that use them
    "trainers": "trainers",
    "pipeline": "pipeline",
    "evaluation": "pipeline",  # scores models on data, as the pipeline runs them; the CLI calls it
    "export": "pipeline",  # a stage's final/ -> a standalone transformers directory; the CLI calls it
    "cli": "entry",
    "api": "entry",
    "train": "entry",
    "": "entry",  # eulerforge_trl/__init__.py only: lazy exports of the public API
}

# ------------------------------------------------------------------------------ the stage table


def _schema():
    from eulerforge_trl.config.schema import DataSection, Preset, TrainingSection

    return Preset, TrainingSection, DataSection


def _field_type(cls, name: str):
    hints = typing.get_type_hints(cls)
    assert name in hints, f"{cls.__name__} has no field {name!r}"
    return hints[name]


def _resolve_key(dotted: str):
    """The type of a dotted preset key, walking the schema's dataclasses (`training.ppo` -> PPOSection)."""
    Preset, _, _ = _schema()
    node = Preset
    for part in dotted.split("."):
        assert dataclasses.is_dataclass(node), f"{dotted}: {part!r} is under a leaf, not a section"
        node = _field_type(node, part)
        if typing.get_origin(node) in (typing.Union, types.UnionType):  # `X | None` -> X
            node = next(a for a in typing.get_args(node) if a is not type(None))
    return node


def test_stage_names_are_the_schema_choices_of_training_type():
    _, TrainingSection, _ = _schema()
    choices = typing.get_args(_field_type(TrainingSection, "type"))
    assert list(choices) == list(STAGES), (
        f"TrainingSection.type allows {choices} but the stage table (eulerforge_trl/stages.py) has "
        f"{tuple(STAGES)}: add the record and the Literal choice together"
    )
    assert all(name == stage.name for name, stage in STAGES.items())


def test_each_stage_names_a_data_task_of_the_schema():
    _, _, DataSection = _schema()
    tasks = typing.get_args(_field_type(DataSection, "task"))
    for stage in STAGES.values():
        assert stage.data_task in tasks, f"stage {stage.name}: data_task {stage.data_task!r} not in {tasks}"


def test_config_sections_are_dataclass_sections_of_the_schema():
    for stage in STAGES.values():
        if stage.config_section is not None:
            section = _resolve_key(stage.config_section)
            assert dataclasses.is_dataclass(section), f"stage {stage.name}: {stage.config_section} is not a section"


def test_inputs_are_preset_keys_fed_by_earlier_stages():
    order = list(STAGES)
    for stage in STAGES.values():
        for key, source in stage.inputs.items():
            _resolve_key(key)
            assert source in STAGES, f"stage {stage.name}: input {key} from unknown stage {source!r}"
            assert order.index(source) < order.index(stage.name), f"stage {stage.name} takes {key} from a later stage"


def test_stage_records_are_complete_and_distinct():
    assert len({s.pipeline_dir for s in STAGES.values()}) == len(STAGES)
    for stage in STAGES.values():
        assert stage.curves and all(isinstance(k, str) and k for k in stage.curves), stage.name
        assert isinstance(stage.summary([]), str), stage.name  # an empty metrics file still gets a line
        assert stage.doc, f"stage {stage.name}: give it a doc line (the docstring of train_{stage.name})"
        assert stage.runner.count(":") == 1 and stage.runner.startswith(f"{PACKAGE}.trainers."), stage.runner


def test_pipeline_chains_are_read_from_the_inputs():
    assert pipeline_chains() == [
        ("sft",),
        ("sft", "rm"),
        ("sft", "rm", "ppo"),
        ("sft", "rm", "grpo"),
        ("sft", "rm", "rloo"),
        ("sft", "ppo"),
        ("sft", "grpo"),
        ("sft", "dpo"),
        ("sft", "rloo"),
        ("sft", "kto"),
    ]


def test_every_stage_has_a_train_function_in_the_notebook_api():
    from eulerforge_trl import api

    for name in STAGES:
        assert f"train_{name}" in eulerforge_trl.__all__
        assert callable(getattr(eulerforge_trl, f"train_{name}"))
    assert not hasattr(api, "train_nonexistent_stage")
    for name in STAGES:  # made from the table: listed, documented, and in dir() for tab completion
        assert f"train_{name}" in api.__all__ and f"train_{name}" in dir(eulerforge_trl)
        assert getattr(api, f"train_{name}").__doc__.startswith(STAGES[name].doc)


@pytest.mark.parametrize("name", list(STAGES))
def test_runner_imports_to_a_callable(name):
    runner = STAGES[name].load_runner()  # imports torch/TRL: only here, not when the table is read
    assert callable(runner), STAGES[name].runner


def test_pipeline_package_spells_no_stage_name():
    """pipeline/ reads the stage table; a stage name written there is a second place to edit."""
    found = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in STAGES:
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {node.value!r}")
    assert not found, "stage names spelled out instead of read from eulerforge_trl.stages:\n" + "\n".join(found)


# ------------------------------------------------------------------------------ the import graph


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(modules: dict[str, Path]) -> dict[str, list[tuple[str, int]]]:
    """{module: [(imported package module, line), ...]}: every import in the file, function-level ones too."""
    graph: dict[str, list[tuple[str, int]]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                edges += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == PACKAGE]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != PACKAGE:
                    continue
                for alias in node.names:  # `from . import tiny` imports the module eulerforge_trl.models.tiny
                    sub = f"{target}.{alias.name}"
                    edges.append((sub if sub in modules else target, node.lineno))
        graph[name] = [(t, line) for t, line in edges if t != name]
    return graph


def _layer(module: str) -> str | None:
    rel = module.removeprefix(PACKAGE).lstrip(".")
    matches = [p for p in LAYER_OF if rel == p or (p and rel.startswith(p + "."))]
    return LAYER_OF[max(matches, key=len)] if matches else None


def test_every_module_has_a_layer():
    missing = [m for m in _modules() if _layer(m) is None]
    assert not missing, f"give these a layer in LAYER_OF ({__file__}): {missing}"


def test_no_module_imports_from_a_layer_above_it():
    modules = _modules()
    bad = []
    for module, edges in _imports(modules).items():
        for target, line in edges:
            if LAYERS.index(_layer(target)) > LAYERS.index(_layer(module)):
                bad.append(
                    f"{modules[module].relative_to(ROOT.parent)}:{line}: {module} ({_layer(module)}) "
                    f"imports {target} ({_layer(target)})"
                )
    assert not bad, "imports that go up the layers " + " -> ".join(LAYERS) + ":\n" + "\n".join(bad)


def test_import_graph_has_no_cycle():
    modules = _modules()
    graph = {m: sorted({t for t, _ in edges if t in modules}) for m, edges in _imports(modules).items()}
    lines = {(m, t): line for m, edges in _imports(modules).items() for t, line in edges}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in graph[module]:
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in graph:
        if module not in state and (cycle := visit(module)):
            steps = [f"{a} (line {lines[(a, b)]}) -> {b}" for a, b in zip(cycle, cycle[1:])]
            pytest.fail("import cycle:\n  " + "\n  ".join(steps))
