"""The `chat_template` key: a Jinja chat template given as a file or as the template itself.

A value holding `{{` or `{%` is the template itself (a YAML block scalar in a preset); any other
value names a file, looked for in the working directory, then beside the preset, then in the
package (`examples/chat_templates/simple.jinja` is found from any directory and from an installed
wheel, as the shipped presets' example data are). The template is checked when the preset loads,
so a missing file or a Jinja syntax error stops the run before anything loads; the tokenizer reads
it when it loads (`models.loading.load_tokenizer`), as TRL's `chat_template_path` does for SFT.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import PresetError
from .shipped import PACKAGE_ROOT

# the template shipped for models without one of their own (the built-in tiny-qwen3.5 included)
SIMPLE_TEMPLATE = "examples/chat_templates/simple.jinja"


def is_template_text(value: str) -> bool:
    """Whether `value` is a template (it holds a Jinja expression or statement) rather than a file name."""
    return "{{" in value or "{%" in value


def resolve_chat_template(value: str, preset_dir: Path | None = None, key: str = "chat_template") -> str:
    """`value` checked: a template as given, a file as its absolute path (valid from any directory).

    Args:
        value: the template itself, or the path of a Jinja file.
        preset_dir: the folder of the preset file that names it (None: a preset built in code, a flag).
        key: how the message names the setting (`chat_template`, `--chat-template`).

    Raises:
        PresetError: one line naming `key`: no such file, a directory, a file that is empty or cannot
            be read as text, or a template that does not parse.

    Example:
        >>> resolve_chat_template("examples/chat_templates/simple.jinja")  # the package's copy from anywhere
        '/.../eulerforge_trl/examples/chat_templates/simple.jinja'
    """
    if is_template_text(value):
        _check_parses(value, key)
        return value
    path = Path(value).expanduser()
    candidates = (
        [path] if path.is_absolute() else [path, *([preset_dir / path] if preset_dir else []), PACKAGE_ROOT / path]
    )
    found = next((c for c in candidates if c.is_file()), None)
    if found is None and any(c.is_dir() for c in candidates):
        raise PresetError(f"{key}: {value} is a directory; give a Jinja file (a model's chat_template.jinja)")
    if found is None:
        where = (
            "" if path.is_absolute() else " in the working directory" + (" or beside the preset" if preset_dir else "")
        )
        raise PresetError(
            f"{key}: no file {value}{where}; give a Jinja file (such as {SIMPLE_TEMPLATE}) or the template itself"
        )
    try:
        text = found.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PresetError(f"{key}: cannot read {value} as a text file ({err})") from None
    if not text.strip():
        raise PresetError(f"{key}: {value} is empty")
    _check_parses(text, key, f" ({value})")
    return str(found.resolve())


def chat_template_text(value: str) -> str:
    """The template `value` stands for (a value `resolve_chat_template` returned): itself, or its file's text."""
    return value if is_template_text(value) else Path(value).read_text(encoding="utf-8")


def _check_parses(text: str, key: str, where: str = "") -> None:
    """Parse `text` as transformers renders it: Jinja with loop controls and the `{% generation %}` block."""
    import jinja2
    import jinja2.ext

    environment = jinja2.Environment(extensions=[jinja2.ext.loopcontrols, _generation_block()])
    try:
        environment.parse(text)
    except jinja2.TemplateSyntaxError as err:
        raise PresetError(f"{key}{where}: not a valid Jinja template: line {err.lineno}: {err.message}") from None


def _generation_block() -> type:
    """The Jinja extension of transformers' `{% generation %}` tag (made on call: jinja2 loads only when needed)."""
    import jinja2.ext

    class GenerationBlock(jinja2.ext.Extension):
        """transformers' `{% generation %}...{% endgeneration %}`, which marks assistant tokens (TRL's
        assistant-only loss): parsed here for its body only."""

        tags = {"generation"}

        def parse(self, parser):
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    return GenerationBlock
