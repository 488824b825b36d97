"""python -m webui.cluster --replicas N [--address ray://HOST:10001] [A1111 flags]: the /sdapi/v1 API on an ingress
(this process, uvicorn) in front of N Ray Serve replicas. See docs/cluster.md."""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from webui.cluster.options import parse as parse_cluster
    from webui.config import ConfigError, parse

    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        from webui.cluster.options import build_parser

        print(build_parser().format_help(), "\nA1111 flags:\n", flush=True)  # then launch.py's help, and exit
    cluster_options, rest = parse_cluster(argv)
    try:
        config = parse(rest)
    except ConfigError as e:
        print(e.message, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from webui.cluster.ingress import build_cluster_app

    app = build_cluster_app(config, cluster_options)
    config = app.state.webui.config
    print(f"Cluster of {cluster_options.replicas} replicas; API on "
          f"{'https' if config.tls_certfile else 'http'}://{config.server_host}:{config.effective_port}/sdapi/v1 "
          f"(docs at /docs, replicas at /sdapi/v1/cluster)", flush=True)
    try:
        uvicorn.run(app, host=config.server_host, port=config.effective_port,
                    timeout_keep_alive=config.timeout_keep_alive, ssl_keyfile=config.tls_keyfile,
                    ssl_certfile=config.tls_certfile, log_level="info")
    finally:
        app.state.cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
