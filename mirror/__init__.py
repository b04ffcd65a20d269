"""What both implementations share: configuration, data, run directories, checkpoints, logging.

``manual`` and ``lightning_ref`` both import this package and never each other.
"""
