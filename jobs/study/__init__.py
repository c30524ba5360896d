"""The quantization study (`judgefleet study`): which rung of a GGUF ladder can judge in place of
the original, and what each costs.

`plan` turns the config into judges (one per ladder rung, plus the other judges under
serve.models), the route that serves them all, and the score runs; `analysis` turns the finished
runs into the article's quality table (Pearson with the original's second run and with the
reference, each with a bootstrap interval) and its speed/cost table; `report` writes study.json,
study.md and report.html. The command (jobs.commands.study) runs them.
"""
