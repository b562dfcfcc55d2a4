"""The OpenMP wait policy of a ``semmae`` command, chosen before torch loads (OpenMP reads it once, at load time).

With libgomp's default, a torch thread that waits at the end of a parallel region spins for a while; when another
process holds one of the cores, the spinning threads burn the time slices the working ones need, and a training
step on a shared 2-core CPU ran 3x slower than with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep), 15-25x under
heavy load (``benchmarks/results/2026-12-03-omp-wait-contention-cpu.md``); on an idle machine PASSIVE cost 4-12 %
(``benchmarks/results/2026-11-26-omp-wait-cpu.md``). The numbers of the rule trade the two: a rare few percent
against a likely several-fold slowdown.

The rule (:func:`choose_wait_policy`), first match wins:

1. ``OMP_WAIT_POLICY`` already set: left alone (the user's choice).
2. ``SEMMAE_OMP_WAIT=passive|active``: that policy; ``SEMMAE_OMP_WAIT=default``: left unset (OpenMP's default).
3. Otherwise (``SEMMAE_OMP_WAIT`` unset or ``auto``): ``PASSIVE`` when the machine is small or busy - at most
   ``SMALL_MACHINE`` usable cores, or a 1-minute load average of at least ``BUSY_LOAD`` (other processes keep
   half a core busy); else left unset.

Torch-free and import-light: ``semmae.cli.main`` calls :func:`apply_wait_policy` first.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, MutableMapping

SMALL_MACHINE = 4  # usable cores at or below which anything else running takes a large share of them
BUSY_LOAD = 0.5  # 1-minute load average (runnable processes) that counts as a shared machine
CHOICES = ("auto", "passive", "active", "default")


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average, or None where the system does not report one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def choose_wait_policy(
    env: MutableMapping[str, str],
    cores: Callable[[], int] = usable_cores,
    load: Callable[[], float | None] = load_average,
) -> tuple[str | None, str]:
    """(the ``OMP_WAIT_POLICY`` value to set, or None to leave the environment as it is; the reason), by the
    module's rule. ``cores`` and ``load`` are only called when the rule needs them."""
    if env.get("OMP_WAIT_POLICY"):
        return None, f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']} set by the user"
    choice = env.get("SEMMAE_OMP_WAIT", "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        return None, f"SEMMAE_OMP_WAIT={choice!r} is not one of {', '.join(CHOICES)}: ignored"
    if choice == "default":
        return None, "SEMMAE_OMP_WAIT=default: OpenMP's default"
    if choice != "auto":
        return choice.upper(), f"SEMMAE_OMP_WAIT={choice}"
    n = cores()
    if n <= SMALL_MACHINE:
        return "PASSIVE", f"{n} usable cores (<= {SMALL_MACHINE})"
    busy = load()
    if busy is not None and busy >= BUSY_LOAD:
        return "PASSIVE", f"1-minute load average {busy:.2f} (>= {BUSY_LOAD}) on {n} cores"
    return None, f"{n} cores, load average {busy if busy is None else f'{busy:.2f}'}: OpenMP's default"


def apply_wait_policy(env: MutableMapping[str, str] | None = None) -> str:
    """Set ``OMP_WAIT_POLICY`` in ``env`` (default ``os.environ``) by the rule and return the reason. Does
    nothing once torch is loaded (``main`` called in-process by a test or a script): OpenMP has read the policy."""
    if env is None:
        if "torch" in sys.modules:
            return "torch already loaded: left as it is"
        env = os.environ
    value, reason = choose_wait_policy(env)
    if value is not None:
        env["OMP_WAIT_POLICY"] = value
    return reason
