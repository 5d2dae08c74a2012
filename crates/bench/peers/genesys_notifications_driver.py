"""Drives PyPI genesys-notifications 1.3 the way its README shows: a Channel on a
connectUri made beforehand, subscribed to the topics over the socket, read as an async
iterator; every notification is printed as one JSON line (line-buffered, as a consumer
that must not sit on events has to).

genesys-notifications 1.3 hands a bare coroutine to asyncio.wait(), which Python 3.11
refuses. The shim below restores what Python 3.10's asyncio.wait did itself (wrap each
awaitable in a task), so the library runs unchanged.
"""

import asyncio
import logging
import sys

import ujson
from genesys_notifications import Channel

_wait = asyncio.wait


async def _wait_wrapping_coroutines(fs, **kwargs):
    return await _wait({asyncio.ensure_future(f) for f in fs}, **kwargs)


asyncio.wait = _wait_wrapping_coroutines


async def main(uri, topics_file):
    with open(topics_file) as f:
        topics = [line.strip() for line in f if line.strip()]
    logger = logging.getLogger("channel")
    logger.setLevel(logging.WARNING)
    channel = Channel(uri, topics, logger=logger)
    await channel
    out = sys.stdout
    out.reconfigure(line_buffering=True)
    async for notification in channel:
        out.write(ujson.dumps(notification))
        out.write("\n")


asyncio.run(main(sys.argv[1], sys.argv[2]))
