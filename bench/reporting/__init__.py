"""After trials finish: the results store, leaderboards, significance, plots, checks and trackers."""
