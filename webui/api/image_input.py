"""Image inputs of the API (A1111 api.py ``decode_base64_to_image``, ``verify_url``; spec §4.2).

Plain base64 and ``data:image/...;base64,`` URLs are decoded by :func:`webui.core.io.images.decode_base64_image`; an
``http(s)://`` URL is fetched only as A1111 allows it: option ``api_enable_requests`` on, and (option
``api_forbid_local_requests``) only when every address its host resolves to is globally routable. A1111 answers
these refusals with a 500; we answer 4xx in its error shape with its messages.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import urllib.error
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
    """A1111 ``verify_url``: True when every address of the URL's host is global (IPv4 and IPv6 here)."""
    try:
        host = urlparse(url).hostname
        return bool(host) and all(_address_allowed(info[4][0]) for info in socket.getaddrinfo(host, None))
    except Exception:
        return False


def _address_allowed(ip: str) -> bool:
    """Globally routable: not loopback, private, link-local, reserved, shared or multicast."""
    return ipaddress.ip_address(ip.split("%")[0]).is_global


class LocalAddressRefused(OSError):
    """The host of an image URL (or of a redirect it leads to) resolved to an address that is not global."""


def _guarded_socket(host: str, port: int, timeout) -> socket.socket:
    """Resolve ``host`` once, refuse it unless every address is global, and connect to a checked address: the check
    and the connection use the same resolution, so neither a redirect nor a DNS answer that changes between two
    lookups (rebinding) can lead the server to a local address."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for info in infos:
        if not _address_allowed(info[4][0]):
            raise LocalAddressRefused(f"{host} resolves to {info[4][0]}, which is not a global address")
    last_error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not None and timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            last_error = e
    raise last_error or OSError(f"could not connect to {host}")


class _GuardedHTTPConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = _guarded_socket(self.host, self.port, self.timeout)


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def connect(self):
        sock = _guarded_socket(self.host, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_GuardedHTTPConnection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_GuardedHTTPSConnection, req, context=self._context)


def _opener(forbid_local: bool) -> urllib.request.OpenerDirector:
    """No proxies from the environment (the address checked must be the one connected to); with ``forbid_local``,
    every connection -- redirects included -- goes through the global-address check."""
    handlers: list = [urllib.request.ProxyHandler({})]
    if forbid_local:
        handlers += [_GuardedHTTPHandler(), _GuardedHTTPSHandler()]
    return urllib.request.build_opener(*handlers)


def _fetch(url: str, field: str, option: Callable[[str], Any]) -> bytes:
    headers = {"User-Agent": option("api_useragent")} if option("api_useragent") else {}
    forbid = bool(option("api_forbid_local_requests"))
    try:
        with _opener(forbid).open(urllib.request.Request(url, headers=headers), timeout=URL_TIMEOUT_S) as r:
            data = r.read(MAX_URL_BYTES + 1)
    except LocalAddressRefused as e:
        raise ApiError(403, "Request to local resource not allowed", errors=f"{field}: {e} (option "
                       "api_forbid_local_requests)") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, LocalAddressRefused):
            raise ApiError(403, "Request to local resource not allowed", errors=f"{field}: {e.reason} (option "
                           "api_forbid_local_requests)") from e
        raise ApiError(400, f"{field}: could not fetch {url!r}: {e}", errors=type(e).__name__) from e
    except Exception as e:
        raise ApiError(400, f"{field}: could not fetch {url!r}: {e}", errors=type(e).__name__) from e
    if len(data) > MAX_URL_BYTES:
        raise ApiError(400, f"{field}: the image at {url!r} is larger than {MAX_URL_BYTES} bytes")
    return data


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
        data = _fetch(value, field, option)
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
