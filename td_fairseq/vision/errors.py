"""The one error of the vision data sets, in a module of its own so that the in-memory sets
(``data``) and image folders (``folder``) both raise it without importing each other."""
from ..files import UserError


class DataError(UserError):
    """A data set that cannot be found, read or downloaded; the message is one line."""
