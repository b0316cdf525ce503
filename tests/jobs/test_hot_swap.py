"""Hot swap through the API: requests running concurrently through repeated swaps, counting errors."""

from __future__ import annotations

import threading
from collections import Counter

from tests.jobs.support import run_job, seed_database, wait_for

CLIENTS = 4
SWAPS = 6


def test_requests_through_swaps_never_fail(client, settings, session) -> None:
    seed_database(session)
    v1 = run_job(settings, session)["mf"]["version"]
    v2 = run_job(settings, session, promote="never")["mf"]["version"]
    poller = client.app.state.version_poller
    registry = client.app.state.registry
    poller.check()
    client.app.state.catalogue.refresh()  # holds the seeded items now, not at its next interval
    held = registry.models  # what a request that started now holds, to its end
    held_model = held["mf"].model
    assert held["mf"].version == v1

    stop = threading.Event()
    lock = threading.Lock()
    seen: Counter[str] = Counter()
    errors: list[str] = []

    def hammer(n: int) -> None:
        while not stop.is_set():
            r = client.get(f"/v1/users/u{n}/recommendations", params={"model": "mf", "n": 5})
            with lock:
                if r.status_code != 200 or r.json()["model"] != "mf" or len(r.json()["items"]) != 5:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                else:
                    seen[r.json()["version"]] += 1

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        for i in range(SWAPS):
            target = (v2, v1)[i % 2]
            with lock:
                before = seen[target]
            assert client.post(f"/v1/models/mf/versions/{target}/activate").status_code == 200  # nudges the poller
            wait_for(lambda t=target: registry.models["mf"].version == t, what=f"swap to {target}")
            with lock:
                marker = seen[target]
            wait_for(lambda t=target, m=max(marker, before): seen[t] > m + CLIENTS, what=f"requests on {target}")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert seen[v1] > 0 and seen[v2] > 0
    assert held is not registry.models and held["mf"].version == v1 and held["mf"].model is held_model
    assert poller.swaps >= SWAPS
