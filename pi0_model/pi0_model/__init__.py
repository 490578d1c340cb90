"""pi0: a PaliGemma vision-language backbone plus a flow-matching action expert.

This package imports no ROS; the ROS runtime (pi0_ros) uses it through
:class:`pi0_model.policy.Pi0Policy`.

Modules, from the network outwards:

- ``config``         validating dataclasses: the real pi0 sizes and a tiny variant
- ``attention``      block attention mask, positions, RoPE, attention kernel
- ``model``          the joint PaliGemma + action-expert transformer with a prefix KV cache
- ``flow_matching``  training loss, Euler sampler, real-time chunking guidance
- ``images``, ``tokenizer``, ``normalization``, ``transforms``   pre/post-processing steps
- ``checkpoint``     LeRobot / openpi PyTorch checkpoint directories (safetensors only)
- ``policy``         ``Pi0Policy``: raw observation in, unnormalized action chunk out
- ``benchmark``      latency benchmark (``pi0-benchmark``)
"""
