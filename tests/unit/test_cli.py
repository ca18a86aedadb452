"""The entry-point contract: MLproject, the `tsp` script and `python -m tsp_mlflow` agree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import yaml

from tsp_mlflow.cli import cli

REPO = Path(__file__).resolve().parents[2]
MLPROJECT = yaml.safe_load((REPO / "MLproject").read_text())


def test_every_mlproject_parameter_is_passed_to_a_matching_cli_option() -> None:
    for name, entry in MLPROJECT["entry_points"].items():
        command = entry["command"]
        sub = command.split()[3]
        assert command.startswith(f"python -m tsp_mlflow {sub} ")
        options = {
            opt
            for p in cli.commands[sub].params
            if isinstance(p, click.Option)
            for opt in p.opts + p.secondary_opts
        }
        passed = dict(re.findall(r"(--[\w-]+) \{(\w+)\}", command))
        arguments = {p.name for p in cli.commands[sub].params if isinstance(p, click.Argument)}
        positional = {x for x in re.findall(r"\{(\w+)\}", command)} - set(passed.values())
        assert positional <= arguments, name
        assert set(passed.values()) | positional == set(entry["parameters"]), name
        assert set(passed) <= options, name


def test_pipeline_is_the_main_entry_point() -> None:
    entries = MLPROJECT["entry_points"]
    assert entries["main"] == entries["pipeline"]


def test_console_script_and_module_expose_the_same_commands() -> None:
    script = Path(sys.executable).parent / "tsp"
    for cmd in ([str(script), "--help"], [sys.executable, "-m", "tsp_mlflow", "--help"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert all(c in out.stdout for c in ("pretrain", "multimodal", "pipeline", "analyze"))


def test_a_server_command_stops_on_ctrl_c_even_if_it_inherited_sigint_ignored_and_blocked() -> None:
    # A parent's ignored SIGINT survives exec, and so does its signal mask: either would
    # make Ctrl-C a no-op for `tsp ui` / `tsp server`, leaving the server running.
    import signal
    import subprocess
    import sys

    def inherit_a_deaf_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    code = (
        "import os, signal\n"
        "from tsp_mlflow.commands.running import stop_on_signals\n"
        "deaf = signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"
        "stop_on_signals(signal.SIGTERM)\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    import time; time.sleep(5)\n"
        "    print('still running')\n"
        "except KeyboardInterrupt:\n"
        "    print('stopped', deaf)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=inherit_a_deaf_sigint,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "stopped True", done.stderr[-2000:]
