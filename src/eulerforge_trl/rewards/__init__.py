"""Reward functions given by name (TRL's reward-function signature): loading and checked calls."""
