"""IsolatedEvaluator: the proxy evaluator in a child process that is replaced every few evaluations.

A study can run for hours; compressing and running a model copy per trial leaves allocator
fragmentation, caches and (with a leaky kernel) real leaks behind. With ``isolation: process``
(the default) the run's own process keeps only the model's skeleton (on the meta device: shapes,
no weights) and the Optuna bookkeeping, while a spawned child loads the model, builds the
evaluator and scores Plans. After ``recycle_after`` evaluations the child exits and the next
evaluation starts a fresh one, so memory cannot grow across trials. A child that dies (killed for
memory, crashed in a kernel) fails only the trial it was scoring; an interrupt, a per-trial time
limit or an error in the parent kills the child at once (a hung kernel cannot outlive its trial).

Requests and replies cross the pipe as JSON (Plans are JSON anyway): nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from dlmsearch.evaluators import QualityResult, SensitivityTable
from dlmsearch.plan import Plan

logger = logging.getLogger("dlmsearch.search.isolation")

#: The folder holding the ``dlmsearch`` package, put on the child's path.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
#: Seconds a child gets to exit by itself after its pipe closes, before it is killed.
EXIT_GRACE_S = 5.0


class EvaluatorProcessError(RuntimeError):
    """The evaluator's child process died or raised; the message says how."""


class IsolatedEvaluator:
    """``evaluate(plan, fidelity)`` and ``sensitivity_table(...)`` of the spec's proxy evaluator,
    computed in a child process (see the module docstring)."""

    def __init__(self, spec_dict: dict[str, Any], recycle_after: int, threads: int) -> None:
        if recycle_after < 1:
            raise ValueError(f"recycle_after={recycle_after}; allowed: an integer >= 1")
        self.spec_dict = spec_dict
        self.recycle_after = recycle_after
        self.threads = threads
        self.evaluations = 0  # by the current child
        self.children_started = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    def evaluate(self, plan: Plan, fidelity: str = "full") -> QualityResult:
        """Quality of ``plan`` at ``fidelity``, scored in the child."""
        reply = self._request({"op": "evaluate", "plan": plan.to_dict(), "fidelity": fidelity})
        return QualityResult(float(reply["score"]), {k: float(v) for k, v in reply["metrics"].items()},
                             reply["fidelity"])

    def sensitivity_table(self, bits: tuple[int, ...], timestep_groups: int) -> SensitivityTable:
        """The model's sensitivity table (:func:`dlmsearch.evaluators.sensitivity_table`), from the child."""
        reply = self._request({"op": "sensitivity", "bits": list(bits), "timestep_groups": timestep_groups})
        return SensitivityTable.from_json(reply["table"])

    def close(self) -> None:
        """Let the child exit (it is killed if it does not within :data:`EXIT_GRACE_S`)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            try:
                self._process.wait(EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        self.evaluations = 0

    def kill(self) -> None:
        """Stop the child now (its work is abandoned)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.close()

    def __enter__(self) -> IsolatedEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def child_pid(self) -> int | None:
        """The running child's process id (None between children)."""
        return None if self._process is None else int(self._process.pid)

    def _start(self) -> Connection:
        # A fresh interpreter (not fork: the parent's threads and locks; not multiprocessing's spawn: it
        # re-imports the user's __main__ script) talking JSON over a socket pair.
        parent_end, child_end = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")])))
        command = [sys.executable, "-m", "dlmsearch.search.evaluator_child", str(child_end.fileno()), str(os.getpid()),
                   str(self.threads)]
        process = subprocess.Popen(command, pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL, env=env)
        child_end.close()
        conn = Connection(parent_end.detach())
        conn.send_bytes(json.dumps(self.spec_dict).encode())
        self._process, self._conn = process, conn
        self.children_started += 1
        logger.info("evaluator process %d started (recycled every %d evaluations)", process.pid, self.recycle_after)
        return conn

    def _exit_code(self) -> int | None:
        """The exit code of a child whose end of the socket closed (it is exiting: wait for it briefly)."""
        if self._process is None:
            return None
        try:
            return int(self._process.wait(EXIT_GRACE_S))
        except subprocess.TimeoutExpired:
            return None

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        conn = self._conn or self._start()
        try:
            conn.send_bytes(json.dumps(message).encode())
            while not conn.poll(1.0):  # short waits: a signal in the parent is handled within a second
                if self._process is None or self._process.poll() is not None:
                    break
            reply = json.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the child died: its end of the socket closed
            code = self._exit_code()
            self.kill()
            raise EvaluatorProcessError(f"the evaluator process died ({describe_exit(code)}) while running "
                                        f"{message['op']}") from None
        except BaseException:  # interrupt, trial time limit: the child's work is abandoned
            self.kill()
            raise
        if "error" in reply:
            self.kill()  # its state after an exception is unknown: start clean
            raise EvaluatorProcessError(f"{reply['error']}: {reply['message']}")
        self.evaluations += 1
        if self.evaluations >= self.recycle_after:
            self.close()
        return dict(reply["ok"])


def describe_exit(code: int | None) -> str:
    """A child's exit code in words (negative: the signal that killed it)."""
    if code is None:
        return "exit code unknown"
    if code < 0:
        name = signal.Signals(-code).name
        hint = ": killed, e.g. by the out-of-memory killer" if -code == signal.SIGKILL else ""
        return f"signal {name}{hint}"
    return f"exit code {code}"
