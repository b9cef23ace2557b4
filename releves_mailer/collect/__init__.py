"""Collection of bank data: provider contract, incremental sync of connections, scheduling."""
