"""Sub-commands `up`, `down` and `status`: the embedded Kafka broker and S3 server.

The home directory is ``--home``, else ``$STREAMNOTARY_HOME``, else ``~/.streamnotary``.
Output never contains the S3 secret key (it is in ``<home>/services.json``, mode 0600).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streamnotary.config import default_home


def register(sub: argparse._SubParsersAction) -> None:
    help_home = "project data directory (default: $STREAMNOTARY_HOME or ~/.streamnotary)"
    up = sub.add_parser("up", help="start the embedded Kafka broker and S3 server")
    up.add_argument("--home", type=Path, help=help_home)
    up.add_argument("--json", action="store_true", help="print the status as JSON")
    up.add_argument(
        "--no-prefect",
        action="store_true",
        help="do not start the local Prefect server (each flow then starts a temporary one)",
    )
    up.add_argument(
        "--no-warm",
        action="store_true",
        help="do not start the warm runner (every command then imports the pipeline itself)",
    )
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the embedded services (data is kept)")
    down.add_argument("--home", type=Path, help=help_home)
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="show the embedded services' URLs, PIDs and health")
    status.add_argument("--home", type=Path, help=help_home)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=cmd_status)


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home).expanduser().resolve() if args.home else default_home()


def _print_status(info: object, as_json: bool) -> None:
    from streamnotary.services import ServicesInfo

    assert isinstance(info, ServicesInfo)
    doc = info.public_dict()
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    print(f"home      {doc['home']}")
    for name in ("kafka", "s3"):
        s = doc[name]
        state = "alive" if s["alive"] else "dead"
        print(f"{name:<9} {state:<6} pid {s['pid'] or '-':<8} {s['url']}   log {s['log']}")
    print(f"store     {doc['store_uri']}  (access key {doc['s3_access_key_id']})")


def cmd_up(args: argparse.Namespace) -> int:
    from storage.logkey import LogKeyError, ensure_key
    from streamnotary.config import load_settings
    from streamnotary.services import ServiceError, start_services

    home = _home(args)
    try:
        info = start_services(home)
        ensure_key(load_settings(home=str(home)))  # the anchor log's signing key (0600)
    except (ServiceError, LogKeyError) as exc:
        print(f"streamnotary up: {exc}", file=sys.stderr)
        return 1
    prefect_url, prefect_started = None, False
    if not args.no_prefect:
        try:
            prefect_url, prefect_started = start_local_prefect(home)
        except ServiceError as exc:
            print(f"streamnotary up: {exc}", file=sys.stderr)
            return 1
    warm_pid, warm_started = None, False
    if not args.no_warm:
        from streamnotary.warm import start_runner

        try:
            warm_pid, warm_started = start_runner(home)
        except ServiceError as exc:
            print(f"streamnotary up: {exc}", file=sys.stderr)
            return 1
    if not args.json:
        started = [
            *info.started,
            *(["prefect"] if prefect_started else []),
            *(["warm runner"] if warm_started else []),
        ]
        if started:
            print(f"started {', '.join(started)}")
        else:
            print("already running, nothing to do")
    _print_status(info, args.json)
    if prefect_url and not args.json:
        print(f"prefect   {prefect_url.removesuffix('/api')}  (UI; flows of this home report here)")
    if warm_pid and not args.json:
        print(f"warm      pid {warm_pid}  (commands of this home start warm)")
    return 0


def start_local_prefect(home: Path) -> tuple[str | None, bool]:
    """This home's Prefect server, unless the user configured a Prefect API of their own."""
    from streamnotary.prefect_server import start_server, user_configured_api

    if user_configured_api():
        return None, False
    return start_server(home)


def cmd_down(args: argparse.Namespace) -> int:
    from streamnotary.prefect_server import stop_server
    from streamnotary.services import ServiceError, stop_services
    from streamnotary.warm import stop_runner

    try:
        stopped = stop_services(_home(args))
        if stop_server(_home(args)):
            stopped.append("prefect")
        if stop_runner(_home(args)):
            stopped.append("warm runner")
    except ServiceError as exc:
        print(f"streamnotary down: {exc}", file=sys.stderr)
        return 1
    print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from streamnotary.services import services_status

    info = services_status(_home(args))
    if info is None:
        if args.json:
            print(json.dumps({"home": str(_home(args)), "configured": False}))
        else:
            print(f"no services under {_home(args)}; run `streamnotary up`")
        return 1
    _print_status(info, args.json)
    if not args.json:
        from streamnotary.prefect_server import server_url
        from streamnotary.warm import runner_pid

        url, warm = server_url(_home(args)), runner_pid(_home(args))
        print(f"prefect   {url.removesuffix('/api') if url else 'not running'}")
        print(f"warm      {f'alive  pid {warm}' if warm else 'not running (commands start cold)'}")
    return 0 if info.running else 1
