"""What a command reports in one line instead of a traceback.

- `ConfigError`: a setting or an argument that cannot work (exit code 2); the
  message names it and says what to do. Raised before any work starts.
- `CommandError`: the command could not do its work for a reason outside it
  (another command holds the instance, live runs hold the pool, another
  program holds the warehouse file): exit code 1, nothing half-done.
"""


class ConfigError(ValueError):
    """A setting or argument that cannot work; the message says which and what to do."""


class CommandError(RuntimeError):
    """The command cannot go on; the message says why and what to do."""
