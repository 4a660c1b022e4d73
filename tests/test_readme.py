"""The README's two set-up commands are exactly what .ci/run runs, and its documented entry points exist."""
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set up (two commands)", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_ci_runs_the_readme_commands_verbatim():
    commands = setup_commands()
    assert len(commands) == 2, commands
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci, f"README command not run verbatim by .ci/run: {command}"
    assert ci.index(commands[0]) < ci.index(commands[1])
    assert "HF_HUB_OFFLINE=1" in commands[1] and "pytest" in commands[1]


def test_cli_lists_every_documented_subcommand():
    out = subprocess.run([sys.executable, "-m", "hf_fer.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("demo", "predict", "convert", "train", "evaluate", "compare", "export", "prepare-dataset", "push", "benchmark"):
        assert re.search(rf"^\s+{re.escape(name)}\s", out, flags=re.M), name


def test_unknown_subcommand_is_one_clear_line():
    result = subprocess.run([sys.executable, "-m", "hf_fer.cli", "fly"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown subcommand 'fly'" in result.stderr and "Traceback" not in result.stderr


def test_scripts_are_thin_wrappers():
    for name in ("train", "evaluate", "compare", "export", "convert_original_checkpoint", "prepare_dataset", "push_to_hub", "benchmark"):
        path = REPO / "scripts" / f"{name}.py"
        assert path.is_file(), path
        result = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage" in result.stdout.lower(), (name, result.stdout[-500:], result.stderr[-2000:])
