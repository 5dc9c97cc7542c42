"""Run one copy in its own process, as the CLI will: ``python copy_runner.py CONFIG.json`` prints the report.

The config names the two registries (base URL, CA file, user), the ``--resolve`` entries and the jobs;
the tokens come from SOURCE_TOKEN and TARGET_TOKEN, never from the file. Used by the SIGKILL test.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from wizard import netclient
from wizard.credentials import Secret
from wizard.images import CopyJob, CopyOptions, Credentials, Registry, copy
from wizard.images.client import BULK_READ


async def main(cfg: dict) -> dict:
    def side(name: str, env: str):
        http = netclient.async_client(cfg["resolve"], ca_file=cfg[name]["ca_file"], timeout=60)
        bulk = netclient.client(cfg["resolve"], ca_file=cfg[name]["ca_file"], timeout=60, read_size=BULK_READ)
        return http, Registry(cfg[name]["url"], http, bulk=bulk, credentials=Credentials(cfg[name]["user"],
                                                                                         Secret(os.environ[env])))
    sh, src = side("source", "SOURCE_TOKEN")
    th, dst = side("target", "TARGET_TOKEN")
    try:
        jobs = [CopyJob(j["source"], j["target"], tags=tuple(j.get("tags", ())),
                        mount_from=tuple(j.get("mount_from", ()))) for j in cfg["jobs"]]
        report = await copy(src, dst, jobs, CopyOptions(**cfg.get("options", {})))
        return report.to_dict()
    finally:
        await sh.aclose()
        await th.aclose()


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(json.dumps(asyncio.run(main(json.load(f)))))
