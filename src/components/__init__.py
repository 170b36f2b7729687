"""Episode storage, replay, action selection, schedules and normalisers."""
