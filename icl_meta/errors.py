"""The one exception type for bad user input; the CLI prints it as a single line, without a traceback."""


class ConfigError(ValueError):
    """A configuration or input value is invalid. The message names the field and the accepted values."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def is_int(value: object) -> bool:
    """An integer that is not a bool (True would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); earlier checkpoints and results are left intact."""
