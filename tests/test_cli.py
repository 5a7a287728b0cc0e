"""``python -m semizoo``: the help lists every command and argument (from the signatures), unknown commands fail."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from semizoo.cli import Commands, main, parse_docstring

PROG = "python -m semizoo"


def _commands() -> dict[str, Callable]:
    """Dashed name -> public method of Commands, found independently of the CLI's own introspection."""
    members = inspect.getmembers(Commands, inspect.isfunction)
    return {name.replace("_", "-"): method for name, method in members if not name.startswith("_")}


def _parameters(method: Callable) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(method).parameters.values() if p.name != "self"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "semizoo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _assert_lists_commands(text: str) -> None:
    lines = text.splitlines()
    for name, method in _commands().items():
        first_line = inspect.getdoc(method).splitlines()[0]
        assert first_line.strip(), f"{name}: docstring has no one-line summary"
        rows = [line for line in lines if line.startswith(f"  {name} ")]
        assert len(rows) == 1, f"{name}: expected one row in\n{text}"
        assert rows[0].split(None, 1)[1] == first_line.strip()


def _main(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_top_level_help_lists_every_command():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {PROG} COMMAND")
    _assert_lists_commands(result.stdout)
    assert f"{PROG} COMMAND --help" in result.stdout
    assert "semizoo -\n" not in result.stdout


@pytest.mark.parametrize("args", [[], ["-h"], ["--help"], ["--", "--help"]])
def test_help_without_command(capsys, args):
    code, out, err = _main(capsys, *args)
    assert code == 0 and err == ""
    _assert_lists_commands(out)
    assert "semizoo is" in out


def test_new_command_is_listed(capsys, monkeypatch):
    def new_thing(self, value: int = 3) -> str:
        """Do a new thing.

        Args:
            value: how much.
        """
        return str(value)

    monkeypatch.setattr(Commands, "new_thing", new_thing, raising=False)
    code, out, _ = _main(capsys, "--help")
    assert code == 0 and any(line.split() == ["new-thing", "Do", "a", "new", "thing."] for line in out.splitlines())
    code, out, _ = _main(capsys, "new-thing", "--help")
    assert code == 0 and "--value=VALUE  (int, default: 3)" in out


@pytest.mark.parametrize("name", sorted(_commands()))
def test_command_help_shows_every_argument_and_default(capsys, name):
    method = _commands()[name]
    code, out, err = _main(capsys, name, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: {PROG} {name}")
    assert inspect.getdoc(method).splitlines()[0] in out
    lines = out.splitlines()
    for parameter in _parameters(method):
        flag = f"--{parameter.name.replace('_', '-')}"
        starts = (f"  {flag}=", f"  {flag} |", f"  {parameter.name.upper()} (")
        rows = [i for i, line in enumerate(lines) if line.startswith(starts)]
        assert len(rows) == 1, f"{name}: {flag} not shown once in\n{out}"
        row = lines[rows[0]]
        assert flag in row
        if parameter.default is inspect.Parameter.empty:
            assert "required" in row
        else:
            assert f"default: {parameter.default!r}" in row
        description = lines[rows[0] + 1]
        assert description.startswith(" " * 6) and description.strip() not in ("", "(undocumented)"), row
    _, documented = parse_docstring(method)
    assert set(documented) == {p.name for p in _parameters(method)}, f"{name}: Args section out of date"


def test_command_help_after_arguments(capsys):
    code, out, _ = _main(capsys, "phantoms", "acdc", "-h")
    assert code == 0 and out.startswith(f"usage: {PROG} phantoms DATASET OUT [flags]")
    for parameter in _parameters(Commands.phantoms):
        assert parameter.name.upper() in out
    assert "default: 'test'" in out


def test_underscore_names_work(capsys):
    code, out, _ = _main(capsys, "teacher_bias", "--help")
    assert code == 0 and out.startswith(f"usage: {PROG} teacher-bias CHECKPOINT DATALIST")


def test_unknown_command_lists_valid_ones():
    result = _run("frobnicate")
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr
    _assert_lists_commands(result.stderr)
    assert result.stdout == ""


def test_unknown_command_suggests_a_close_one(capsys):
    code, out, err = _main(capsys, "prepar", "--help")
    assert code == 2 and out == ""
    assert "unknown command 'prepar' (did you mean 'prepare'?)" in err


def test_commands_still_run_and_errors_return_codes(capsys, tmp_path: Path):
    out_dir = tmp_path / "phantoms"
    code, out, _ = _main(capsys, "phantoms", "acdc", str(out_dir), "--cases=1", "--size=16")
    assert code == 0 and "wrote acdc phantoms" in out
    assert json.loads((out_dir / "semizoo_phantom.json").read_text())["arguments"]["cases"] == 1
    code, _, err = _main(capsys, "validate")  # missing DATALIST: fire's usage error, returned instead of raised
    assert code == 2 and "validate" in err
