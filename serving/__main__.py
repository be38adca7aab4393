"""Development server: ``python -m serving [--host 127.0.0.1] [--port 5000] [--model PATH|URI]``.

Werkzeug's server, threaded, never in debug mode (its debugger runs arbitrary code for
whoever can reach it). Production runs the same app under gunicorn:
``gunicorn -w 2 -b 127.0.0.1:8000 'serving:create_app()'``.
"""
from __future__ import annotations

import argparse
import sys

from lifecycle.core.errors import run_stage


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--model", default=None,
                        help="model folder or MLflow URI (default: $SERVE_MODEL, else models/best)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from serving import create_app

    args = parse_args(argv)
    app = create_app({"SERVE_MODEL": args.model} if args.model else None)
    identity = app.extensions["predictor"].identity
    print(f"serving {identity.source} ({identity.name} {identity.version}) on http://{args.host}:{args.port}/ "
          f"(development server; production: gunicorn, see docs)", file=sys.stderr)
    app.run(host=args.host, port=args.port, debug=False, use_reloader=False, threaded=True)


if __name__ == "__main__":
    run_stage(main)
