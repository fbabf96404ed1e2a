"""``stackctl up|down|urls|fix-search|unfix-search|migrate|backup|restore FILE``: the native
twin of the compose stack (see stackctl.native). ``backup`` and ``restore`` run
scripts/pg-backup, as compose's `backup` service does, with the host's PostgreSQL client."""

import argparse
import os
import sys
from pathlib import Path

from stackctl.addresses import REPO
from stackctl.native import NativeStack
from stackctl.processes import ComponentFailedError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stackctl", description=__doc__)
    parser.add_argument(
        "command",
        choices=(
            "up",
            "down",
            "urls",
            "fix-search",
            "unfix-search",
            "migrate",
            "backup",
            "restore",
        ),
    )
    parser.add_argument("file", nargs="?", type=Path, help="restore: the backup to restore")
    parser.add_argument(
        "--dir",
        type=Path,
        default=REPO / "backups" / "native",
        help="backup: where the dump goes (default: backups/native/)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("STACK_DIR", REPO / ".stack")),
        help="where configs, data, logs and pids live (default: $STACK_DIR or .stack/)",
    )
    args = parser.parse_args(argv)
    stack = NativeStack(args.state_dir)
    try:
        if args.command == "up":
            print(f"Starting the native stack in {stack.state.root}")
            stack.up()
        elif args.command == "down":
            stack.down()
            return
        elif args.command == "backup":
            print(stack.backup(args.dir))
            return
        elif args.command == "restore":
            if args.file is None:
                parser.error("restore needs the backup file: stackctl restore FILE")
            stack.restore(args.file)
            return
        elif args.command != "urls":
            stack.database("setup" if args.command == "migrate" else args.command)
            return
    except ComponentFailedError as exc:
        print(f"stackctl: {exc}", file=sys.stderr)
        sys.exit(1)
    for name, url in stack.urls().items():
        print(f"  {name:<26} {url}")


if __name__ == "__main__":
    main()
