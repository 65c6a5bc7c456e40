"""examples/python/asyncio_stream.py, run as the README says, stopped mid-stream by
`ihc interrupt` (the CLI, over the control socket)."""

import os
import re
import subprocess
import sys

import ihc_env
from conftest import ROOT


def test_asyncio_stream_example_stopped_by_cli(cluster):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"),
               IHC_LOCAL_URL=cluster.local_url)
    ex = subprocess.Popen([sys.executable, "examples/python/asyncio_stream.py", "--hw",
                           "py-example-1", "--period-ms", "2"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = ex.stderr.readline()
        assert "streaming" in banner, banner + ex.stderr.read()
        cluster.wait_coordinator_sessions("py-example-1", 1)
        cli = subprocess.run([ihc_env.bin_path("ihc"), "interrupt", "py-example-1",
                              "--reason", "enough"],
                             env=dict(os.environ, IHC_CONTROL_URL=cluster.env.control),
                             capture_output=True, text=True, timeout=30)
        if cli.returncode != 0:
            cluster.dump_logs()
        assert cli.returncode == 0, cli.stdout + cli.stderr
        out, err = ex.communicate(timeout=15)
    finally:
        if ex.poll() is None:
            ex.kill()
            ex.communicate()
    assert ex.returncode == 0, err
    last = out.strip().splitlines()[-1]
    m = re.match(r"stopped after (\d+) tokens, ([\d.]+) ms after the stop event arrived "
                 r"\(interrupt (\d+): enough\)", last)
    assert m, out
    assert int(m.group(1)) > 0 and float(m.group(2)) < 500
