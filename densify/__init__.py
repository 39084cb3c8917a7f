"""densify."""
