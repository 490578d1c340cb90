"""ROS 2 runtime for pi0."""
