class UserError(Exception):
    """A mistake the user can fix; the CLI prints the message as one line and exits with status 2."""
