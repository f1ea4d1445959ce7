"""Send a file of prompts (one per line) as one bulk job, then wait for its manifest.

    FRAMEBUS_GATEWAY_URL=http://127.0.0.1:8000 FRAMEBUS_API_KEY=fb_... python examples/bulk_overnight.py prompts.txt

Bulk jobs run on the batch tier: they fill the workers' idle time within the completion
window (a day by default) and cost the least. The manifest lists every line's video link.
"""

import json
import os
import sys
import time

import httpx

gateway = httpx.Client(base_url=os.environ["FRAMEBUS_GATEWAY_URL"], timeout=60,
                       headers={"Authorization": f"Bearer {os.environ['FRAMEBUS_API_KEY']}"})
prompts = [line.strip() for line in open(sys.argv[1]) if line.strip()]
lines = "".join(json.dumps({"custom_id": f"line-{n}", "prompt": p}) + "\n" for n, p in enumerate(prompts, 1))
created = gateway.post("/v1/batches", content=lines.encode()).raise_for_status().json()
print(f"batch {created['batch_id']}: {created['accepted']} accepted, {len(created['rejected'])} rejected")

while (batch := gateway.get(f"/v1/batches/{created['batch_id']}").raise_for_status().json())["state"] == "running":
    print("  " + ", ".join(f"{n} {state}" for state, n in batch["counts"].items() if n), flush=True)
    time.sleep(float(os.environ.get("POLL_S", "30")))
print(f"{batch['state']}: manifest {batch['manifest_url']}")
manifest = httpx.get(batch["manifest_url"], timeout=60).raise_for_status().text.splitlines()
print(f"{sum(json.loads(line)['outcome'] == 'completed' for line in manifest)} of {len(manifest)} completed")
