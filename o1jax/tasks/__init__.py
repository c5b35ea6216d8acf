"""Verifiable reasoning tasks (addition, equation, countdown) with short thinking traces."""

from o1jax.tasks.base import (DEFAULT_SPLIT_KEY, SPLIT_KEYS, STEP_SEP, Problem, Task,
                              check_split_key, is_heldout, render, render_text, split_steps, split_thinking,
                              thinking_text, whole_steps)
from o1jax.tasks.registry import TASKS, distinct_problems, find_task_for_prompt, get_task
from o1jax.tasks.tokenizer import CharTokenizer

__all__ = [
    "DEFAULT_SPLIT_KEY", "SPLIT_KEYS", "STEP_SEP", "CharTokenizer", "Problem", "TASKS", "Task",
    "check_split_key", "distinct_problems", "find_task_for_prompt", "get_task", "is_heldout", "render",
    "render_text", "split_steps", "split_thinking", "thinking_text", "whole_steps",
]
