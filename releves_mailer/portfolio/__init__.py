"""Portfolio: portal accounts, redevables, their statement schedules and the import file."""
