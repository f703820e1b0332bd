"""UserError: a mistake the user can fix, raised with a message that says what is wrong and what to do."""


class UserError(ValueError):
    """A mistake the user can fix (a ValueError, so Python callers need not know it); train.py prints its message
    as one line and exits with status 2."""
