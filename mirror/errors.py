"""Errors meant for the user: ``train.py`` prints ``error: <message>`` on one line and exits with the code."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing data, a diverging run); never shown as a traceback."""

    exit_code = 1


class ConfigError(UserError):
    exit_code = 2


class DataError(UserError):
    exit_code = 1


class CheckpointError(UserError):
    exit_code = 1


class DivergenceError(UserError):
    exit_code = 3
