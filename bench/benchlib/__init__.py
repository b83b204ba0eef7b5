"""The rbuild benchmark harness (bench/run): tools, scenarios, reports."""
