"""supervisord-agents: a supervisor daemon for headless AI coding agents."""

__version__ = "0.1.0"
