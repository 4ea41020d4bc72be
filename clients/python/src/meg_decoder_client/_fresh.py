"""The freshness rule shared by the blocking and asyncio subscriptions.

HTTP/2 flow control cannot bound how much a slow reader holds: gRPC clients grow their
receive window (BDP probing), so a script that reads one message per second can sit on
minutes of decodings without the server noticing. The subscription therefore drains the
stream on its own as fast as it arrives, into a queue that hands the caller only
decodings younger than max_age_s (window end to hand-over), and with latest_only only
the newest. Everything it drops is added to the next decoding's `missed`, on top of what
the server dropped, so `missed` accounts for every decoding the caller did not get.
"""
import collections
import time

# Bound on decodings held between reads (with latest_only: 1). At a 20 Hz hop this is
# minutes of decodings; older ones are dropped and counted first.
MAX_QUEUE = 4096


class FreshQueue:
    """Not thread-safe: the caller holds its own lock."""

    def __init__(self, max_age_s, latest_only):
        self.max_age_ms = 1000.0 * max_age_s
        self.latest_only = latest_only
        self.items = collections.deque()
        self.dropped = 0  # dropped here since the last hand-over
        self.dropped_total = 0
        # The newest generated image on a dropped decoding: the server sends each image
        # once, so it rides on the next decoding handed over.
        self.image = None

    def _age(self, d, now):
        return d.age_ms + 1000.0 * (now - d.received_at)

    def put(self, d, now=None):
        now = time.monotonic() if now is None else now
        self.items.append(d)
        limit = 1 if self.latest_only else MAX_QUEUE
        while len(self.items) > limit:
            self._drop(self.items.popleft())
        # Memory follows max_age_s too, not only the reads.
        while len(self.items) > 1 and self._age(self.items[0], now) > self.max_age_ms:
            self._drop(self.items.popleft())

    def _drop(self, d):
        # What the server had already dropped before it counts too.
        self.dropped += 1 + d.missed
        self.dropped_total += 1
        if d.image_png is not None:
            self.image = (d.image_png, d.image_sequence)

    def pop(self, now=None):
        """The oldest decoding still young enough (its age and missed updated), or None."""
        now = time.monotonic() if now is None else now
        while self.items:
            d = self.items.popleft()
            age = self._age(d, now)
            if age > self.max_age_ms:
                self._drop(d)
                continue
            d.age_ms = age
            d.missed += self.dropped
            self.dropped = 0
            if d.image_png is None and self.image is not None:
                d.image_png, d.image_sequence = self.image
            self.image = None
            return d
        return None
