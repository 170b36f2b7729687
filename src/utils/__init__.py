"""Framework utilities: logging, checkpoints, returns (GAE, TD(lambda)) and plotting."""
