"""Development server: ``python -m serving [--host 127.0.0.1] [--port 5000] [--model PATH|URI]``.

Werkzeug's server, threaded, never in debug mode (its debugger runs arbitrary code for
whoever can reach it), and with nothing to keep slow clients from holding it: production runs
the same app under gunicorn behind nginx (docs/serving.md).
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
                        help="model folder or MLflow URI (default: $SERVE_MODEL, else models:/cats-vs-dogs@champion "
                             "if the tracking store has it, else models/best)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import logging

    from serving import create_app

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app({"SERVE_MODEL": args.model} if args.model else None)
    state = app.extensions["served_model"].state
    if state.served is None:
        what = f"no model yet ({state.failure.rstrip('.')}): /predict answers 503 until one loads"
    else:
        identity = state.served.predictor.identity
        what = f"serving {identity.source} ({identity.name} {identity.version}; {state.served.choice.reason})"
    print(f"{what}; on http://{args.host}:{args.port}/ (development server; production: gunicorn "
          f"behind nginx, docs/serving.md)", file=sys.stderr)
    app.run(host=args.host, port=args.port, debug=False, use_reloader=False, threaded=True)


if __name__ == "__main__":
    run_stage(main)
