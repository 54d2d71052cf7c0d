"""The export error the CLI reports as a user error; no torch import, so the CLI can name it cheaply."""


class ParityError(ValueError):
    """An export does not behave like the model it came from; the message names the first difference."""
