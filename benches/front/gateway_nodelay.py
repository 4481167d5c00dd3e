# sitecustomize.py for a kernel gateway (Enterprise Gateway, Kernel Gateway):
# TCP_NODELAY on the kernel WebSockets it serves. Neither gateway has a
# setting for it and tornado leaves Nagle's algorithm on, so each of the
# several small messages a kernel sends per execution waits until the
# client has acknowledged the previous one. Python imports this file at
# start when its directory is on the gateway's PYTHONPATH; it changes
# nothing in other programs (the kernels inherit the PYTHONPATH).
import sys

_GATEWAYS = ("enterprisegateway", "enterprise_gateway", "kernelgateway", "kernel_gateway")

if sys.argv and any(name in sys.argv[0] for name in _GATEWAYS):
    from tornado import websocket

    _receive_frames = websocket.WebSocketProtocol13._receive_frame_loop

    async def _receive_frames_nodelay(self):
        # Runs once the upgrade is done, before the first message.
        self.stream.set_nodelay(True)
        return await _receive_frames(self)

    websocket.WebSocketProtocol13._receive_frame_loop = _receive_frames_nodelay
    print("gateway-nodelay: TCP_NODELAY on kernel WebSockets", file=sys.stderr)
