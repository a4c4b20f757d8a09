"""User-facing errors: one paragraph naming what is wrong and where, never a traceback."""


class UserError(Exception):
    """A mistake in the user's input (config, list, export, flags).

    The CLI prints the message alone and exits with code 2.
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.where = where
        self.hint = hint
        message = message.rstrip()
        if hint and message and message[-1] not in ".!?:;":
            message += "."   # the message and the hint are two sentences of one paragraph
        parts = [f"{where}: {message}" if where else message]
        if hint:
            parts.append(hint)
        super().__init__(" ".join(parts))
