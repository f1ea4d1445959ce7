"""Submit one generation over HTTP, show its progress, wait for it and save the MP4.

    FRAMEBUS_GATEWAY_URL=http://127.0.0.1:8000 FRAMEBUS_API_KEY=fb_... \
        python examples/submit_http.py "a red circle moving left on a white background" clip.mp4
"""

import os
import sys

from framebus.client import FramebusClient

prompt, out = sys.argv[1], sys.argv[2]
with FramebusClient(base_url=os.environ["FRAMEBUS_GATEWAY_URL"], api_key=os.environ["FRAMEBUS_API_KEY"]) as client:
    handle = client.submit({"prompt": prompt, "tier": "interactive"})
    print(f"submitted {handle.request_id} ({handle.tokens} tokens)")
    for item in handle.events(timeout=600):  # status changes and progress lines, then the end
        if item.kind == "progress":
            step = f" {item.data.step}/{item.data.steps}" if item.data.steps else ""
            print(f"  {item.data.stage}{step}")
        else:
            print(f"  {item.data.state.value}")
    result = handle.status()
    if result.state.value != "completed":
        sys.exit(f"{result.state.value}: {result.error.message if result.error else ''}")
    client.download(result, out)  # through the stable link: works long after the presigned one died
    print(f"saved {out} ({result.output.bytes} bytes); link: {result.video_url}")
