"""The metadata store's domains: named queries and writes, one module each, SQL beside it."""
