"""The judge protocol: what to ask a judge and what its answers mean (modes, prompts, verdicts,
reason codes, one row's requests). No Ray, no W&B."""
