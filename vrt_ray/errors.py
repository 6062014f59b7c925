"""The base of the errors vrt-ray raises for bad input; the CLI prints them as one line."""


class VrtError(Exception):
    """Bad input (a file, a checkpoint, a request) described in one line."""
