"""Many devices behind one /sdapi/v1, on Ray Serve (optional: ``pip install .[cluster]``).

Start it with ``python -m webui.cluster --replicas N [A1111 flags]`` (see docs/cluster.md). The ingress is the same
FastAPI app as the single-process server (``webui.app.build_app``); N Ray Serve replicas each build their own
``AppState`` (one device, one model cache, one queue) and run requests through their own copy of that app, so there
is one generation path. Nothing here is imported by the single-machine server; only this package imports ray.
"""
