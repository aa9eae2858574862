"""A local stand-in for the Azure Functions host, Azurite control and a fake channel.

Runs `function_app.py` where Core Tools is not installed; tests, benchmarks and
the terminal chat use the same pieces.
"""

import os
import sys

DEFAULT_PORT = 7071  # the function app's HTTP port, as with Core Tools
DEFAULT_AZURITE_PORT = 10000  # Azurite's blob port; queue and table are the next two


def python_command() -> str:
    """This interpreter as a user would type it here: `.venv/bin/python` from the repository."""
    relative = os.path.relpath(sys.executable)
    return sys.executable if relative.startswith("..") else relative
