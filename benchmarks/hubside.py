"""Imported inside the benchmark hubs (by their ``jupyterhub_config.py``, see :func:`hub_config`).

``TokenSpawner`` is ``tests/fastspawner.py``'s in-process ``FastSpawner`` that also leaves its server's API token
(the one JupyterHub made for the server, with the ``server`` role: ``users:activity!user``, ``access:servers!server``)
in a file named after the user, so that the harness can post activity with the token a real jupyterhub-singleuser
server would use. The file is written once per spawn, a few hundred bytes: the same on both hubs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastspawner import FastSpawner  # the hub's config puts tests/ on sys.path first


class TokenSpawner(FastSpawner):
    token_dir = ""  # set by the hub's config

    async def start(self) -> Any:
        address = await super().start()
        if TokenSpawner.token_dir and not self.name:
            Path(TokenSpawner.token_dir, self.user.name).write_text(self.api_token or "")
        return address


def hub_config(token_dir: Path) -> str:
    """Config lines: the fast spawner (and tests/fastspawner.py's live-object handler), tokens left in ``token_dir``."""
    import fastspawner

    token_dir.mkdir(parents=True, exist_ok=True)
    return (
        fastspawner.hub_config()
        + f"""
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from hubside import TokenSpawner
TokenSpawner.token_dir = {str(token_dir)!r}
c.JupyterHub.spawner_class = TokenSpawner
"""
    )
