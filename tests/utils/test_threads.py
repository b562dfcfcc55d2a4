"""The CLI's OpenMP wait-policy rule (:mod:`semmae.utils.threads`) with mocked cores, load and environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from semmae.utils.threads import BUSY_LOAD, SMALL_MACHINE, apply_wait_policy, choose_wait_policy


def never():
    raise AssertionError("the rule should not need this")


@pytest.mark.parametrize(
    "env, cores, load, expected",
    [
        ({"OMP_WAIT_POLICY": "ACTIVE"}, never, never, None),  # the user's own choice wins, even over ours
        ({"OMP_WAIT_POLICY": "active", "SEMMAE_OMP_WAIT": "passive"}, never, never, None),
        ({"SEMMAE_OMP_WAIT": "passive"}, never, never, "PASSIVE"),
        ({"SEMMAE_OMP_WAIT": "Active"}, never, never, "ACTIVE"),
        ({"SEMMAE_OMP_WAIT": "default"}, never, never, None),
        ({"SEMMAE_OMP_WAIT": "sometimes"}, never, never, None),  # not a choice: ignored, with a reason
        ({}, lambda: 2, never, "PASSIVE"),  # a small machine: passive whatever the load
        ({}, lambda: SMALL_MACHINE, never, "PASSIVE"),
        ({"SEMMAE_OMP_WAIT": "auto"}, lambda: 16, lambda: 0.1, None),  # big and idle: OpenMP's default
        ({}, lambda: 16, lambda: BUSY_LOAD, "PASSIVE"),  # big but shared
        ({}, lambda: 64, lambda: 7.5, "PASSIVE"),
        ({}, lambda: 16, lambda: None, None),  # no load average on this system
    ],
)
def test_rule(env, cores, load, expected):
    value, reason = choose_wait_policy(dict(env), cores, load)
    assert value == expected and reason


def test_apply_sets_only_when_the_rule_says_so():
    env = {"SEMMAE_OMP_WAIT": "passive"}
    assert "SEMMAE_OMP_WAIT=passive" in apply_wait_policy(env) and env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert "set by the user" in apply_wait_policy(env) and env == {"OMP_WAIT_POLICY": "ACTIVE"}
    env = {"SEMMAE_OMP_WAIT": "default"}
    apply_wait_policy(env)
    assert "OMP_WAIT_POLICY" not in env


def test_cli_main_sets_the_policy_before_torch_loads():
    code = (
        "import os, sys\n"
        "from semmae.cli import main\n"
        "assert 'torch' not in sys.modules\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "SEMMAE_OMP_WAIT")}
    for extra, expected in (
        ({"SEMMAE_OMP_WAIT": "passive"}, "PASSIVE"),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),
    ):
        out = subprocess.run(
            [sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == expected
