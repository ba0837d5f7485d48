"""A minimal LiveKit agent whose job teardown is bounded by hardexit.

Needs a LiveKit server (LiveKit Cloud, or ``livekit-server --dev``) and
``pip install 'hardexit[livekit]'``.  Then, with LIVEKIT_URL,
LIVEKIT_API_KEY and LIVEKIT_API_SECRET set::

    python -m livekit.agents start examples/livekit_agent.py

or ``lk agent dev``, or livekit's older built-in CLI, deprecated in 1.8::

    python examples/livekit_agent.py dev

``AgentServer`` is the API of livekit-agents 1.3 and later; on 1.0 to 1.2,
drop ``server`` and the decorator and run
``cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint))``.  ``install(ctx)``
is the same on every release.

Each job runs in its own child process.  ``install(ctx)`` at the top of the
entrypoint makes that child exit within 10 s of its shutdown beginning,
whichever way it begins (the room closes, the worker drains, the job calls
``ctx.shutdown()``), even if a shutdown callback or ``on_session_end`` never
returns, and within 10 s of the worker dying.
"""

from __future__ import annotations

import asyncio
import logging

from livekit import rtc
from livekit.agents import AgentServer, JobContext, cli

from hardexit.livekit import install

logger = logging.getLogger("livekit-agent-example")

server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    install(ctx)  # first: from here on, this job's teardown is bounded (10 s by default)

    joined: list[str] = []

    async def save_attendance(reason: str) -> None:
        # Stands in for real teardown work: flushing a transcript, closing a client.
        # If it hangs, the job child still exits 10 s after the shutdown began.
        logger.info("job ending (%s); participants seen: %s", reason, joined)
        await asyncio.sleep(0.1)

    ctx.add_shutdown_callback(save_attendance)

    @ctx.room.on("participant_connected")
    def on_participant(participant: rtc.RemoteParticipant) -> None:
        joined.append(participant.identity)
        logger.info("%s joined %s", participant.identity, ctx.room.name)

    await ctx.connect()
    logger.info("connected to %s", ctx.room.name)
    # Returning leaves the job running until the room closes.


if __name__ == "__main__":
    cli.run_app(server)
