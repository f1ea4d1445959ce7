"""Fan out N generations at once over HTTP with AsyncFramebusClient, with a progress bar.

    FRAMEBUS_GATEWAY_URL=http://127.0.0.1:8000 FRAMEBUS_API_KEY=fb_... python examples/async_fan_out.py 50
"""

import asyncio
import os
import sys
from collections import Counter

from rich.progress import Progress

from framebus.client import AsyncFramebusClient

COLOURS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle"]


async def main(count: int) -> Counter:
    async with AsyncFramebusClient(base_url=os.environ["FRAMEBUS_GATEWAY_URL"],
                                   api_key=os.environ["FRAMEBUS_API_KEY"]) as client:
        prompts = [f"a {COLOURS[i % 4]} {SHAPES[i % 3]} moving left on a white background" for i in range(count)]
        handles = await asyncio.gather(*(client.submit({"prompt": p, "seed": i}) for i, p in enumerate(prompts)))
        outcomes: Counter = Counter()
        with Progress() as bar:
            task = bar.add_task("generating", total=count)

            async def one(handle) -> None:
                result = await handle.wait(timeout=900)
                outcomes[result.state.value] += 1
                bar.advance(task)

            await asyncio.gather(*(one(handle) for handle in handles))
        return outcomes


outcomes = asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
print(", ".join(f"{count} {state}" for state, count in sorted(outcomes.items())))
sys.exit(0 if set(outcomes) == {"completed"} else 1)
