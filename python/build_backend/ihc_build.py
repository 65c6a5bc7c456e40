"""The ihc package's PEP 517 build backend, in the tree and standard library only, so that
``pip install ./python`` works offline: pip's isolated build environment needs nothing from a
package index (Debian's venvs come without ``wheel``, which setuptools would need). It builds
the pure-Python wheel (``ihc/*.py`` + dist-info) and an sdist from pyproject.toml."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = "py3-none-any"


def _project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _metadata() -> str:
    p = _project()
    lines = ["Metadata-Version: 2.1", f"Name: {p['name']}", f"Version: {p['version']}",
             f"Summary: {p.get('description', '')}",
             f"Requires-Python: {p.get('requires-python', '')}"]
    lines += [f"Classifier: {c}" for c in p.get("classifiers", [])]
    readme = p.get("readme")
    body = ""
    if readme:
        lines.append("Description-Content-Type: text/markdown")
        with open(os.path.join(ROOT, readme), encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def _sources() -> list[str]:
    out = []
    for d, _, files in os.walk(os.path.join(ROOT, "ihc")):
        out += [os.path.relpath(os.path.join(d, f), ROOT) for f in files
                if f.endswith(".py") or f == "py.typed"]
    return sorted(out)


def _dist_info() -> str:
    p = _project()
    return f"{p['name']}-{p['version']}.dist-info"


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d = os.path.join(metadata_directory, _dist_info())
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "METADATA"), "w", encoding="utf-8") as f:
        f.write(_metadata())
    return _dist_info()


def _digest(data: bytes) -> str:
    h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={h},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    p = _project()
    name = f"{p['name']}-{p['version']}-{TAG}.whl"
    di = _dist_info()
    files: list[tuple[str, bytes]] = []
    for rel in _sources():
        with open(os.path.join(ROOT, rel), "rb") as f:
            files.append((rel.replace(os.sep, "/"), f.read()))
    files.append((f"{di}/METADATA", _metadata().encode()))
    files.append((f"{di}/WHEEL", (f"Wheel-Version: 1.0\nGenerator: ihc_build\n"
                                  f"Root-Is-Purelib: true\nTag: {TAG}\n").encode()))
    files.append((f"{di}/top_level.txt", b"ihc\n"))
    record = "".join(f"{n},{_digest(d)}\n" for n, d in files) + f"{di}/RECORD,,\n"
    files.append((f"{di}/RECORD", record.encode()))
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files:
            z.writestr(zipfile.ZipInfo(n, (2020, 1, 1, 0, 0, 0)), d, zipfile.ZIP_DEFLATED)
    return name


def build_sdist(sdist_directory, config_settings=None):
    p = _project()
    base = f"{p['name']}-{p['version']}"
    name = f"{base}.tar.gz"
    rels = _sources() + ["pyproject.toml", "README.md", "build_backend/ihc_build.py"]
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for rel in rels:
            t.add(os.path.join(ROOT, rel), f"{base}/{rel}")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = _metadata().encode()
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return name
