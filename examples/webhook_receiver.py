"""A webhook receiver: verify the signature, drop duplicates, answer at once, work afterwards.

    FRAMEBUS_WEBHOOK_SECRET=whsec_... uvicorn examples.webhook_receiver:app --port 9000
"""

import os

from fastapi import BackgroundTasks, FastAPI, Request, Response

from framebus.webhooks import WebhookVerificationError, verify

app = FastAPI()
SECRETS = os.environ["FRAMEBUS_WEBHOOK_SECRET"].split(",")  # two while rotating: old,new
seen: set[str] = set()  # webhook-id is the same on every retry; keep it in your database


def handle(payload) -> None:  # the slow part runs after the answer (download, notify, ...)
    data = payload.data
    if payload.type == "generation.completed":
        print(f"{data.request_id} completed: {data.video.stable_url or data.video.url}", flush=True)
    elif payload.type == "batch.completed":
        print(f"batch {data.batch_id} done: {data.counts}", flush=True)
    else:
        print(f"{data.request_id} {data.outcome}: {data.error or data.reason}", flush=True)


@app.post("/webhooks/framebus")
async def receive(request: Request, background: BackgroundTasks) -> Response:
    body = await request.body()
    try:
        payload = verify(body, request.headers, SECRETS)
    except WebhookVerificationError:
        return Response(status_code=400)
    delivery = request.headers["webhook-id"]
    if delivery not in seen:  # a retry of a delivery already taken: acknowledge, do nothing
        seen.add(delivery)
        background.add_task(handle, payload)
    return Response(status_code=204)
