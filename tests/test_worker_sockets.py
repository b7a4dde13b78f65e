"""Per-worker sockets (cds_service/worker_sockets.py): each worker a free slot, a dead worker's
socket taken over by its replacement, a live one never."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

from cds_service.worker_sockets import ENV, adopt_slot, slot_paths


def _worker() -> SimpleNamespace:
    return SimpleNamespace(sockets=["shared"])


def test_workers_take_distinct_slots_and_keep_the_shared_listener(tmp_path: Path) -> None:
    env = {ENV: f"{tmp_path}:2"}
    first, second, third = _worker(), _worker(), _worker()
    try:
        assert adopt_slot(first, env) == tmp_path / "worker-0.sock"
        assert adopt_slot(second, env) == tmp_path / "worker-1.sock"
        assert adopt_slot(third, env) is None  # more workers than slots: shared socket only
        assert first.sockets[1:] == ["shared"] and third.sockets == ["shared"]
        with socket.socket(socket.AF_UNIX) as client:  # the slot accepts connections
            client.connect(str(tmp_path / "worker-1.sock"))
            accepted, _ = second.sockets[0].accept()
            accepted.close()
    finally:
        for worker in (first, second):
            worker.sockets[0].close()


def test_a_dead_workers_socket_is_taken_over_and_a_live_one_is_not(tmp_path: Path) -> None:
    env = {ENV: f"{tmp_path}:2"}
    dead, live = _worker(), _worker()
    adopt_slot(dead, env)
    adopt_slot(live, env)
    dead.sockets[0].close()  # the worker died; its socket file stays behind
    replacement = _worker()
    try:
        assert adopt_slot(replacement, env) == slot_paths(tmp_path, 2)[0]
    finally:
        replacement.sockets[0].close()
        live.sockets[0].close()


def test_without_the_setting_nothing_changes(tmp_path: Path) -> None:
    worker = _worker()
    assert adopt_slot(worker, {}) is None
    assert worker.sockets == ["shared"]
