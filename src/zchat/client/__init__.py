"""The client: rules (pure) in core.py, sync and asyncio adapters, the terminal UI."""
