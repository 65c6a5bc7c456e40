"""`pip install ./python` into a fresh venv, with no package index (as on a machine without
network): the package's own build backend needs nothing from one."""

import os
import subprocess
import sys

from conftest import ROOT


def test_pip_install_into_venv_offline(tmp_path):
    v = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(v)], check=True, timeout=120)
    pip = subprocess.run([str(v / "bin" / "pip"), "install", "--no-index", "--no-cache-dir",
                          "-q", "./python"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PIP_FIND_LINKS=""))
    assert pip.returncode == 0, pip.stdout + pip.stderr
    code = ("import ihc, ihc.aio, ihc.client, ihc.local, ihc.session; "
            "assert ihc.__file__.startswith(%r), ihc.__file__; "
            "print(ihc.__version__, ihc.Client().url, ihc.LocalAPI().path)" % str(v))
    out = subprocess.run([str(v / "bin" / "python"), "-c", code], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=30,
                         env={"PATH": os.environ.get("PATH", ""), "IHC_LOCAL_URL":
                              "unix:///run/ihc/agent.sock"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.1.0", "http://127.0.0.1:7480", "/run/ihc/agent.sock"]
    site = out.stdout and subprocess.run(
        [str(v / "bin" / "python"), "-c", "import ihc, os; print(os.path.dirname(ihc.__file__))"],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=30).stdout.strip()
    assert os.path.exists(os.path.join(site, "py.typed")), "no py.typed in " + site
    assert not os.path.exists(os.path.join(ROOT, "python", "build")), "pip left build/"
