"""The ``napari-gdt`` command line (contract: CLI.md in the project docs).

Each subcommand lives in its own module with ``register(subparsers)``; the
module list below is the only place they are wired together.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import GDTError

__all__ = ["main", "build_parser"]

# Subcommand modules, in the order shown by --help.
COMMANDS = ["demo", "convert", "render", "figure", "train", "evaluate", "info", "import_ist"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to generate the CLI reference)."""
    from .. import __version__

    p = argparse.ArgumentParser(prog="napari-gdt", description="Generative digital twins of tissue from spatial gene expression.")
    p.add_argument("--version", action="version", version=f"napari-gdt {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # command not built yet
            raise
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the subcommand. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
        return int(rc or 0)
    except GDTError as e:
        if args.debug:
            raise
        print(f"napari-gdt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        if args.debug:
            raise
        print(f"napari-gdt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-gdt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
