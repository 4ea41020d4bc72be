"""Addresses, TLS and the bearer token, taken exactly as the server takes them."""
import grpc

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
