"""The one exception type the CLI turns into a single line on stderr and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: a path, a name, a value. Its message is the whole story."""
