"""The child side of :class:`~dlmsearch.search.isolation.IsolatedEvaluator`.

Run as ``python -m dlmsearch.search.evaluator_child FD PARENT_PID THREADS``: reads the study spec
(JSON) from the socket ``FD``, builds the proxy evaluator, then answers JSON requests until the
socket closes. Errors go back to the parent as ``{"error", "message"}``; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from dlmsearch.plan import Plan


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel kills this process when its parent dies (no orphan keeps computing)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def serve(conn: Connection, threads: int, parent_pid: int) -> None:
    """Child process main: build the evaluator, then answer requests until the pipe closes."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    import torch

    from dlmsearch.evaluators import sensitivity_table
    from dlmsearch.search.context import build_evaluator
    from dlmsearch.search.spec import spec_from_dict

    torch.set_num_threads(threads)
    try:
        spec = spec_from_dict(json.loads(conn.recv_bytes()))
    except (EOFError, OSError):
        return
    try:
        evaluator = build_evaluator(spec)
    except Exception as exc:  # e.g. the model folder went missing: the first request gets the error
        _reply_error_once(conn, exc)
        return
    while True:
        try:
            message = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            if message["op"] == "evaluate":
                result = evaluator.evaluate(Plan.from_dict(message["plan"]), message["fidelity"])
                reply: dict[str, Any] = {"ok": {"score": result.score, "metrics": result.metrics,
                                                "fidelity": result.fidelity}}
            else:
                table = sensitivity_table(evaluator, bits=tuple(message["bits"]),
                                          timestep_groups=int(message["timestep_groups"]))
                reply = {"ok": {"table": table.to_json()}}
        except Exception as exc:  # reported to the parent, which fails the trial
            reply = {"error": type(exc).__name__, "message": str(exc)}
        conn.send_bytes(json.dumps(reply).encode())


def _reply_error_once(conn: Connection, exc: Exception) -> None:
    try:
        conn.recv_bytes()
        conn.send_bytes(json.dumps({"error": type(exc).__name__, "message": f"building the evaluator: {exc}"}).encode())
    except (EOFError, OSError):
        pass


def main(argv: list[str]) -> None:
    """Entry point: ``FD PARENT_PID THREADS``."""
    fd, parent_pid, threads = (int(a) for a in argv)
    serve(Connection(fd), threads, parent_pid)


if __name__ == "__main__":
    main(sys.argv[1:])
