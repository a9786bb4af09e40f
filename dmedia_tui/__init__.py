"""dmedia-tui: keep a content-addressed media library safe, and show whether it is."""

__version__ = "0.1.0"
