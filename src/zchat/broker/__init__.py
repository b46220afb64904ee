"""The broker: rules (pure) in rules.py, the socket loop in server.py."""
