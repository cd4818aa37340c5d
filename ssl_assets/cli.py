"""`ssl-assets` command line: run the pipeline, print the summary, query the metadata safely."""

from __future__ import annotations

import argparse
import sys


def _sql(lake_root: str | None, query: str) -> int:
    import duckdb

    from resources.lake import LakeResource

    lake = LakeResource(root=lake_root) if lake_root else LakeResource.from_env()
    # Read-only and short-lived: the connection is closed before this returns, so a running
    # pipeline waits at most a moment for its write lock.
    with duckdb.connect(str(lake.metadata_path), read_only=True) as con:
        print(con.execute(query).df().to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ssl-assets", description=__doc__)
    parser.add_argument("--lake", help="lake root (default: $SSL_LAKE or ./lake)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="land the default data if needed and run the pipeline")
    run.add_argument("--profile", help="tiny | demo | full (default: $SSL_PROFILE or demo)")
    sub.add_parser("summary", help="print the per-batch summary")
    sql = sub.add_parser("sql", help="run a read-only SQL query against metadata.duckdb")
    sql.add_argument("query")
    args = parser.parse_args(argv)

    if args.command == "run":
        from ssl_assets.pipeline import run_pipeline

        return run_pipeline(args.lake, args.profile)
    if args.command == "summary":
        from resources.lake import LakeResource
        from resources.metadata import MetadataStore
        from ssl_assets.pipeline import batch_summary

        lake = LakeResource(root=args.lake) if args.lake else LakeResource.from_env()
        print(batch_summary(MetadataStore(path=str(lake.metadata_path))))
        return 0
    return _sql(args.lake, args.query)


if __name__ == "__main__":
    sys.exit(main())
