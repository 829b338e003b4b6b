"""Run real installers (pip, uv) as child processes without blocking the reactor.

Why: the proxy and the fake upstream run in the test process's reactor, so the installer must
run concurrently (``spawnProcess``), never through ``subprocess.run``.  And the installers must
see nothing of this machine's configuration: it has a global ``pip.conf`` with a constraints
file, a user ``pip.conf`` with ``find-links`` and extra ``file://`` indexes, and ``PIP_*``
variables.  A test whose installer quietly took packages from there would prove nothing.

Isolation used here (each piece is needed, see ``clean_env``):

- pip: ``--isolated`` drops ``PIP_*`` variables and the *user* config, but still reads the
  *global* ``/etc/xdg/pip/pip.conf`` and ``/etc/pip.conf``; ``PIP_CONFIG_FILE=/dev/null`` is what
  makes pip skip every config file.  ``--isolated`` also drops ``PIP_NO_INPUT``, hence
  ``--no-input`` on the command line.
- uv: ``--no-config`` plus no ``UV_*`` variables; a temporary ``HOME``/XDG dirs so no user
  file is found either way.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any, Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

__all__ = ["Result", "clean_env", "find_uv", "run_pip", "run_uv", "run_process"]

# Proxy variables would route loopback traffic elsewhere; tests never need a proxy.
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}


@attrs.frozen
class Result:
    """What an installer run did."""

    argv: tuple[str, ...]
    code: int
    out: str = attrs.field(repr=False)
    err: str = attrs.field(repr=False)
    timed_out: bool = False

    @property
    def output(self) -> str:
        return self.out + self.err

    def check(self) -> "Result":
        """Raise AssertionError with the whole output unless the run succeeded."""
        if self.code != 0:
            raise AssertionError(
                f"command failed with exit code {self.code}"
                f"{' (timed out)' if self.timed_out else ''}:\n"
                f"  {' '.join(self.argv)}\n"
                f"--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"
            )
        return self


def clean_env(home: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """A copy of ``os.environ`` that no pip/uv configuration of this machine can leak into.

    ``home`` becomes ``HOME`` (and the XDG dirs beneath it); pass a temporary directory.
    """
    if home is None:
        home = tempfile.mkdtemp(prefix="pypicached-home-")
    home = os.fspath(home)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIP_", "UV_")) and key.lower() not in _PROXY_VARIABLES
    }
    for key in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_DIRS", "PYTHONUSERBASE"):
        env.pop(key, None)
    env.update(
        {
            "HOME": home,
            "XDG_CONFIG_HOME": os.path.join(home, ".config"),
            "XDG_CACHE_HOME": os.path.join(home, ".cache"),
            "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
            # The system config dirs default to /etc/xdg, where this machine keeps a pip.conf.
            "XDG_CONFIG_DIRS": os.path.join(home, "xdg-config-dirs"),
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_INPUT": "1",
            "UV_NO_CONFIG": "1",
            "NO_PROXY": "*",
            "no_proxy": "*",
            "NO_COLOR": "1",
            "PYTHONNOUSERSITE": "1",
        }
    )
    return env


class _Collect(ProcessProtocol):
    """Gathers a child's output; kills it after a timeout so a hung proxy fails the test."""

    def __init__(self, argv: tuple[str, ...], reactor: Any, timeout: float | None) -> None:
        self.argv = argv
        self.done: Deferred[Result] = Deferred()
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._timed_out = False
        self._timer = reactor.callLater(timeout, self._kill) if timeout else None

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._out.append(data)

    def errReceived(self, data: bytes) -> None:
        self._err.append(data)

    def _kill(self) -> None:
        self._timer = None
        self._timed_out = True
        try:
            self.transport.signalProcess("KILL")
        except Exception:  # already gone
            pass

    def processEnded(self, reason: Failure) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        code = reason.value.exitCode
        if code is None:
            code = -(reason.value.signal or 1)
        self.done.callback(
            Result(
                argv=self.argv,
                code=code,
                out=b"".join(self._out).decode("utf-8", "replace"),
                err=b"".join(self._err).decode("utf-8", "replace"),
                timed_out=self._timed_out,
            )
        )


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = 300.0,
    reactor: Any = None,
) -> Deferred[Result]:
    """Spawn ``argv`` and fire with its :class:`Result`; never blocks the reactor."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    args = tuple(os.fspath(a) for a in argv)
    proto = _Collect(args, reactor, timeout)
    reactor.spawnProcess(
        proto,
        args[0],
        args,
        env=dict(env),
        path=os.fspath(cwd) if cwd is not None else None,
    )
    return proto.done


def _with_home(
    argv: Sequence[str],
    home: str | os.PathLike[str] | None,
    env_extra: Mapping[str, str] | None,
    cwd: str | os.PathLike[str] | None,
    timeout: float | None,
    reactor: Any,
) -> Deferred[Result]:
    own_home = home is None
    home_dir = tempfile.mkdtemp(prefix="pypicached-home-") if own_home else os.fspath(home)
    env = clean_env(home_dir)
    env.update(env_extra or {})
    d = run_process(argv, env=env, cwd=cwd, timeout=timeout, reactor=reactor)
    if own_home:

        def cleanup(result: Any) -> Any:
            shutil.rmtree(home_dir, ignore_errors=True)
            return result

        d.addBoth(cleanup)
    return d


def run_pip(
    args: Sequence[str],
    index_url: str | None,
    *,
    python: str = sys.executable,
    home: str | os.PathLike[str] | None = None,
    env_extra: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = 300.0,
    reactor: Any = None,
) -> Deferred[Result]:
    """``python -m pip <subcommand> <isolation flags> <rest of args>``.

    ``args[0]`` is the subcommand (``download``, ``install``, ...).  ``index_url`` None leaves
    out ``--index-url`` (for ``--no-index`` runs).  Use ``--target DIR`` / ``-d DIR`` so that
    nothing is installed into the test environment itself.
    """
    if not args:
        raise ValueError("run_pip needs a subcommand")
    subcommand, rest = args[0], list(args[1:])
    common = ["--isolated", "--no-input", "--no-cache-dir", "--disable-pip-version-check"]
    if subcommand in ("download", "install", "wheel"):
        common.append("--progress-bar=off")
    if index_url is not None:
        common += ["--index-url", index_url]
    argv = [python, "-m", "pip", subcommand, *common, *rest]
    return _with_home(argv, home, env_extra, cwd, timeout, reactor)


def find_uv() -> str | None:
    """The ``uv`` binary of this environment: the ``uv`` package's, or one beside python."""
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]

        return find_uv_bin()
    except Exception:
        pass
    beside = shutil.which("uv", path=os.path.dirname(sys.executable))
    return beside or shutil.which("uv")


def run_uv(
    args: Sequence[str],
    index_url: str | None,
    *,
    python: str | None = sys.executable,
    cache_dir: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    env_extra: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = 300.0,
    reactor: Any = None,
    uv: str | None = None,
) -> Deferred[Result]:
    """``uv pip <subcommand> --no-config --index-url URL --no-cache|--cache-dir D ... <args>``.

    ``args[0]`` is the ``uv pip`` subcommand (``install``, ``compile``, ...).  ``--python``
    is added (as ``python``) unless the args already choose one; with ``install`` always pass
    ``--target DIR`` so the test environment is not modified.
    """
    if not args:
        raise ValueError("run_uv needs a subcommand")
    binary = uv or find_uv()
    if binary is None:
        raise FileNotFoundError("no uv binary: pip install uv into the test environment")
    subcommand, rest = args[0], list(args[1:])
    common = ["--no-config", "--no-progress", "--color", "never"]
    if index_url is not None:
        common += ["--index-url", index_url]
    common += ["--cache-dir", os.fspath(cache_dir)] if cache_dir is not None else ["--no-cache"]
    chooses_python = any(a in ("-p", "--python") or a.startswith("--python=") for a in rest)
    if python is not None and not chooses_python and subcommand in ("install", "sync", "compile", "uninstall"):
        common += ["--python", python]
    argv = [binary, "pip", subcommand, *common, *rest]
    # Copy, don't hardlink: the cache may be on another filesystem than the target.
    env = {"UV_LINK_MODE": "copy", "UV_PYTHON_DOWNLOADS": "never"}
    env.update(env_extra or {})
    return _with_home(argv, home, env, cwd, timeout, reactor)
