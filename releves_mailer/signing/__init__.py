"""Cryptography of the portal: secrets at rest, TLS bootstrap, link tokens, mail signing."""
