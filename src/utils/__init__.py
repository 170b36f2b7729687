"""Framework utilities: logging, checkpoints, returns (GAE, TD(lambda)), plotting, CPU runtime settings and
the MongoDB observer check."""
