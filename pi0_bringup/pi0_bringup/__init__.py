"""Robot descriptions, node graph, simulation and demo for pi0_ros."""
