"""pi0_serve: a pi0 policy (a checkpoint, or the tiny demo model) behind openpi's websocket policy protocol.

ROS-free: it needs pi0_model, pi0_client, the robot description and the model
loader, nothing of rclpy. Stock openpi clients get actions from it; pi0_client's
RemotePolicy additionally uses the RTC extension. See docs/remote_inference.md.

- ``server``     the websocket server (asyncio; inference on one worker thread)
- ``backend``    request map -> Pi0Policy.infer -> response map, and the per-request noise
- ``cli``        ``pi0_serve`` / ``python -m pi0_ros.serve``
- ``benchmark``  local inference vs the same through pi0_serve on loopback
"""
