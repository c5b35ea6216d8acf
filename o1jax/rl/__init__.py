"""Reinforcement learning for reasoning: GRPO's log-probs, losses, data, verifiers and rollouts."""
