"""The blocking client: `Client(addr, token=None, tls_ca=None)` with `subscribe()`,
`status()`, `start_recording()`, `stop_recording()` and `gallery_image()`.

    from meg_decoder_client import Client
    with Client("127.0.0.1:50051") as c:
        for d in c.subscribe(event_locked=True, continuous=False):
            print(d.marker, d.top1, d.age_ms)
"""
import threading
import time

import grpc

from . import _channel
from ._channel import BACKOFF_S, CLOSED, RETRY, after_stream, as_dict, describe, log
from ._fresh import FreshQueue
from ._pb import decoder_pb2 as pb
from ._pb import decoder_pb2_grpc as rpc
from ._types import Decoding, Recording


class Client:
    """A connection to one meg-decoder. Thread-safe; close it (or use `with`) when done."""

    def __init__(self, addr="127.0.0.1:50051", token=None, tls_ca=None, *, tls_server_name=None, timeout_s=10.0):
        self._channel = _channel.open_channel(addr, tls_ca, tls_server_name)
        self.addr = addr
        self._metadata = _channel.metadata(token)
        self._timeout_s = timeout_s
        self._stub = rpc.DecoderStub(self._channel)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._channel.close()

    def _call(self, method, request):
        return method(request, metadata=self._metadata, timeout=self._timeout_s)

    def status(self):
        """The service's status as a dict (streams, model, pipeline, subscribers, recording,
        version, error), field names as in the proto."""
        return as_dict(self._call(self._stub.GetStatus, pb.GetStatusRequest()))

    def start_recording(self, subject, session="", task="", run=0):
        """Starts recording the session to XDF (BIDS labels: letters and digits)."""
        req = pb.StartRecordingRequest(subject=subject, session=session, task=task, run=run)
        return Recording.from_proto(self._call(self._stub.StartRecording, req))

    def stop_recording(self):
        return Recording.from_proto(self._call(self._stub.StopRecording, pb.StopRecordingRequest()))

    def gallery_image(self, image_id):
        """One gallery image's PNG bytes, by id (as in Hit.image_id)."""
        return self._call(self._stub.GetGalleryImage, pb.GetGalleryImageRequest(image_id=image_id)).png

    def load_model(self, model, timeout_s=120.0):
        """Switches the server to another model directory (a name inside its model root)
        without dropping the stream; needs the server's token. Returns a dict: model (the
        new ModelStatus), previous, first_sequence, switched_at."""
        return as_dict(self._stub.LoadModel(pb.LoadModelRequest(model=model), metadata=self._metadata, timeout=timeout_s))

    def subscribe(self, *, continuous=True, event_locked=True, include_embedding=True, include_images=False,
                  image_size=0, top_k=0, max_rate_hz=0.0, max_age_s=2.0, latest_only=False,
                  reconnect=False, backoff_s=BACKOFF_S):
        """Live decodings as an iterator of `Decoding` (see `Subscription`)."""
        req = _channel.subscribe_request(continuous, event_locked, include_embedding, include_images,
                                         image_size, top_k, max_rate_hz, max_age_s, latest_only)
        return Subscription(self._stub, req, self._metadata, reconnect, backoff_s)


class Subscription:
    """Iterates over fresh decodings. A background thread drains the gRPC stream as fast
    as it arrives; the iterator hands out only decodings younger than max_age_s (and with
    latest_only only the newest), adding what it dropped to the next one's `missed`.

    The stream's end raises the grpc.RpcError that ended it (UNAVAILABLE when the server
    shuts down), unless reconnect=True: then it resubscribes with back-off, counting in
    `reconnects` (with the reason in `last_error`, and a logged warning each time).
    `missed` counts within one connection: what was lost while disconnected is not
    counted (and a restarted server starts its sequence numbers again).

    A subscription runs until `close()`, the end of its `with` block, or its client's
    close(): one left open keeps its stream and thread alive."""

    def __init__(self, stub, request, metadata, reconnect, backoff_s):
        self._stub, self._request, self._metadata = stub, request, metadata
        self._reconnect, self._backoff = reconnect, backoff_s
        self._queue = FreshQueue(request.max_age_s, request.latest_only)
        self._cond = threading.Condition()
        self._error = None
        self._closed = False
        self._call = None
        self.reconnects = 0
        self.received = 0
        self.last_error = None  # why the last reconnect was needed
        self._thread = threading.Thread(target=self._drain, name="meg-decoder-subscription", daemon=True)
        self._thread.start()

    @property
    def dropped(self):
        """Decodings this client dropped as too old (not counting the server's)."""
        with self._cond:
            return self._queue.dropped_total

    def _drain(self):
        wait = self._backoff[0]
        while True:
            error = None
            try:
                with self._cond:
                    if self._closed:
                        return
                    self._call = self._stub.Subscribe(self._request, metadata=self._metadata)
                for msg in self._call:
                    d = Decoding.from_proto(msg, time.monotonic())
                    with self._cond:
                        self.received += 1
                        self._queue.put(d)
                        self._cond.notify_all()
                    wait = self._backoff[0]
            except grpc.RpcError as e:
                error = e
            except Exception as e:  # the channel was closed, or a bug: never hang the reader
                error = e
            with self._cond:
                if self._closed:
                    return
                step = after_stream(error, self._reconnect)
                if step != RETRY:
                    if step == CLOSED:  # the client was closed under us, as close() would
                        self._closed = True
                    else:
                        self._error = error if error is not None else StopIteration()
                    self._cond.notify_all()
                    return
                self.reconnects += 1
                self.last_error = error
            log.warning("meg-decoder subscription: %s; reconnecting in %.1f s", describe(error), wait)
            time.sleep(wait)
            wait = min(2 * wait, self._backoff[1])

    def __iter__(self):
        return self

    def __next__(self):
        d = self.get()
        if d is None:
            raise StopIteration
        return d

    def get(self, timeout_s=None):
        """The next fresh decoding; None after close() or when timeout_s passes."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                d = self._queue.pop()
                if d is not None:
                    return d
                if self._closed:
                    return None
                if self._error is not None:
                    if isinstance(self._error, StopIteration):
                        return None
                    raise self._error
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                # Wake at least every 100 ms: a queued decoding can age past the bound.
                self._cond.wait(0.1 if left is None else min(left, 0.1))

    def close(self):
        with self._cond:
            self._closed = True
            if self._call is not None:
                self._call.cancel()
            self._cond.notify_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
