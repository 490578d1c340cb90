"""pi0: a PaliGemma vision-language backbone plus a flow-matching action expert.

This package imports no ROS; the ROS runtime (pi0_ros) uses it through
:class:`pi0_model.policy.Pi0Policy`.
"""
