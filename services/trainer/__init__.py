"""Trainer: PRM training and PPO with dense PRM rewards and PRM value initialisation."""
