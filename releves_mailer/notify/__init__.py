"""Mails to outside addresses (links, alerts, notifications) through a persistent outbox."""
