"""Executing runs: the headless commands' runs on worker processes of their own (`runner`, one pool),
what they plan (`plan`), the instance's health, and the Celery launcher of the scale-out configuration."""
