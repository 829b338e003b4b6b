"""Remake the lock fixtures in this directory with the pinned uv, poetry and pdm of ``.venv-tools``.

Run explicitly: ``.venv/bin/python -m pytest -q -p no:cacheprovider tests/regenerate_locks.py``.
Each tool locks pcx-beta and pcx-big against the fake upstream directly (so the URLs are the index
the lock was made against); the upstream's address becomes ``http://upstream.invalid`` in the
fixture, which tests put back as their own upstream's address.
"""

from __future__ import annotations

from pathlib import Path

from pytest_twisted import ensureDeferred

from .installers import run_pdm, run_poetry, run_uv_project
from .projects import pdm_project, poetry_project, uv_project
from .test_matrix import check, tools  # noqa: F401  (a fixture)

HERE = Path(__file__).parent / "locks"
PLACEHOLDER = "http://upstream.invalid"


@ensureDeferred
async def test_regenerate(serve_upstream, tools, tmp_path):  # noqa: F811
    served = serve_upstream("json")
    index = served.simple_url
    base = index.split("/simple/")[0]
    uv = uv_project(tmp_path / "uv", index)
    check(await run_uv_project(["lock", "--python", tools["uv-python"]], cwd=uv, uv=tools["uv"], home=tmp_path / "h1"))
    poetry = poetry_project(tmp_path / "poetry", index)
    env = {"POETRY_VIRTUALENVS_USE_POETRY_PYTHON": "true"}
    check(await run_poetry(["lock"], cwd=poetry, poetry=tools["poetry"], home=tmp_path / "h2", env_extra=env))
    pdm = pdm_project(tmp_path / "pdm", index)
    check(await run_pdm(["lock"], cwd=pdm, pdm=tools["pdm"], home=tmp_path / "h3", env_extra={}))
    for made in (uv / "uv.lock", poetry / "poetry.lock", pdm / "pdm.lock"):
        (HERE / made.name).write_text(made.read_text().replace(base, PLACEHOLDER))
