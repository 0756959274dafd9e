"""`vllm-elastic tune`: choose a cache setting for one model and task, automatically.

prompts.py reads the calibration file, candidates.py holds the settings tried, runs.py runs
them through vLLM (resumable), frontier.py scores them and picks, command.py is the CLI."""
