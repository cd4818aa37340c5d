"""Thin Dagster assets: each calls plain functions and records what they produced."""
