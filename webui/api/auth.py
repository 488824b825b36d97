"""--api-auth: HTTP Basic on every /sdapi and /internal route (A1111 §2), with A1111's messages and error shape.

Unlike A1111 we send ``WWW-Authenticate: Basic`` with the 401 (its omission is a known A1111 fault, Corrections 4),
and we also guard /sdapi/v1/loras, /sdapi/v1/refresh-loras and /internal/* (A1111 leaves them open).
"""

from __future__ import annotations

import base64
import binascii
import secrets

from fastapi import HTTPException, Request

_CHALLENGE = {"WWW-Authenticate": "Basic"}


def make_auth_dependency(users: dict[str, str]):
    """A FastAPI dependency checking Basic credentials against ``users``; a no-op when there are none."""
    encoded = {user.encode(): password.encode() for user, password in users.items()}

    def check(request: Request) -> None:
        if not encoded:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, param = header.partition(" ")
        if not header or scheme.lower() != "basic":
            raise HTTPException(401, "Not authenticated", headers=_CHALLENGE)
        try:
            user, sep, password = base64.b64decode(param).decode("ascii").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise HTTPException(401, "Invalid authentication credentials", headers=_CHALLENGE)
        if not sep:
            raise HTTPException(401, "Invalid authentication credentials", headers=_CHALLENGE)
        # Constant time in the password; an unknown user is compared against a dummy so it takes as long.
        expected = encoded.get(user.encode())
        ok = secrets.compare_digest(password.encode(), expected if expected is not None else b"\0" * 16)
        if expected is None or not ok:
            raise HTTPException(401, "Incorrect username or password", headers=_CHALLENGE)

    return check
