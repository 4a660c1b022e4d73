"""The local ``evaluate`` metric module (see ``fer_metrics.py``); a package only so that it is installed."""
