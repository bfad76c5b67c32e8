"""Running a suite: Ray connection and preflight, Tune scheduling, and what travels back from workers."""
