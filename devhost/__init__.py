"""A local stand-in for the Azure Functions host, Azurite control and a fake channel.

Runs `function_app.py` where Core Tools is not installed; tests, benchmarks and
the terminal chat use the same pieces.
"""
