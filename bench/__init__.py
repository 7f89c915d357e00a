"""Benchmarks of ai-chat-backend on the real local stack (``python -m bench.run_all``; see bench/README.md)."""
