"""Plain Python objects for what the service sends: decodings (embedding as a NumPy
array), gallery hits and recording states, converted from the protobuf messages."""
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ._pb import decoder_pb2 as pb

CONTINUOUS = "continuous"
EVENT_LOCKED = "event_locked"
_MODES = {pb.MODE_CONTINUOUS: CONTINUOUS, pb.MODE_EVENT_LOCKED: EVENT_LOCKED}


@dataclass(frozen=True)
class Hit:
    """One gallery image retrieved for an embedding."""

    image_id: str
    score: float


@dataclass
class Decoding:
    """What the decoder made of one window of MEG. Times are seconds on the decoder
    machine's LSL clock (pylsl.local_clock() there)."""

    sequence: int
    mode: str  # "continuous" or "event_locked"
    marker: Optional[str]  # the stimulus marker's text; None for continuous decodings
    marker_time: Optional[float]
    window_start: float
    window_end: float
    decoded_at: float
    latency_ms: float  # decoded_at - window_end: the decoder's own delay
    encoder_ms: float
    embedding: np.ndarray  # float32; empty unless subscribed with include_embedding
    top_k: List[Hit]
    image_png: Optional[bytes]  # a generated image, when one was ready and asked for
    image_sequence: int
    # Decodings lost just before this one: by the server (this subscriber was behind)
    # plus those this client dropped because they were older than max_age_s.
    missed: int
    repaired: bool  # a NaN/Inf sample inside the window was repaired
    # Age when handed to the caller: window_end to now, in ms (the server's age at send
    # plus the time it waited in this client).
    age_ms: float
    model: str = ""  # "name@sha256-prefix" of the model that made it
    received_at: float = field(default=0.0, repr=False)  # time.monotonic() on arrival
    # The instant the model takes as the image onset: the marker's for event-locked
    # decodings; for continuous ones, where an onset would sit for this window (window_end
    # - 1.0 s for -0.5..1.0 s windows): "had an image appeared then". Last, so positional
    # construction from earlier versions keeps its meaning.
    onset: float = 0.0
    # Progressive decoding: this event-locked decoding's stage (1..stages; the model's own
    # window is the last) and the number of stages; a later stage of the same marker
    # replaces the earlier guess. Continuous decodings: 0 and 0.
    stage: int = 0
    stages: int = 0
    # Continuous decodings by the model's encoder for continuous use (trained with the
    # image on screen as the target): the instant (LSL clock) whose on-screen image this
    # stands for (models/demo: 0.5 s before window_end); their onset is 0. None otherwise.
    on_screen_at: Optional[float] = None

    @property
    def final(self) -> bool:
        """Whether this event-locked decoding is the last word on its onset (the model's
        own window; a server without stages sends 0 of 0). False for continuous ones. A
        later stage may never come (e.g. a gap ends its window): do not wait for it."""
        return self.mode == "event_locked" and self.stage == self.stages

    @property
    def top1(self) -> Optional[str]:
        return self.top_k[0].image_id if self.top_k else None

    @classmethod
    def from_proto(cls, d, received_at=0.0):
        event = d.mode == pb.MODE_EVENT_LOCKED
        return cls(
            sequence=d.sequence,
            mode=_MODES.get(d.mode, "unspecified"),
            marker=d.marker if event else None,
            marker_time=d.marker_time if event else None,
            window_start=d.window_start,
            window_end=d.window_end,
            decoded_at=d.decoded_at,
            latency_ms=d.latency_ms,
            encoder_ms=d.encoder_ms,
            embedding=np.asarray(d.embedding, dtype=np.float32),
            top_k=[Hit(h.image_id, h.score) for h in d.top_k],
            image_png=bytes(d.image_png) if d.image_png else None,
            image_sequence=d.image_sequence,
            missed=d.missed,
            repaired=d.repaired,
            age_ms=d.age_ms,
            model=d.model,
            onset=d.onset,
            stage=d.stage,
            stages=d.stages,
            on_screen_at=d.on_screen_at or None,
            received_at=received_at,
        )


@dataclass(frozen=True)
class Recording:
    """The session recording's state (as StartRecording/StopRecording return it)."""

    recording: bool
    path: str
    bytes_written: int
    error: str
    started_at: float

    @classmethod
    def from_proto(cls, r):
        return cls(r.recording, r.path, r.bytes_written, r.error, r.started_at)
