"""Image inputs of the API (A1111 api.py ``decode_base64_to_image``, ``verify_url``; spec §4.2).

Plain base64 and ``data:image/...;base64,`` URLs are decoded by :func:`webui.core.io.images.decode_base64_image`; an
``http(s)://`` URL is fetched only as A1111 allows it: option ``api_enable_requests`` on, and (option
``api_forbid_local_requests``) only when every address its host resolves to is globally routable. A1111 answers
these refusals with a 500; we answer 4xx in its error shape with its messages.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from PIL import Image

from webui.api.errors import ApiError
from webui.core.io.images import InvalidImage, decode_base64_image, fix_image

#: Largest download accepted for an image URL (bytes).
MAX_URL_BYTES = 64 * 1024 * 1024
URL_TIMEOUT_S = 30


def verify_url(url: str) -> bool:
    """A1111 ``verify_url``: True when every IPv4 address of the URL's netloc is global. The netloc is resolved as
    written, so one with a ``:port`` or user info fails to resolve and is refused, as in A1111."""
    try:
        netloc = urlparse(url).netloc
        _, _, addresses = socket.gethostbyname_ex(netloc)
        return all(ipaddress.ip_address(ip).is_global for ip in addresses)
    except Exception:
        return False


def decode_image_input(value: str, field: str, option: Callable[[str], Any]) -> Image.Image:
    """The image a request field carries: base64, a data URL, or (when allowed) an http(s) URL.

    ``option`` reads an option by key. Errors name ``field``: 400 for undecodable data, 403 for a refused URL.
    """
    if value.startswith(("http://", "https://")):
        if not option("api_enable_requests"):
            raise ApiError(403, "Requests not allowed", errors=f"{field}: image URLs are disabled on this server "
                           "(option api_enable_requests); send the image as base64")
        if option("api_forbid_local_requests") and not verify_url(value):
            raise ApiError(403, "Request to local resource not allowed", errors=f"{field}: {value!r} is not a "
                           "global address (option api_forbid_local_requests)")
        headers = {"User-Agent": option("api_useragent")} if option("api_useragent") else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(value, headers=headers), timeout=URL_TIMEOUT_S) as r:
                data = r.read(MAX_URL_BYTES + 1)
        except Exception as e:
            raise ApiError(400, f"{field}: could not fetch {value!r}: {e}", errors=type(e).__name__) from e
        if len(data) > MAX_URL_BYTES:
            raise ApiError(400, f"{field}: the image at {value!r} is larger than {MAX_URL_BYTES} bytes")
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
            return fix_image(image)
        except Exception as e:
            raise ApiError(400, "Invalid image url", errors=f"{field}: {value!r} is not an image") from e
    try:
        return decode_base64_image(value)
    except InvalidImage:
        raise ApiError(400, "Invalid encoded image", errors=f"{field}: not a base64-encoded image (PNG, JPEG, WebP, "
                       "...), with or without a data:image/...;base64, prefix") from None


def png_bytes_decoder(option: Callable[[str], Any]) -> Callable[[str, str], bytes]:
    """``decode(value, field) -> PNG bytes`` for images inside script args (ControlNet units): base64, data URLs,
    and http(s) URLs where A1111's api_enable_requests allows them, as ``decode_image_input``."""
    import io

    def decode(value: str, field: str) -> bytes:
        image = decode_image_input(value, field, option)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()

    return decode
