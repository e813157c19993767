"""The scenario simulator: plays demand traces through a balancing policy, without a cluster."""
