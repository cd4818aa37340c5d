"""Lay out CIFAR-10 (../shared/data/cifar10-jpg.tar.gz) as a landing zone, for the benchmarks.

The tarball holds `train|test/<class>/NNNN.jpg`. Each split becomes one batch, following the
README's landing conventions:

    <lake>/landing/cifar-train/<class>/NNNN.jpg   (50,000)
    <lake>/landing/cifar-train/metadata.csv       path,split,class   (split pins the image: train)
    <lake>/landing/cifar-train/labels.csv         path,label
    <lake>/landing/cifar-train/_READY             written last
    <lake>/landing/cifar-test/...                 (10,000, split pinned to test)

The data is for measuring only: it is extracted into a directory the caller chooses (a temporary
one by default), never into the repository.

    .venv/bin/python benchmarks/_cifar.py /tmp/cifar-lake            # both batches, 60,000 files
    .venv/bin/python benchmarks/_cifar.py /tmp/cifar-lake --limit 500  # 500 per split
"""

from __future__ import annotations

import argparse
import csv
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

_IN_SHARED = Path("shared") / "data" / "cifar10-jpg.tar.gz"
# ../shared beside the checkout; a worktree one level deeper (e.g. wt/<name>) looks one higher
CIFAR_TARBALL = next(
    (p / _IN_SHARED for p in Path(__file__).resolve().parents[2:4] if (p / _IN_SHARED).is_file()),
    Path(__file__).resolve().parents[2] / _IN_SHARED,
)
SPLITS = ("train", "test")
READY = "_READY"


def batch_name(split: str) -> str:
    return f"cifar-{split}"


@dataclass(frozen=True)
class CifarFile:
    split: str  # train | test
    label: str  # class folder name
    name: str  # NNNN.jpg
    data: bytes

    @property
    def rel_path(self) -> str:
        """Path relative to the batch folder."""
        return f"{self.label}/{self.name}"


def read_cifar(
    tarball: Path = CIFAR_TARBALL, limit: int | None = None
) -> dict[str, list[CifarFile]]:
    """Every JPG of the tarball per split, in one pass over the archive (about 60,000 small files).

    With `limit`, keep at most that many per split, interleaving the classes (file number first,
    then class), so a small sample still has every class.
    """
    if not tarball.is_file():
        raise FileNotFoundError(f"{tarball} not found (see ../shared/data/README.md)")
    found: dict[str, list[CifarFile]] = {s: [] for s in SPLITS}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in found:
                continue
            if not parts[2].lower().endswith(".jpg"):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            found[parts[0]].append(CifarFile(parts[0], parts[1], parts[2], handle.read()))
    for split, files in found.items():
        files.sort(key=lambda f: (f.name, f.label) if limit else (f.label, f.name))
        if limit:
            found[split] = sorted(files[:limit], key=lambda f: (f.label, f.name))
    return found


def land_batch(landing_dir: Path, files: list[CifarFile]) -> Path:
    """Write one split's files as `landing/cifar-<split>/`, sidecars next, `_READY` last."""
    if not files:
        raise ValueError("no files to land")
    split = files[0].split
    batch_dir = landing_dir / batch_name(split)
    if (batch_dir / READY).exists():
        raise FileExistsError(f"{batch_dir} is already landed")
    for f in files:
        path = batch_dir / f.rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.data)
    with (batch_dir / "metadata.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "split", "class"])
        writer.writerows([f.rel_path, f.split, f.label] for f in files)
    with (batch_dir / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows([f.rel_path, f.label] for f in files)
    (batch_dir / READY).write_text("")
    return batch_dir


def image_paths(batch_dir: Path) -> list[Path]:
    """The landed image files of a batch (sidecars and `_READY` left out), sorted."""
    return sorted(p for p in batch_dir.rglob("*.jpg") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake", nargs="?", type=Path, help="lake root (default: a new temp dir)")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per split")
    parser.add_argument("--tarball", type=Path, default=CIFAR_TARBALL)
    args = parser.parse_args()
    lake = args.lake or Path(tempfile.mkdtemp(prefix="cifar-lake-"))
    files = read_cifar(args.tarball, args.limit)
    for split in SPLITS:
        batch_dir = land_batch(lake / "landing", files[split])
        print(f"{batch_dir}: {len(files[split])} images")


if __name__ == "__main__":
    main()
