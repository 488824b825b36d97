"""--api-auth: HTTP Basic on the /sdapi/v1 routes (A1111 §2), with A1111's messages and error shape.

Unlike A1111 we send ``WWW-Authenticate: Basic`` with the 401 (its omission is a known A1111 fault, Corrections 4).
"""

from __future__ import annotations

import base64
import binascii
import secrets

from fastapi import HTTPException, Request


def make_auth_dependency(users: dict[str, str]):
    """A FastAPI dependency checking Basic credentials against ``users``; a no-op when there are none."""

    def check(request: Request) -> None:
        if not users:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, param = header.partition(" ")
        if not header or scheme.lower() != "basic":
            raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Basic"})
        try:
            user, sep, password = base64.b64decode(param).decode("ascii").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise HTTPException(401, "Invalid authentication credentials", headers={"WWW-Authenticate": "Basic"})
        if not sep:
            raise HTTPException(401, "Invalid authentication credentials", headers={"WWW-Authenticate": "Basic"})
        expected = users.get(user)
        if expected is None or not secrets.compare_digest(password.encode(), expected.encode()):
            raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    return check
