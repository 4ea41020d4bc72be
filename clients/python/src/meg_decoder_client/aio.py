"""The asyncio client: the same API as `Client`, with coroutines and an async iterator.

    from meg_decoder_client.aio import AsyncClient
    async with AsyncClient("127.0.0.1:50051") as c:
        async for d in c.subscribe(latest_only=True):
            react(d)
"""
import asyncio
import time

import grpc

from . import _channel
from ._channel import BACKOFF_S, CLOSED, RETRY, after_stream, as_dict, describe, log
from ._fresh import FreshQueue
from ._pb import decoder_pb2 as pb
from ._pb import decoder_pb2_grpc as rpc
from ._types import Decoding, Recording


class AsyncClient:
    """A connection to one meg-decoder for asyncio code; `await close()` or `async with`."""

    def __init__(self, addr="127.0.0.1:50051", token=None, tls_ca=None, *, tls_server_name=None, timeout_s=10.0):
        self._channel = _channel.open_channel(addr, tls_ca, tls_server_name, aio=True)
        self.addr = addr
        self._metadata = _channel.metadata(token)
        self._timeout_s = timeout_s
        self._stub = rpc.DecoderStub(self._channel)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self):
        await self._channel.close()

    async def _call(self, method, request):
        return await method(request, metadata=self._metadata, timeout=self._timeout_s)

    async def status(self):
        return as_dict(await self._call(self._stub.GetStatus, pb.GetStatusRequest()))

    async def start_recording(self, subject, session="", task="", run=0):
        req = pb.StartRecordingRequest(subject=subject, session=session, task=task, run=run)
        return Recording.from_proto(await self._call(self._stub.StartRecording, req))

    async def stop_recording(self):
        return Recording.from_proto(await self._call(self._stub.StopRecording, pb.StopRecordingRequest()))

    async def gallery_image(self, image_id):
        return (await self._call(self._stub.GetGalleryImage, pb.GetGalleryImageRequest(image_id=image_id))).png

    async def load_model(self, model, timeout_s=120.0):
        """Switches the server to another model directory (a name inside its model root)
        without dropping the stream; needs the server's token. Returns a dict: model (the
        new ModelStatus), previous, first_sequence, switched_at."""
        r = await self._stub.LoadModel(pb.LoadModelRequest(model=model), metadata=self._metadata, timeout=timeout_s)
        return as_dict(r)

    def subscribe(self, *, continuous=True, event_locked=True, include_embedding=True, include_images=False,
                  image_size=0, top_k=0, max_rate_hz=0.0, max_age_s=2.0, latest_only=False,
                  reconnect=False, backoff_s=BACKOFF_S):
        """Live decodings as an async iterator of `Decoding` (see `AsyncSubscription`)."""
        req = _channel.subscribe_request(continuous, event_locked, include_embedding, include_images,
                                         image_size, top_k, max_rate_hz, max_age_s, latest_only)
        return AsyncSubscription(self._stub, req, self._metadata, reconnect, backoff_s)


class AsyncSubscription:
    """`Subscription` for asyncio: a task drains the stream, the iterator hands out fresh
    decodings (same rules: max_age_s, latest_only, `missed`, reconnect)."""

    def __init__(self, stub, request, metadata, reconnect, backoff_s):
        self._stub, self._request, self._metadata = stub, request, metadata
        self._reconnect, self._backoff = reconnect, backoff_s
        self._queue = FreshQueue(request.max_age_s, request.latest_only)
        self._arrived = asyncio.Event()
        self._error = None
        self._closed = False
        self._call = None
        self.reconnects = 0
        self.received = 0
        self.last_error = None
        self._task = asyncio.get_running_loop().create_task(self._drain())

    @property
    def dropped(self):
        return self._queue.dropped_total

    async def _drain(self):
        wait = self._backoff[0]
        try:
            while not self._closed:
                error = None
                try:
                    self._call = self._stub.Subscribe(self._request, metadata=self._metadata)
                    async for msg in self._call:
                        self.received += 1
                        self._queue.put(Decoding.from_proto(msg, time.monotonic()))
                        self._arrived.set()
                        wait = self._backoff[0]
                except grpc.RpcError as e:
                    error = e
                if self._closed:
                    return
                step = after_stream(error, self._reconnect)
                if step == CLOSED:
                    self._closed = True
                    return
                if step != RETRY:
                    self._error = error if error is not None else StopAsyncIteration()
                    return
                self.reconnects += 1
                self.last_error = error
                log.warning("meg-decoder subscription: %s; reconnecting in %.1f s", describe(error), wait)
                await asyncio.sleep(wait)
                wait = min(2 * wait, self._backoff[1])
        except asyncio.CancelledError:
            # close(), or the client's channel closed under us: the subscription ends.
            self._closed = True
        except Exception as e:  # e.g. subscribing on a closed client: never hang the reader
            self._error = e
        finally:
            self._arrived.set()

    def __aiter__(self):
        return self

    async def __anext__(self):
        d = await self.get()
        if d is None:
            raise StopAsyncIteration
        return d

    async def get(self, timeout_s=None):
        """The next fresh decoding; None after close() or when timeout_s passes."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            d = self._queue.pop()
            if d is not None:
                return d
            if self._closed or (self._task.done() and self._error is None):
                return None
            if self._error is not None:
                if isinstance(self._error, StopAsyncIteration):
                    return None
                raise self._error
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), 0.1 if left is None else min(left, 0.1))
            except asyncio.TimeoutError:
                pass

    async def close(self):
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
