"""Tuning: MetaSchedule's evolutionary search with the XGBoost cost model, per full target.

``tuner`` extracts the tasks of the module compile builds (prepare.py) and tunes those the
``database`` lacks, appending each measured record as it is measured; ``progress`` shows it
and enforces the time budget. Compile applies the records in schedule.py.
"""

from .tuner import TuneArgs, TuneSummary, parse_budget, parse_duration, summary_json, tune_model

__all__ = ["TuneArgs", "TuneSummary", "parse_budget", "parse_duration", "summary_json", "tune_model"]
