"""streamprune: fixed visual-token budgets for video LLMs on long and live video."""

__version__ = "0.1.0"
