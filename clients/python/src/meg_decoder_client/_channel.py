"""What the blocking and asyncio clients share: addresses, TLS and the bearer token
(taken exactly as the server takes them), request checks, and what a subscription does
when its stream ends."""
import logging

import grpc
import grpc.aio
from google.protobuf import json_format

from ._pb import decoder_pb2 as pb


def parse_addr(addr, tls_ca):
    """'host:port', 'http://host:port' (plain text) or 'https://host:port' (TLS; with the
    system's roots unless tls_ca names a CA file). Returns (target, use_tls)."""
    if addr.startswith("https://"):
        return addr[len("https://"):].rstrip("/"), True
    if addr.startswith("http://"):
        if tls_ca:
            raise ValueError(f"{addr}: tls_ca given for a plain-text http:// address; use https://")
        return addr[len("http://"):].rstrip("/"), False
    if "://" in addr:
        raise ValueError(f"{addr!r}: use host:port, http://host:port or https://host:port")
    return addr, bool(tls_ca)


log = logging.getLogger("meg_decoder_client")

# Reconnect back-off: first wait, doubling up to the last.
BACKOFF_S = (0.5, 10.0)
# Codes worth reconnecting on (the server going away and coming back).
RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def open_channel(addr, tls_ca, tls_server_name, aio=False):
    """A gRPC channel (grpc or grpc.aio) to `addr` (see parse_addr)."""
    target, tls = parse_addr(addr, tls_ca)
    opts = options(tls_server_name)
    mod = grpc.aio if aio else grpc
    if tls:
        return mod.secure_channel(target, credentials(tls_ca), options=opts)
    return mod.insecure_channel(target, options=opts)


def as_dict(message):
    """A response message as a dict, field names as in the proto, defaults included."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def describe(error):
    if isinstance(error, grpc.RpcError):
        return f"{error.code().name}: {error.details()}"
    return "the stream ended" if error is None else str(error)


# What a subscription does when its stream ends.
CLOSED, RAISE, RETRY = "closed", "raise", "retry"


def after_stream(error, reconnect):
    """CLOSED (the client was closed under it), RAISE (hand `error` to the reader, or end
    when the stream just ended) or RETRY (reconnect with back-off)."""
    code = error.code() if isinstance(error, grpc.RpcError) else None
    if code == grpc.StatusCode.CANCELLED:
        return CLOSED
    if error is not None and code is None:  # not a gRPC status, e.g. a closed channel
        return RAISE
    if reconnect and (error is None or code in RETRY_CODES):
        return RETRY
    return RAISE


def credentials(tls_ca):
    ca = None
    if tls_ca:
        with open(tls_ca, "rb") as f:
            ca = f.read()
    return grpc.ssl_channel_credentials(root_certificates=ca)


def options(tls_server_name=None):
    opts = [("grpc.max_receive_message_length", 64 << 20)]
    if tls_server_name:
        opts.append(("grpc.ssl_target_name_override", tls_server_name))
    return opts


def metadata(token):
    if token is not None and ("\n" in token or not token.strip()):
        raise ValueError("token must be one non-empty line")
    return (("authorization", f"Bearer {token.strip()}"),) if token else ()


def subscribe_request(continuous, event_locked, include_embedding, include_images, image_size,
                      top_k, max_rate_hz, max_age_s, latest_only):
    """The SubscribeRequest, checked here with the same bounds the server applies."""
    if not (max_rate_hz >= 0 and max_rate_hz < float("inf")):
        raise ValueError(f"max_rate_hz={max_rate_hz}: must be finite and >= 0 (0 = every decoding)")
    if not (0 < max_age_s <= 3600):
        raise ValueError(f"max_age_s={max_age_s}: must be in (0, 3600] seconds")
    if not (0 <= image_size <= 2048):
        raise ValueError(f"image_size={image_size}: must be 0..2048 pixels")
    if top_k < 0:
        raise ValueError(f"top_k={top_k}: must be >= 0 (0 = all the decoder computed)")
    if not continuous and not event_locked:
        raise ValueError("continuous=False and event_locked=False: nothing to subscribe to")
    return pb.SubscribeRequest(
        include_embedding=include_embedding, include_images=include_images, max_rate_hz=max_rate_hz,
        continuous=continuous, event_locked=event_locked, image_size=image_size, top_k=top_k,
        max_age_s=max_age_s, latest_only=latest_only, image_format=pb.IMAGE_FORMAT_PNG,
    )
