"""Run slots shared by every language of an executor, handed out in rotation."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque


class FairSlots:
    """A counting semaphore that serves waiting languages in rotation."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    async def acquire(self, language: str) -> None:
        if self.used < self.capacity and not self._waiting:
            self.used += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(language, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()
            else:
                queue = self._waiting.get(language)
                if queue is not None and future in queue:
                    queue.remove(future)
                    if not queue:
                        del self._waiting[language]
            raise

    def release(self) -> None:
        while self._waiting:
            language, queue = next(iter(self._waiting.items()))
            future = queue.popleft()
            # Rotate: the language just served goes to the back of the line.
            del self._waiting[language]
            if queue:
                self._waiting[language] = queue
            if not future.done():
                future.set_result(None)
                return
        self.used -= 1
