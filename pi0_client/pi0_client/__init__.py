"""pi0_client: the dependency-light side of pi0 inference (numpy, msgpack, websockets; no torch, no ROS).

Modules:

- ``errors``               the error types of this package (and the input-error base pi0_model derives from)
- ``interface``            what goes into and comes out of one inference besides the observation
- ``msgpack_numpy``        numpy arrays in msgpack, the way openpi's policy servers encode them
- ``observation_formats``  openpi's observation dicts (aloha, droid, libero) as encode/decode pairs
- ``websocket_client``     a synchronous client of openpi's websocket policy-server protocol
- ``remote_policy``        ``RemotePolicy``: images, state, prompt in, validated ``Inference`` out

This file imports nothing, so ``pi0_client.interface`` costs numpy only.
"""
