"""Hooks: wrap JupyterHub where it looks names up, call the original unconditionally, record in a guarded block."""
