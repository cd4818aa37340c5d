"""`ssl-assets` command line: run the pipeline, print the summary, query the metadata safely,
re-curate under new settings."""

from __future__ import annotations

import argparse
import json
import sys


def _sql(lake_root: str | None, query: str) -> int:
    import duckdb

    # Read-only, unable to touch any other file, and short-lived: the connection waits for a
    # running writer (as the pipeline's writers wait for readers) and is closed before this
    # returns, so a running pipeline waits at most a moment for its write lock.
    try:
        with _store(lake_root).sandboxed_reader() as con:
            print(con.execute(query).df().to_string(index=False))
    except (duckdb.Error, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    champ = sub.add_parser("champion", help="show the champion, or restore/promote another")
    champ.add_argument("action", nargs="?", choices=["show", "restore", "promote"], default="show")
    champ.add_argument("model_id", nargs="?", help="a fine-tuned model id from `models`")
    champ.add_argument("--why", default="", help="recorded with the decision")
    predict = sub.add_parser("predict", help="predict labels of image files with the champion")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--model", help="a model directory instead of the champion")
    predict.add_argument("--embed", action="store_true", help="print embeddings' shapes")
    predict.add_argument("--json", action="store_true")
    predict.add_argument("--onnx", action="store_true", help="run the model's ONNX export")
    export = sub.add_parser("export", help="write a registered model as ONNX beside its weights")
    export.add_argument("model_id", help="an encoder or fine-tuned model id from `models`")
    export.add_argument("--format", choices=["onnx"], default="onnx")
    recurate = sub.add_parser(
        "recurate",
        help="re-curate every curated image under new duplicate settings (changes listed first)",
    )
    recurate.add_argument(
        "--set",
        dest="changes",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a curation setting to change, e.g. aligned_min_gradient=0.9 (repeatable)",
    )
    recurate.add_argument("--dry-run", action="store_true", help="list the changes, write nothing")
    recurate.add_argument(
        "--force", action="store_true", help="move images that evaluated a promoted model"
    )
    recurate.add_argument("--why", default="", help="recorded with the re-curation")
    recurate.add_argument("--profile", help="tiny | demo | full (default: $SSL_PROFILE or demo)")
    args = parser.parse_args(argv)

    if args.command == "run":
        from ssl_assets.pipeline import run_pipeline

        return run_pipeline(args.lake, args.profile)
    if args.command == "summary":
        from resources.lake import unusable_batches_text
        from ssl_assets.pipeline import batch_summary

        print(batch_summary(_store(args.lake)))
        unusable = unusable_batches_text(_lake(args.lake))
        if unusable:
            print(unusable)
        return 0
    if args.command == "champion":
        return _champion(args.lake, args.action, args.model_id, args.why)
    if args.command == "predict":
        return _predict(args.lake, args)
    if args.command == "export":
        return _export(args.lake, args.model_id)
    if args.command == "recurate":
        return _recurate(args)
    return _sql(args.lake, args.query)


def _lake(lake_root: str | None):
    from resources.lake import LakeResource

    return LakeResource(root=lake_root) if lake_root else LakeResource.from_env()


def _store(lake_root: str | None):
    from resources.metadata import MetadataStore

    return MetadataStore(path=str(_lake(lake_root).metadata_path))


def _champion(lake_root: str | None, action: str, model_id: str | None, why: str) -> int:
    import getpass

    store = _store(lake_root)
    if action in ("restore", "promote"):
        if not model_id:
            print(f"usage: ssl-assets champion {action} MODEL_ID", file=sys.stderr)
            return 2
        try:
            previous = store.set_champion(
                model_id, action, [f"{action} by {getpass.getuser()}: {why}".strip()], None
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{model_id} is the champion again (was: {previous or 'none'})")
    champion = store.current_champion()
    print(f"champion: {champion['model_id'] if champion is not None else 'none'}")
    history = store.promotions().drop(columns=["delta_low", "delta_high", "reasons"])
    print(history.to_string(index=False) if len(history) else "no decisions yet")
    return 0


def _recurate(args) -> int:
    from ssl_assets import recurate
    from ssl_assets.definitions import build_resources

    try:
        changes = recurate.parse_changes(args.changes)
        resources = build_resources(args.lake, args.profile)
        return recurate.run(
            resources["lake"],
            resources["metadata"],
            resources["image_spec"].version,
            changes,
            dry_run=args.dry_run,
            force=args.force,
            why=args.why,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _predict(lake_root: str | None, args) -> int:
    from ssl_assets import predict_cli

    if args.model:
        model_dir = args.model
    else:
        champion = _store(lake_root).current_champion()
        if champion is None:
            print(
                "error: there is no champion yet: run the pipeline (make run) first",
                file=sys.stderr,
            )
            return 2
        try:  # the champion of this lake, its weights verified against the registry
            model_dir = str(_lake(lake_root).verified_model_path(champion))
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    extra = [
        *(["--embed"] if args.embed else []),
        *(["--json"] if args.json else []),
        *(["--onnx"] if args.onnx else []),
    ]
    return predict_cli.main([model_dir, *args.images, *extra])


def _export(lake_root: str | None, model_id: str) -> int:
    """Export a registered model (its weights verified against the registry) to ONNX."""
    from ssl_assets.ml.export import export_onnx

    lake = _lake(lake_root)
    try:
        weights = lake.weights_file(_store(lake_root).model(model_id), model_id)
        meta_path = export_onnx(weights.parent)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = json.loads(meta_path.read_text())
    print(f"{model_id}: {meta_path.parent / record['file']} (preprocessing in {meta_path.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
