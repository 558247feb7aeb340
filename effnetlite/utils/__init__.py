"""Plumbing shared by the commands: the CLI layer, the atomic writer, process settings,
progress bars."""
