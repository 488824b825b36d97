"""The one error type of the ControlNet core."""

from __future__ import annotations


class ControlNetError(ValueError):
    """A ControlNet unit, model or preprocessor the request asks for cannot be used; the message names the field or
    the file and, for names, the valid choices. The API answers it with a 422."""

    client_error = True  # about the request: plugin hooks re-raise it as is (webui.plugins.manager)
