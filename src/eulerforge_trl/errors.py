"""User-facing errors: one clear line and exit code 2, caught only at the CLI edge."""


class UserError(Exception):
    """A mistake in the user's input (preset, data, flags, model path), not a bug of ours."""

    exit_code = 2


class PresetError(UserError):
    """A preset key is unknown, ill-typed or breaks a rule that spans several keys."""


class DataError(UserError):
    """A data file is missing or a JSONL line is malformed or lacks a field."""


class ModelError(UserError):
    """A model path cannot be loaded, or two models that must share a base do not."""
