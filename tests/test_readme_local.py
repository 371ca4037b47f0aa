"""The README's "Your own data, locally" section, followed literally.

The shell commands are taken from the section's ```sh blocks as written and run,
in order, by one bash in a fresh directory holding a generated `mydata.csv`: a
real background stand-in, `eval "$(importer local env)"`, the drafted spec,
validate, run from the file and from `s3://`, and `down`.  Only the install line
is left out (this interpreter already has the package).  If the README changes,
this test runs the new commands; if a command fails, so does the test.
"""

from __future__ import annotations

import csv
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from importer.cli import local_moto

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Your own data, locally"
ROWS = 200
_INSTALL = re.compile(r"\bpip install\b")


def section_commands(readme: str) -> list[str]:
    """Every command line of the ```sh blocks under HEADING, in order."""
    lines = readme.splitlines()
    start = lines.index(HEADING)
    commands: list[str] = []
    in_block = False
    pending = ""
    for line in lines[start + 1 :]:
        if not in_block and line.startswith("## "):
            break
        if line.strip() == "```sh" and not in_block:
            in_block = True
            continue
        if line.strip() == "```" and in_block:
            in_block = False
            continue
        if in_block and line.strip() and not line.lstrip().startswith("#"):
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            commands.append(pending + line.strip())
            pending = ""
    return commands


def test_section_parser_reads_only_that_section():
    text = "\n".join(
        [
            "## Set up",
            "```sh",
            "not this",
            "```",
            HEADING,
            "prose `importer x`",
            "```sh",
            "one --a \\",
            "  --b",
            "# a comment",
            "two",
            "```",
            "```text",
            "not code",
            "```",
            "```sh",
            "three",
            "```",
            "## Next",
            "```sh",
            "not this either",
            "```",
        ]
    )
    assert section_commands(text) == ["one --a  --b", "two", "three"]


def write_mydata(path: Path) -> None:
    rng = random.Random(14)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["customer_id", "name", "email", "tier", "credit", "active", "since"])
        for i in range(ROWS):
            out.writerow(
                [
                    f"CUST-{i:04d}",
                    f"Customer {i}",
                    f"c{i}@example.com" if i % 9 else "",
                    rng.choice(["gold", "silver"]),
                    f"{rng.randint(0, 50000) / 100:.2f}",
                    rng.choice(["yes", "no"]),
                    f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                ]
            )


def _importer_prefix(env: dict[str, str]) -> str:
    """The console script when it runs this checkout, else this interpreter's module."""
    script = shutil.which("importer", path=env.get("PATH"))
    if script:
        probe = subprocess.run(
            [script, "local", "env", "--help"], env=env, capture_output=True, timeout=60
        )
        if probe.returncode == 0:
            return ""
    return f'importer() {{ "{sys.executable}" -m importer.cli.main "$@"; }}\n'


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("subfolder", ["", "data/2024"], ids=["same-folder", "from-a-subfolder"])
def test_readme_local_section_runs_as_written(tmp_path, subfolder):
    """As written; and with the stand-in started at the project's top and every later
    command typed in a subfolder of it (where a user keeps the data)."""
    commands = section_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert commands, f"no ```sh commands under {HEADING!r}"
    install = [c for c in commands if _INSTALL.search(c)]
    assert install == [commands[0]], "only the first command may be the install step"
    steps = commands[1:]
    for needed in ("importer local up --background", 'eval "$(importer local env)"'):
        assert needed in steps
    assert steps[-1] == "importer local down"
    assert any(c.startswith("importer run s3://") for c in steps)

    work = tmp_path / subfolder
    work.mkdir(parents=True, exist_ok=True)
    write_mydata(work / "mydata.csv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    script = "set -euo pipefail\n" + _importer_prefix(env)
    for command in steps:
        script += f"echo '>>> {command.replace(chr(39), '')}'\n{command}\n"
        if subfolder and re.match(r"importer local up(\s|$)", command):
            script += f"cd {subfolder}\n"
    state_dir = tmp_path / ".importer" / "local"
    try:
        res = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        leftover = local_moto.read_state(state_dir)
        if leftover is not None:
            local_moto.stop_background(state_dir)
    transcript = f"--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
    assert res.returncode == 0, transcript
    assert leftover is None, "the README's `down` left the stand-in running"
    # what each step must have done
    assert (work / "my.toml").exists()
    assert f"rows {ROWS:,}  would write {ROWS:,}  rejected 0" in res.stdout, transcript
    assert f"rows {ROWS:,}  written {ROWS:,}  rejected 0  failed 0" in res.stdout, transcript
    assert f"rows {ROWS:,}  written 0  unchanged {ROWS:,}  rejected 0" in res.stdout, transcript
    assert "s3://importer-local/mydata.csv" in res.stdout
    assert "stopped the stand-in" in res.stdout
    assert not (state_dir / "state.json").exists()
    assert "Traceback" not in res.stderr
