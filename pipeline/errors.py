"""Errors that the CLI turns into a one-line message and a non-zero exit."""


class WsssError(Exception):
    """Base class of every error a user can cause (bad data, bad parameters, missing inputs)."""


class DataError(WsssError):
    """A dataset file is missing, unreadable or inconsistent. The message names the file."""


class ConfigError(WsssError):
    """A parameter is unknown, of the wrong type or out of range. The message names the key."""


class ArgumentError(ConfigError):
    """A library function's argument is out of range. The message names the argument; the stage that
    passed it names the params key instead (:func:`stages.table.argument_key`)."""

    def __init__(self, argument: str, detail: str):
        super().__init__(argument, detail)
        self.argument, self.detail = argument, detail

    def __str__(self) -> str:
        return f"{self.argument}: {self.detail}"
