"""The one exception type for bad user input; the CLI prints it as a single line, without a traceback."""


class ConfigError(ValueError):
    """A configuration or input value is invalid. The message names the field and the accepted values."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); earlier checkpoints and results are left intact."""
