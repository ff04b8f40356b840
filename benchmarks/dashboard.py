"""The dashboard's list of 200 running workstations against the API's list of the same 200.

Prints the median time of ``GET /ui/`` (the whole page, with each row's
uptime and cost this month) and of ``GET /v1/workstations?limit=200``, taking
turns in one run through the WSGI app in-process on the fake driver, and
their ratio (target: under 3x).

    python benchmarks/dashboard.py [--workstations 200] [--rounds 30]
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

from medians import medians_side_by_side

from cwhost.accounts import tokens as auth
from cwhost.app import create_app
from cwhost.config.server import build_config
from cwhost.db.database import Database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workstations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cwhost-bench-dashboard-", dir="/var/tmp"))
    many = args.workstations * 2
    config = build_config(
        {
            "data_dir": str(work / "data"),
            "limits": {"max_workstations": many, "max_running_cpu_cores": many, "max_running_memory_gb": many},
            "access": {"ssh_port_first": 40000, "ssh_port_last": 40000 + many},
            "driver": {
                "name": "fake",
                "fake": {"cpu_cores": many, "memory_gb": many, "storage_gb": many * 2, "guest_cpu_share": 0.0},
            },
        }
    )
    Database(config.database_path).migrate()
    app = create_app(config)
    client = app.test_client()
    token = auth.create_key(app.extensions["cwhost"].db, "bench").token
    headers = {"Authorization": "Bearer " + token}
    body = {"configuration": {"cpuCores": 1, "memoryGB": 1, "storageGB": 1}}
    ids = [
        client.post("/v1/workstations", json={"name": f"w{i}", **body}, headers=headers).get_json()["id"]
        for i in range(args.workstations)
    ]
    app.extensions["cwhost"].services.background.wait_idle()
    try:
        for workstation_id in ids:
            assert client.post(f"/v1/workstations/{workstation_id}/launch", headers=headers).status_code == 200
        assert client.post("/ui/login", data={"token": token}).status_code == 302
        listed = f"/v1/workstations?limit={args.workstations}"
        both = {"api": lambda: client.get(listed, headers=headers), "page": lambda: client.get("/ui/")}
        medians_side_by_side(both, 3)  # warm: templates compiled, rows rendered once
        medians = medians_side_by_side(both, args.rounds)
        api, page = medians["api"], medians["page"]
        rows = len(re.findall(r"<tr data-id=", client.get("/ui/").get_data(as_text=True)))
        print(f"API list of {args.workstations} running: median {api:.2f} ms")
        print(f"dashboard list page ({rows} rows, uptime and cost this month): median {page:.2f} ms")
        print(f"ratio: {page / api:.2f}x (target under 3x)")
    finally:
        for workstation_id in ids:
            client.post(f"/v1/workstations/{workstation_id}/stop", headers=headers, query_string={"force": "true"})
        app.extensions["cwhost"].services.background.wait_idle()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
