"""User-facing errors: one clear line and exit code 2, caught only at the CLI edge (`guarded`)."""

import sys


class UserError(Exception):
    """A mistake in the user's input (preset, data, flags, model path), not a bug of ours."""

    exit_code = 2


class PresetError(UserError):
    """A preset key is unknown, ill-typed or breaks a rule that spans several keys."""


class DataError(UserError):
    """A data file is missing or a JSONL line is malformed or lacks a field."""


class ModelError(UserError):
    """A model path cannot be loaded, or two models that must share a base do not."""


def guarded(command, args) -> int:
    """Run a command-line command: a UserError becomes one `error: ...` line on stderr and its exit
    code, Ctrl-C a hint and 130; anything else is our bug and keeps its traceback.

    Every entry point (`eulerforge_trl.cli`, `python -m eulerforge_trl.pipeline`) ends here: the CLI edge.
    """
    try:
        return command(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
