"""ControlNet as the sd-webui-controlnet extension (v1.1.455) speaks it: units from ``alwayson_scripts``, the model
list and loading, preprocessors, and the control hooks the denoiser calls. See each module's docstring."""

from webui.core.controlnet.errors import ControlNetError
from webui.core.controlnet.hook import ControlNetHook, build_control_hooks, detect, guidance_active, prepare_control
from webui.core.controlnet.models import ControlNetModelInfo, ControlNetRegistry, LoadedControlNet, load_controlnet
from webui.core.controlnet.preprocessors import (
    PREPROCESSORS,
    get_preprocessor,
    module_detail,
    module_list,
    pixel_perfect_resolution,
)
from webui.core.controlnet.units import (
    CONTROL_MODE_NAMES,
    RESIZE_MODE_NAMES,
    infotext_params,
    parse_unit,
    parse_unit_infotext,
    parse_units,
    unit_from_infotext,
    unit_infotext,
)

#: external_code.get_api_version (GET /controlnet/version).
API_VERSION = 3

__all__ = [
    "API_VERSION",
    "CONTROL_MODE_NAMES",
    "PREPROCESSORS",
    "RESIZE_MODE_NAMES",
    "ControlNetError",
    "ControlNetHook",
    "ControlNetModelInfo",
    "ControlNetRegistry",
    "LoadedControlNet",
    "build_control_hooks",
    "detect",
    "get_preprocessor",
    "guidance_active",
    "infotext_params",
    "load_controlnet",
    "module_detail",
    "module_list",
    "parse_unit",
    "parse_unit_infotext",
    "parse_units",
    "pixel_perfect_resolution",
    "prepare_control",
    "unit_from_infotext",
    "unit_infotext",
]
