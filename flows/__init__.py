"""Prefect flows composing the tasks: migrate, rollback, force, status-monitor, backup, restore-drill."""
