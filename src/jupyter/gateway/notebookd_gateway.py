"""notebookd's server extension for kernels on a gateway (jupyter.gateway_url).

Written by notebookd into its private runtime directory at each start of
Jupyter; changes here are lost.

jupyter_server's gateway client opens one tornado WebSocket per kernel to
the gateway, and neither side turns Nagle's algorithm off on it (tornado
even turns it back on once the upgrade request is written). A kernel answers
one request with several small messages; with Nagle's algorithm the
gateway holds each one back until the previous one is acknowledged, and
Linux delays that acknowledgement by up to 40 ms. So this extension, on
every client WebSocket once its handshake is done:

- sets TCP_NODELAY, so what Jupyter sends to the gateway leaves at once;
- acknowledges what the gateway sends as soon as it is read (TCP_QUICKACK
  after each read: Linux clears it as it goes), so the gateway's held-back
  messages follow without the 40 ms wait, whatever the gateway's own
  settings.

Linux acknowledges a segment on arrival only in its quick-ACK mode, which
no socket option keeps on, so a held-back message still waits until
Jupyter has read the one before it (and, over a network, for that ACK to
travel): only TCP_NODELAY on the gateway's side removes that.
"""

import socket

from tornado import websocket

_PATCHED = "_notebookd_nodelay"
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _quickack(sock):
    if _QUICKACK is None or sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    except OSError:
        pass


def _tune(stream):
    # Also for wss://: SSLIOStream sets it on the socket underneath.
    stream.set_nodelay(True)
    sock = getattr(stream, "socket", None)
    read_from_fd = stream.read_from_fd

    def read_and_ack(buf):
        n = read_from_fd(buf)
        if n:
            _quickack(sock)
        return n

    stream.read_from_fd = read_and_ack
    _quickack(sock)


def _patch_websocket_client():
    cls = websocket.WebSocketClientConnection
    headers_received = cls.headers_received
    if getattr(headers_received, _PATCHED, False):
        return

    async def headers_received_tuned(self, start_line, headers):
        await headers_received(self, start_line, headers)
        protocol = getattr(self, "protocol", None)
        stream = getattr(protocol, "stream", None)
        if stream is not None and not stream.closed():
            _tune(stream)

    setattr(headers_received_tuned, _PATCHED, True)
    cls.headers_received = headers_received_tuned


def _jupyter_server_extension_points():
    return [{"module": "notebookd_gateway"}]


def _load_jupyter_server_extension(serverapp):
    _patch_websocket_client()
    serverapp.log.info(
        "notebookd_gateway: TCP_NODELAY and quick ACKs on kernel WebSockets to the gateway"
    )


# The classic Notebook 6.x (nbserver_extensions) calls this name.
load_jupyter_server_extension = _load_jupyter_server_extension
