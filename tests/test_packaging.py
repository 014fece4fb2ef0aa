"""What Beam ships to remote workers (`--setup_file ./setup.py` builds an sdist) must carry the runtime files."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sdist_for_workers_carries_packages_and_the_analyst_views(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=REPO, check=True,
                   capture_output=True)
    (archive,) = list(tmp_path.glob("*.tar.gz"))
    names = {name.split("/", 1)[1] for name in tarfile.open(archive).getnames() if "/" in name}
    for required in ("schemas/queries.sql", "schemas/card.py", "pipelines/transforms.py", "models/registry.py",
                     "pipelines/streaming/source.py", "feedback_ingest/ingest.py", "jobs/cli.py"):
        assert required in names, f"{required} is missing from the sdist Beam workers install"
