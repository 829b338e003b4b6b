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
- poetry and pdm: no ``POETRY_*`` / ``PDM_*`` variables of this machine; their config, cache and
  data dirs set explicitly inside the temporary ``HOME``, so each run starts with an empty
  cache (a run that should reuse a cache must share its ``home``); pdm's self-update check off
  (it would ask the public index); no ``VIRTUAL_ENV`` (poetry would install into it).
- Any request to a host other than loopback goes to a closed local port as an HTTP(S) proxy
  and fails at once: a tool that ignored the index it was given cannot quietly reach the
  internet (``NO_PROXY`` lets loopback through).

The installers of the compatibility matrix live in their own virtual environments, one per
tool, built by ``make tools`` from ``tests/installer-pins/<tool>.txt`` under ``.venv-tools/``
(or ``$PYPICACHED_TOOLS``): see :func:`tool_venv`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

__all__ = [
    "INSTALLERS",
    "MissingTool",
    "Result",
    "clean_env",
    "find_uv",
    "run_pdm",
    "run_pip",
    "run_poetry",
    "run_process",
    "run_uv",
    "run_uv_project",
    "tool_bin",
    "tool_venv",
    "tools_dir",
]

# This machine's proxy variables are dropped; clean_env sets its own (see BLACKHOLE_PROXY).
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}
# Variables that would point a child's Python or an installer at another environment.
_ENVIRONMENT_VARIABLES = {"VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PYTHONPATH", "PYTHONHOME"}
#: Port 9 (discard) on loopback: nothing listens there, so a proxied request fails at once.
BLACKHOLE_PROXY = "http://127.0.0.1:9"

#: The installer environments ``make tools`` builds: name -> the executable tests run.
INSTALLERS = {"pip": "pip", "pip-23": "pip", "uv": "uv", "poetry": "poetry", "pdm": "pdm"}
_REPO = Path(__file__).resolve().parent.parent


class MissingTool(AssertionError):
    """An installer environment is not built.  An AssertionError, so the test fails (not skips)."""


def tools_dir() -> Path:
    """Where ``make tools`` builds the installer environments (``$PYPICACHED_TOOLS`` wins)."""
    return Path(os.environ.get("PYPICACHED_TOOLS") or _REPO / ".venv-tools")


def tool_venv(name: str) -> Path:
    """The virtual environment of installer ``name`` (see :data:`INSTALLERS`), checked."""
    if name not in INSTALLERS:
        raise ValueError(f"unknown installer {name!r}; known: {', '.join(INSTALLERS)}")
    venv = tools_dir() / name
    pins = _REPO / "tests" / "installer-pins" / f"{name}.txt"
    if not (venv / ".installed").exists() or not (venv / "bin" / INSTALLERS[name]).exists():
        raise MissingTool(
            f"the {name} installer environment {venv} is missing or incomplete: build it with "
            f"`make tools` (`make test` does it first), which installs {pins.relative_to(_REPO)}"
        )
    return venv


def tool_bin(name: str, executable: str | None = None) -> str:
    """An executable (default: the tool itself) of installer environment ``name``."""
    return os.fspath(tool_venv(name) / "bin" / (executable or INSTALLERS[name]))


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

    def check(self) -> Result:
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
        if not key.startswith(("PIP_", "UV_", "POETRY_", "PDM_"))
        and key.lower() not in _PROXY_VARIABLES
        and key not in _ENVIRONMENT_VARIABLES
    }
    for key in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_DIRS", "PYTHONUSERBASE"):
        env.pop(key, None)
    loopback = "127.0.0.1,localhost,::1,[::1]"
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
            "POETRY_CONFIG_DIR": os.path.join(home, "poetry-config"),
            "POETRY_CACHE_DIR": os.path.join(home, "poetry-cache"),
            "POETRY_HOME": os.path.join(home, "poetry-data"),
            "POETRY_VIRTUALENVS_IN_PROJECT": "true",
            "POETRY_NO_INTERACTION": "1",
            "PDM_CONFIG_FILE": os.path.join(home, "pdm-config.toml"),
            "PDM_CACHE_DIR": os.path.join(home, "pdm-cache"),
            "PDM_LOG_DIR": os.path.join(home, "pdm-logs"),
            "PDM_CHECK_UPDATE": "false",
            "PDM_NON_INTERACTIVE": "1",
            # No keyring probing (poetry and pdm ask one for credentials of every index).
            "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
            "HTTP_PROXY": BLACKHOLE_PROXY,
            "HTTPS_PROXY": BLACKHOLE_PROXY,
            "ALL_PROXY": BLACKHOLE_PROXY,
            "http_proxy": BLACKHOLE_PROXY,
            "https_proxy": BLACKHOLE_PROXY,
            "all_proxy": BLACKHOLE_PROXY,
            "NO_PROXY": loopback,
            "no_proxy": loopback,
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
    unset: Sequence[str] = (),
) -> Deferred[Result]:
    own_home = home is None
    home_dir = tempfile.mkdtemp(prefix="pypicached-home-") if own_home else os.fspath(home)
    env = clean_env(home_dir)
    for key in unset:
        env.pop(key, None)
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


def run_uv_project(
    args: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    uv: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    env_extra: Mapping[str, str] | None = None,
    timeout: float | None = 300.0,
    reactor: Any = None,
) -> Deferred[Result]:
    """``uv <args>`` for project commands (``lock``, ``sync``) in the project directory ``cwd``.

    Unlike :func:`run_uv`, the project's own ``pyproject.toml`` settings (``[[tool.uv.index]]``)
    are read: ``UV_NO_CONFIG`` is lifted for this run, and only the temporary ``HOME`` / XDG
    dirs keep user and system ``uv.toml`` files away.  No index is added here: give it in the
    project or in ``args``.
    """
    binary = uv or find_uv()
    if binary is None:
        raise FileNotFoundError("no uv binary: pip install uv into the test environment")
    cache = ["--cache-dir", os.fspath(cache_dir)] if cache_dir is not None else ["--no-cache"]
    argv = [binary, *args, "--no-progress", "--color", "never", *cache]
    env = {"UV_LINK_MODE": "copy", "UV_PYTHON_DOWNLOADS": "never"}
    env.update(env_extra or {})
    return _with_home(argv, home, env, cwd, timeout, reactor, unset=("UV_NO_CONFIG",))


def run_poetry(
    args: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    poetry: str | None = None,
    home: str | os.PathLike[str] | None = None,
    env_extra: Mapping[str, str] | None = None,
    timeout: float | None = 300.0,
    reactor: Any = None,
) -> Deferred[Result]:
    """``poetry <args> --no-interaction --no-ansi`` in the project directory ``cwd``.

    Poetry's cache and config live in ``home`` (a fresh temporary one by default, so nothing
    is taken from an earlier run); its virtualenv goes in ``cwd/.venv``.
    """
    argv = [poetry or tool_bin("poetry"), *args, "--no-interaction", "--no-ansi"]
    return _with_home(argv, home, env_extra, cwd, timeout, reactor)


def run_pdm(
    args: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    pdm: str | None = None,
    home: str | os.PathLike[str] | None = None,
    env_extra: Mapping[str, str] | None = None,
    timeout: float | None = 300.0,
    reactor: Any = None,
) -> Deferred[Result]:
    """``pdm <args>`` in the project directory ``cwd``, its cache and config in ``home``."""
    argv = [pdm or tool_bin("pdm"), *args]
    return _with_home(argv, home, env_extra, cwd, timeout, reactor)
