"""Talking to a judge endpoint: the one HTTP client (timeouts, retries), and an in-process one."""
