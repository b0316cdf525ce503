"""The floor for the serving benchmark: a minimal FastAPI app that answers a top-10 from a random
1,682 x 64 embedding matrix and does nothing else (no database, no middleware, no validation).

    uvicorn bench.floor_app:app --workers 2 --port 8001
"""

from __future__ import annotations

import zlib

import torch
from fastapi import FastAPI

torch.set_num_threads(1)
_gen = torch.Generator().manual_seed(0)
ITEMS = torch.randn(1682, 64, generator=_gen)  # [I, D]
USERS = torch.randn(943, 64, generator=_gen)  # [U, D]

app = FastAPI()


def top10(user_id: str) -> dict:
    user = USERS[zlib.crc32(user_id.encode()) % len(USERS)]  # [D]
    values, idx = torch.topk(ITEMS @ user, 10)  # [10]
    items = [{"item_id": str(i), "score": v} for i, v in zip(idx.tolist(), values.tolist(), strict=True)]
    return {"user_id": user_id, "items": items}


@app.get("/v1/users/{user_id}/recommendations")
def recommend(user_id: str) -> dict:
    """Sync like the service's routes, so torch runs in the threadpool too: the floor the ratio uses."""
    return top10(user_id)


@app.get("/async/users/{user_id}/recommendations")
async def recommend_on_loop(user_id: str) -> dict:
    """The same on the event loop (no threadpool hop), reported for reference."""
    return top10(user_id)
