"""Login outcomes, at ``BaseHandler.login_user``: the one place every login path (form, OAuth, auto-login) ends."""

from __future__ import annotations

from typing import Any

from .._guard import guarded
from ..instruments import Instruments


class LoginRecorder:
    def __init__(self, instruments: Instruments) -> None:
        self._success = instruments["login_success"].record
        self._failure = instruments["login_failure"].record

    def _record(self, ok: bool) -> None:
        with guarded("recording a login"):
            (self._success if ok else self._failure)(1)

    def wrapper(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return self._login(wrapped(*args, **kwargs))

    async def _login(self, pending: Any) -> Any:
        try:
            user = await pending
        except Exception:
            self._record(False)
            raise
        self._record(user is not None)
        return user
