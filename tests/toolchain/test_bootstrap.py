"""scripts/bootstrap.sh survives what real machines do: tools that print a lot, under `set -o pipefail`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from localmesh.testing import project_root

# Far more than a pipe holds (64 KiB): a reader that stops after one line makes the writer die of SIGPIPE.
CHATTY_LINES = 200_000


def test_the_consul_step_reads_a_chatty_version_without_dying_of_sigpipe(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    shutil.copy(project_root() / "scripts" / "bootstrap.sh", scripts / "bootstrap.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "consul"
    fake.write_text(f"#!/bin/sh\necho 'Consul v1.8.7'\nseq {CHATTY_LINES} | sed 's/^/Revision line /'\n")
    fake.chmod(0o755)
    # Only this consul on PATH (plus what bash, awk and seq need), so the step takes its "on PATH" branch.
    tools = {Path(found).parent for name in ("bash", "awk", "seq", "sed") if (found := shutil.which(name))}
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), *map(str, sorted(tools))])}

    result = subprocess.run(["bash", str(scripts / "bootstrap.sh"), "consul"], env=env, capture_output=True,
                            text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"using {fake}: Consul v1.8.7" in result.stdout


def test_no_script_cuts_a_pipe_short_with_head() -> None:
    # `cmd | head -1` under pipefail fails the step with 141 whenever cmd writes after head is gone (issue 9).
    offenders = [f"{path.name}:{number}: {line.strip()}" for path in (project_root() / "scripts").glob("*.sh")
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if "| head" in line and not line.lstrip().startswith("#")]
    assert offenders == []
