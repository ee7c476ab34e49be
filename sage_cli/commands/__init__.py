"""Typer command bodies: parse flags into a stage config, call the stage's ``run``, print."""
