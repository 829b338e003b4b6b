"""Build small, real distributions in memory, deterministically, without setuptools.

Why: the proxy's tests need files that real installers (pip, uv) accept and install, with hashes
the tests can predict, and without any network or build backend.  The same call with the same
arguments always yields the same bytes, so digests can be compared across processes.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import random
import re
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from email.parser import BytesHeaderParser

import attrs

__all__ = [
    "Dist",
    "build_wheel",
    "build_sdist",
    "normalize_project",
    "escape_dist_name",
    "sample_dists",
]

# Zip entries need a date; 1980-01-01 is the earliest a zip can hold, and it keeps the bytes
# independent of when the test ran.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# A fixed mtime for tar members and the gzip header, for the same reason.
_TAR_MTIME = 315532800  # 1980-01-01T00:00:00Z


def normalize_project(name: str) -> str:
    """PEP 503 normalized project name (``Foo_Bar.baz`` -> ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def escape_dist_name(name: str) -> str:
    """The name as it appears in wheel / sdist filenames (``Foo-Bar.baz`` -> ``foo_bar_baz``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@attrs.frozen
class Dist:
    """One distribution file as an index would publish it.

    ``metadata`` is the core metadata file (``METADATA`` / ``PKG-INFO``) byte for byte, which is
    exactly what a PEP 658 ``<file>.metadata`` URL serves.
    """

    filename: str
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    metadata: bytes = attrs.field(repr=False)
    project: str
    version: str
    requires_python: str | None = None
    name: str = ""  # the display name as given to the builder (PEP 503 does not normalize it)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blake2b_256(self) -> str:
        return hashlib.blake2b(self.data, digest_size=32).hexdigest()

    @property
    def md5(self) -> str:
        return hashlib.md5(self.data).hexdigest()

    @property
    def metadata_sha256(self) -> str:
        return hashlib.sha256(self.metadata).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def packagetype(self) -> str:
        """PyPI's JSON API name for the kind of file."""
        return "bdist_wheel" if self.is_wheel else "sdist"

    @property
    def requires_dist(self) -> tuple[str, ...]:
        headers = BytesHeaderParser().parsebytes(self.metadata)
        return tuple(headers.get_all("Requires-Dist") or ())

    @property
    def pypi_path(self) -> str:
        """Where the public index keeps this file: content-addressed by blake2b-256."""
        b = self.blake2b_256
        return f"/packages/{b[0:2]}/{b[2:4]}/{b[4:]}/{self.filename}"


def _metadata(
    name: str,
    version: str,
    requires_dist: Iterable[str],
    requires_python: str | None,
) -> bytes:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: Test distribution {name} {version} built by pypicached's tests",
    ]
    if requires_python is not None:
        lines.append(f"Requires-Python: {requires_python}")
    lines.extend(f"Requires-Dist: {req}" for req in requires_dist)
    return ("\n".join(lines) + "\n").encode("utf-8")


def _padding(name: str, version: str, size: int) -> bytes:
    """Incompressible, but the same bytes every time for the same name and version."""
    seed = hashlib.sha256(f"{name}=={version}:{size}".encode()).digest()
    return random.Random(seed).randbytes(size)


def _zip_entry(zf: zipfile.ZipFile, path: str, data: bytes, *, stored: bool = False) -> None:
    info = zipfile.ZipInfo(path, date_time=_ZIP_EPOCH)
    info.create_system = 3  # unix, so that external_attr is read as a mode
    info.external_attr = (0o100644 & 0xFFFF) << 16
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def build_wheel(
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    size_padding: int = 0,
) -> Dist:
    """A ``py3-none-any`` wheel holding ``<pkg>/__init__.py`` with ``__version__``.

    ``size_padding`` adds ``<pkg>/_padding.bin`` of that many random (seeded) bytes, stored
    uncompressed, so streaming tests can get files of a chosen size.
    """
    escaped = escape_dist_name(name)
    dist_info = f"{escaped}-{version}.dist-info"
    metadata = _metadata(name, version, requires_dist, requires_python)
    wheel_file = (
        "Wheel-Version: 1.0\nGenerator: pypicached-tests (1.0)\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    ).encode("ascii")
    files: list[tuple[str, bytes, bool]] = [
        (
            f"{escaped}/__init__.py",
            f'"""Test package {name}."""\n__version__ = "{version}"\n'.encode(),
            False,
        ),
    ]
    if size_padding:
        files.append((f"{escaped}/_padding.bin", _padding(name, version, size_padding), True))
    files.append((f"{dist_info}/METADATA", metadata, False))
    files.append((f"{dist_info}/WHEEL", wheel_file, False))
    record_lines = [f"{path},{_record_hash(data)},{len(data)}" for path, data, _ in files]
    record_lines.append(f"{dist_info}/RECORD,,")
    record = ("\n".join(record_lines) + "\n").encode("utf-8")

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data, stored in files:
            _zip_entry(zf, path, data, stored=stored)
        _zip_entry(zf, f"{dist_info}/RECORD", record)
    return Dist(
        filename=f"{escaped}-{version}-py3-none-any.whl",
        data=buf.getvalue(),
        metadata=metadata,
        project=normalize_project(name),
        version=version,
        requires_python=requires_python,
        name=name,
    )


def build_sdist(
    name: str,
    version: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
) -> Dist:
    """A PEP 625 ``.tar.gz`` sdist with ``PKG-INFO`` and a setuptools ``pyproject.toml``.

    Building it would need setuptools from an index, so tests should treat it as an opaque
    (but genuine) archive.
    """
    escaped = escape_dist_name(name)
    top = f"{escaped}-{version}"
    metadata = _metadata(name, version, requires_dist, requires_python)
    deps = "".join(f'    "{req}",\n' for req in requires_dist)
    pyproject = (
        "[build-system]\n"
        'requires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n'
        "\n"
        "[project]\n"
        f'name = "{name}"\n'
        f'version = "{version}"\n'
        + (f'requires-python = "{requires_python}"\n' if requires_python else "")
        + f"dependencies = [\n{deps}]\n"
    ).encode("utf-8")
    members = [
        (f"{top}/PKG-INFO", metadata),
        (f"{top}/pyproject.toml", pyproject),
        (f"{top}/{escaped}/__init__.py", f'__version__ = "{version}"\n'.encode()),
    ]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = [top, f"{top}/{escaped}"]
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = _TAR_MTIME
            tf.addfile(info)
        for path, data in members:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = _TAR_MTIME
            tf.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    # filename="" and a fixed mtime keep the gzip header identical from run to run.
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=_TAR_MTIME) as gz:
        gz.write(raw.getvalue())
    return Dist(
        filename=f"{top}.tar.gz",
        data=compressed.getvalue(),
        metadata=metadata,
        project=normalize_project(name),
        version=version,
        requires_python=requires_python,
        name=name,
    )


def sample_dists() -> dict[str, list[Dist]]:
    """A small, fixed set of projects for fixtures (project -> dists).

    - ``pcx-alpha``: 1.0 (wheel + sdist), 2.0 (wheel, ``Requires-Python: >=3.8``)
    - ``pcx-beta``: 0.1 (wheel, depends on ``pcx-alpha>=2``)
    - ``Pcx_Gamma``: 1.0 (wheel; a display name that is not normalized)
    - ``pcx-big``: 1.0 (wheel of about 3 MiB, for streaming tests)
    """
    result: dict[str, list[Dist]] = {}
    for dist in (
        build_wheel("pcx-alpha", "1.0"),
        build_sdist("pcx-alpha", "1.0"),
        build_wheel("pcx-alpha", "2.0", requires_python=">=3.8"),
        build_wheel("pcx-beta", "0.1", requires_dist=["pcx-alpha>=2"]),
        build_wheel("Pcx_Gamma", "1.0"),
        build_wheel("pcx-big", "1.0", size_padding=3 * 1024 * 1024),
    ):
        result.setdefault(dist.project, []).append(dist)
    return result
