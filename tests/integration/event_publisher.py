"""A second server process for the cross-process event tests (run with `python -m`).

    python -m tests.integration.event_publisher DATABASE_URL SESSION_ID COUNT

It stores COUNT messages in the session and publishes each after storing it, publishes one
"delta" event, queues a prompt and wakes the workers of every process, then exits 0.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from decimal import Decimal

from pocketcode.db.engine import Database, create_db_engine
from pocketcode.domain.states import MessageType
from pocketcode.services.events import Event, EventBus, message_event
from pocketcode.services.jobs import JobService
from pocketcode.services.messages import MessageService, NewMessage


async def publish(url: str, session_id: uuid.UUID, count: int) -> None:
    db = Database(create_db_engine(url, pool_size=2))
    bus = EventBus(db)
    await bus.start()
    try:
        messages = MessageService(db)
        for index in range(count):
            row = await asyncio.to_thread(
                messages.append,
                session_id,
                NewMessage(
                    MessageType.ASSISTANT,
                    f"message {index}",
                    subtype="text",
                    raw={"index": index, "text": "é" * 10},
                    provider_message_id=f"msg_{index}",
                    model="claude-sonnet-4-5",
                    input_tokens=index,
                    output_tokens=1,
                    cost_usd=Decimal("0.0001"),
                ),
            )
            await bus.publish(message_event(row))
        await bus.publish(Event(session_id, "delta", None, {"text": "typing…"}))
        await asyncio.to_thread(JobService(db).enqueue, session_id, "from the other process")
        await bus.notify_jobs()
    finally:
        await bus.stop()
        db.dispose()


if __name__ == "__main__":
    asyncio.run(publish(sys.argv[1], uuid.UUID(sys.argv[2]), int(sys.argv[3])))
