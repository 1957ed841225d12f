"""The control plane's operations, one module per wing (see :mod:`shipyard.api.operations`)."""
