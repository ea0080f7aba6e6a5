"""Connector tests: the shared contract and one module per connector."""
