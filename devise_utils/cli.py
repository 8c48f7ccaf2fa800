"""``python -m devise_utils``: one entry point, one subcommand per job.

Each module that offers a command has a ``register(subparsers)`` function that
adds its subparser(s) and sets ``func``; heavy imports happen inside the
command, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES = ("data.download", "data.prepare", "pipeline", "apps.search", "apps.export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devise_utils",
        description="DeViSE-Mobile: deep visual-semantic embeddings on a mobile-sized network.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"devise_utils.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        # Bad input: one clear line naming the file and the fix, not a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2
