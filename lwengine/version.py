"""The package version (one place; ``lwengine.__version__`` and ``show_config`` read it)."""
VERSION = "0.1.0"
