"""The console-script entry point: every failure is one line on stderr, its exit status says whose fault."""

from __future__ import annotations

import errno
import logging
import shlex
import sys

from rich.logging import RichHandler
from rich.text import Text

from micebench.cli.app import app, err
from micebench.errors import EnvironmentFault, MicebenchError

#: commands that `--resume` continues after an interruption
RESUMABLE = ("run", "precompute", "train")
#: errno values of a machine fault rather than a bad input (full, read-only or failing disk, no permission)
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR}
)


def say_error(message: str) -> None:
    """One line on stderr, `error: ` in bold red and the message verbatim (never read as rich markup)."""
    err().print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)


def was_interrupted(error: BaseException | None) -> bool:
    """Whether an exception was caused by Ctrl-C (typer turns KeyboardInterrupt into exit status 130)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def interrupted_message(args: list[str]) -> str:
    """`interrupted`, with the command that continues the work for the commands that resume."""
    if not args or args[0] not in RESUMABLE:
        return "interrupted"
    command = args if "--resume" in args else [*args, "--resume"]
    return f"interrupted; to continue: micebench {shlex.join(command)}"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: an input error is one line on stderr and exit status 2, a fault of the machine
    (a read-only or full disk) one line and 1, Ctrl-C one line with the command that resumes and 130."""
    logging.basicConfig(
        level=logging.WARNING, format="%(message)s", handlers=[RichHandler(console=err(), show_path=False)]
    )
    for noisy in ("transformers", "bm25s", "ir_datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer.exceptions import Abort

    args = list(sys.argv[1:] if argv is None else argv)
    try:  # not standalone: a usage error comes here, to be one line rather than typer's box
        code = app(args=args, prog_name="micebench", standalone_mode=False)
    except NoArgsIsHelpError as error:
        error.show()
        sys.exit(error.exit_code)
    except ClickException as error:  # unknown option, bad value, missing argument: bad input
        say_error(error.format_message())
        sys.exit(error.exit_code)
    except Abort:
        err().print("aborted", markup=False, highlight=False)
        sys.exit(1)
    except MicebenchError as error:
        say_error(str(error))
        sys.exit(1 if isinstance(error, EnvironmentFault) else 2)
    except OSError as error:
        if error.errno not in ENVIRONMENT_ERRNOS:
            raise
        reason = error.strerror or str(error)
        say_error(f"{error.filename}: {reason}" if error.filename else reason)
        sys.exit(1)
    except KeyboardInterrupt:
        err().print(interrupted_message(args), markup=False, highlight=False, soft_wrap=True)
        sys.exit(130)
    except SystemExit as done:
        if done.code == 130 and was_interrupted(done):
            err().print(interrupted_message(args), markup=False, highlight=False, soft_wrap=True)
        raise
    if code == 130:  # typer turns Ctrl-C into Exit(130), which comes back as the code when not standalone
        err().print(interrupted_message(args), markup=False, highlight=False, soft_wrap=True)
    if isinstance(code, int) and code:  # typer.Exit(n) comes back as n
        sys.exit(code)
