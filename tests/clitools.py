"""Run the ``facebench`` command line in-process, as a subprocess would see it.

Importing torch costs a few seconds per subprocess; in-process the suite pays it once. Exit
code, stdout and stderr come back like ``subprocess.run``'s; an exception that the CLI lets
escape propagates, so a traceback still fails the test."""
import io
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

from facebench.cli import main


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, cwd=None) -> Completed:
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse: --help, --version, usage errors
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        os.chdir(here)
    return Completed(code, out.getvalue(), err.getvalue())
