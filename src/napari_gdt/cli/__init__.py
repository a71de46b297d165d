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


def one_line(text) -> str:
    """Collapse a message onto one line (errors and warnings are printed as exactly one line)."""
    return " ".join(str(text).split()) or "(no message)"


def _install_warning_printer(command: str, debug: bool):
    """Our warnings print as one line; library warnings (numpy, torch, dask...) are silenced unless --debug."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        ours = "napari_gdt" in str(filename).replace("\\", "/") or str(message).startswith(("napari-gdt", "napari_gdt"))
        if ours or debug:
            print(f"napari-gdt {command}: warning: {one_line(message)}", file=sys.stderr)

    warnings.showwarning = show
    if not debug:
        warnings.filterwarnings("default", module="napari_gdt")


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the subcommand. Returns the exit code.

    Every error is exactly one line on stderr: bad input (a :class:`GDTError`, a missing or
    unwritable file, input too deep or too large) exits 2; anything else is an internal error,
    printed on one line with a pointer to ``--debug`` (exit 1).
    """
    import warnings

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    cmd = args.command
    old_show = warnings.showwarning
    with warnings.catch_warnings():
        _install_warning_printer(cmd, args.debug)
        try:
            rc = args.func(args)
            return int(rc or 0)
        except GDTError as e:
            if args.debug:
                raise
            print(f"napari-gdt {cmd}: error: {one_line(e)}", file=sys.stderr)
            return 2
        except (OSError, EOFError, UnicodeDecodeError) as e:  # missing, unwritable, truncated or binary files
            if args.debug:
                raise
            print(f"napari-gdt {cmd}: error: {one_line(e) if str(e) else type(e).__name__}", file=sys.stderr)
            return 2
        except RecursionError:
            if args.debug:
                raise
            print(f"napari-gdt {cmd}: error: input nested too deeply to read", file=sys.stderr)
            return 2
        except MemoryError:
            if args.debug:
                raise
            print(f"napari-gdt {cmd}: error: out of memory (the input asks for more than this machine has)", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"napari-gdt {cmd}: interrupted", file=sys.stderr)
            return 130
        except Exception as e:  # never a traceback without --debug
            if args.debug:
                raise
            print(
                f"napari-gdt {cmd}: internal error: {type(e).__name__}: {one_line(e)} (rerun with --debug for the traceback)",
                file=sys.stderr,
            )
            return 1
        finally:
            warnings.showwarning = old_show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
