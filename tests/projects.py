"""What the installer tests ask installers for, and the check of what they leave behind.

Why apart: the installer matrix, the policy's installer tests, the cluster and the extra-index
tests all write the same project files and check installs the same way, byte for byte against
the wheels the fake upstream published.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

from .wheels import Dist

__all__ = [
    "REQUIREMENTS",
    "WANTED",
    "assert_installed",
    "pdm_project",
    "poetry_project",
    "site_packages",
    "uv_project",
]

# What every matrix cell installs: pcx-beta (which needs pcx-alpha>=2) and the 3 MiB pcx-big.
REQUIREMENTS = ["pcx-beta", "pcx-big"]
#: What ``pip download pcx-beta`` fetches: pcx-beta and the pcx-alpha it needs.
WANTED = ["pcx_alpha-2.0-py3-none-any.whl", "pcx_beta-0.1-py3-none-any.whl"]


def assert_installed(site: Path, dists: Iterable[Dist]) -> None:
    """Each dist is installed in ``site`` with every file byte for byte as in its wheel."""
    for dist in dists:
        with zipfile.ZipFile(io.BytesIO(dist.data)) as zf:
            for name in zf.namelist():
                if name.endswith(("/RECORD", "/INSTALLER", "/REQUESTED")):
                    continue
                installed = site / name
                assert installed.is_file(), f"{dist.filename}: {name} not installed in {site}"
                assert installed.read_bytes() == zf.read(name), f"{dist.filename}: {name} differs"


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    assert len(found) == 1, f"no single site-packages in {venv}: {found}"
    return found[0]


def poetry_project(path: Path, index_url: str, requirements: list[str] = REQUIREMENTS) -> Path:
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(
        "[project]\n"
        'name = "matrix-poetry"\n'
        'version = "0"\n'
        'requires-python = ">=3.11"\n'
        f"dependencies = {requirements!r}\n".replace("'", '"')
        + "\n[tool.poetry]\npackage-mode = false\n"
        "\n[[tool.poetry.source]]\n"
        'name = "lan"\n'
        f'url = "{index_url}"\n'
        'priority = "primary"\n'
    )
    return path


def pdm_project(path: Path, index_url: str) -> Path:
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(
        "[project]\n"
        'name = "matrix-pdm"\n'
        'version = "0"\n'
        'requires-python = ">=3.11"\n'
        f"dependencies = {REQUIREMENTS!r}\n".replace("'", '"')
        + "\n[tool.pdm]\ndistribution = false\n"
        "\n[[tool.pdm.source]]\n"
        'name = "pypi"\n'
        f'url = "{index_url}"\n'
    )
    return path


def uv_project(path: Path, index_url: str, requirements: list[str] = REQUIREMENTS) -> Path:
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(
        "[project]\n"
        'name = "matrix-uv"\n'
        'version = "0"\n'
        'requires-python = ">=3.11"\n'
        f"dependencies = {requirements!r}\n".replace("'", '"')
        + "\n[[tool.uv.index]]\n"
        'name = "lan"\n'
        f'url = "{index_url}"\n'
        "default = true\n"
    )
    return path
