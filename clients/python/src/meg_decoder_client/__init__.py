"""meg-decoder's Python client: live decodings over gRPC, and recorded sessions in MNE.

    from meg_decoder_client import Client
    with Client("127.0.0.1:50051") as c:
        for d in c.subscribe(max_age_s=0.5):
            print(d.sequence, d.mode, d.marker, d.top1, d.embedding.shape)

`AsyncClient` (meg_decoder_client.aio) is the asyncio variant, `to_dataframe()` collects
decodings into pandas, and `read_session(path)` opens a recording as an `mne.io.Raw`
(extras: pip install 'meg-decoder-client[mne]').
"""
from ._types import CONTINUOUS, EVENT_LOCKED, Decoding, Hit, Recording
from .aio import AsyncClient, AsyncSubscription
from .client import Client, Subscription
from .frame import to_dataframe

__version__ = "0.1.0"


def read_session(path, decodings="all"):
    """Opens a meg-decoder XDF recording: see meg_decoder_client.session.read_session."""
    from .session import read_session as _read

    return _read(path, decodings=decodings)


__all__ = ["Client", "Subscription", "AsyncClient", "AsyncSubscription", "Decoding", "Hit", "Recording",
           "to_dataframe", "read_session", "CONTINUOUS", "EVENT_LOCKED"]
