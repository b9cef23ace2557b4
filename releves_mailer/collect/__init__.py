"""Collection of bank data: provider contract, test bank, incremental sync of connections."""
