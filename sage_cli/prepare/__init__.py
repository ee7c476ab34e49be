"""`sage prepare`: long-tailed manifests, class-frequency priors and many/medium/few groups.

Sources (the ``SOURCES`` table): the generated ``synthetic`` and ``shapes-lt`` sets; the split-file
benchmarks ``imagenet-lt``, ``places-lt`` and ``inat2018`` (:mod:`.splits`); ``cifar100-lt`` from
the official pickles (:mod:`.cifar`); and user data as ``folder`` or ``csv`` (:mod:`.folder`).
Generated sets and CIFAR write PNGs under ``OUT/images`` (``image_root`` is OUT); the others keep
paths relative to ``--root`` (``image_root`` is ROOT), after checking every listed image exists
(:mod:`.check`). Everything is written into a temporary directory inside OUT (so that the moves
stay within OUT's file system, also when OUT is a mount point) and moved into place at the end,
so a failure changes nothing in OUT. An ``OUT/images`` that sage did not write is never replaced. Benchmarks are compared with their recipe in ``data_manifests/`` (:mod:`.recipes`).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sage_cli import artifacts
from sage_cli.config import did_you_mean
from sage_cli.errors import SageError, explain_write_errors
from sage_cli.locks import lock_output_dir
from sage_cli.prepare import check, recipes
from sage_cli.prepare import names as class_names
from sage_cli.prepare.source import SourceData
from sage_cli.prepare.stratify import SplitSpec, split_manifest

logger = logging.getLogger(__name__)

STAGE = "prepare"
GENERATED = ("synthetic", "shapes-lt")
SOURCES = (*GENERATED, "imagenet-lt", "places-lt", "inat2018", "cifar100-lt", "folder", "csv")
WITH_CLASSNAMES = ("imagenet-lt", "places-lt", "inat2018", "folder", "csv")
OUTPUTS = (artifacts.MANIFEST.filename, artifacts.CLASSES.filename, check.DROPPED)
WRITE_FIX = "free space or fix permissions, then re-run (nothing in it changed)"
REQUIRED = (artifacts.MANIFEST.filename, artifacts.CLASSES.filename)
IMAGES = "images"  # OUT/images: the PNGs of the sources that write them
WRITES_IMAGES = (*GENERATED, "cifar100-lt")
IMAGES_MARK = ".sage-prepare"  # in OUT/images: sage prepare wrote this folder (and --force may replace it)


@dataclass(frozen=True)
class PrepareConfig:
    """Options of one preparation; every check names the flag at fault."""

    dataset: str
    out: Path
    root: Path | None = None
    seed: int = 0
    imbalance_ratio: float | None = None  # None: the source's default
    many_threshold: int = 100
    few_threshold: int = 20
    force: bool = False
    classnames: Path | None = None
    verify: str = "exists"
    skip_bad: bool = False
    groups_from: str | None = None  # cifar100-lt: "ir100" (default) or "own"
    label_order: str | None = None  # inat2018: "species" (default, LIFT's) or "category-id"
    workers: int | None = None  # threads for image checks and PNG writes (None: automatic)
    max_count: int | None = None  # shapes-lt: training images of the most frequent class (None: 300; v3: 200)
    variant: int = 0  # shapes-lt: world variant, the seed of the class order (apart from --seed)
    domain: str | None = None  # shapes-lt: v3, fine or moderate (world v2) or hard (world v1); None: DEFAULT_DOMAIN
    allow_outside_root: bool = False  # accept listed paths that resolve outside the root
    split: SplitSpec = SplitSpec()  # folder/csv without splits: val/test per class (.stratify)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.dataset not in SOURCES:
            raise SageError(f"unknown dataset {self.dataset!r}; choose from {', '.join(SOURCES)}"
                            f"{did_you_mean(self.dataset, tuple(SOURCES))}")
        if self.imbalance_ratio is not None and self.dataset == "shapes-lt" and self.imbalance_ratio < 1:
            raise SageError(f"--imbalance-ratio must be >= 1 (1: balanced); got {self.imbalance_ratio}")
        if self.imbalance_ratio is not None and self.dataset != "shapes-lt" and self.imbalance_ratio <= 1:
            raise SageError(f"--imbalance-ratio must be > 1; got {self.imbalance_ratio}")
        if not 0 < self.few_threshold <= self.many_threshold:
            raise SageError("--few-threshold must be positive and at most --many-threshold")
        if self.verify not in check.VERIFY_MODES:
            raise SageError(f"--verify must be one of {', '.join(check.VERIFY_MODES)}; got {self.verify!r}")
        if self.workers is not None and self.workers < 1:
            raise SageError(f"--workers must be at least 1; got {self.workers}")
        self._check_dataset_options()

    def _check_dataset_options(self) -> None:
        self._check_shapes_lt_options()
        if self.groups_from is not None and self.dataset != "cifar100-lt":
            raise SageError("--groups-from applies to cifar100-lt only")
        if self.groups_from not in (None, "ir100", "own"):
            raise SageError(f"--groups-from must be ir100 or own; got {self.groups_from!r}")
        if self.label_order is not None and self.dataset != "inat2018":
            raise SageError("--label-order applies to inat2018 only")
        if self.label_order not in (None, "species", "category-id"):
            raise SageError(f"--label-order must be species or category-id; got {self.label_order!r}")
        if self.split.given and self.dataset not in ("folder", "csv"):
            raise SageError(f"--val-fraction/--test-fraction/--val-per-class/--test-per-class apply to folder "
                            f"and csv only, not {self.dataset}")
        if self.classnames is not None and self.dataset not in WITH_CLASSNAMES:
            raise SageError(f"--classnames does not apply to {self.dataset} (its names come with it)")
        if self.dataset in GENERATED:
            return
        if self.root is None:
            raise SageError(f"--root is required for {self.dataset}; see docs/datasets.md for its layout")
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())
        if not self.root.exists():
            raise SageError(f"--root {self.root} does not exist")
        if self.imbalance_ratio is not None and self.dataset != "cifar100-lt":
            raise SageError(f"--imbalance-ratio applies to cifar100-lt and generated sets, not {self.dataset}")
        if self.classnames is not None:
            object.__setattr__(self, "classnames", Path(self.classnames).expanduser().resolve())
            if not self.classnames.is_file():
                raise SageError(f"--classnames {self.classnames} is not a file")


    def _check_shapes_lt_options(self) -> None:
        given = [flag for flag, value in (("--max-count", self.max_count), ("--variant", self.variant or None),
                                          ("--domain", self.domain)) if value is not None]
        if given and self.dataset != "shapes-lt":
            raise SageError(f"{given[0]} applies to shapes-lt only")
        if self.max_count is not None and self.max_count < 1:
            raise SageError(f"--max-count must be >= 1; got {self.max_count}")
        if self.variant < 0:
            raise SageError(f"--variant must be >= 0; got {self.variant}")
        if self.dataset == "shapes-lt":
            from sage_cli.world.shapes_lt import SHAPES_LT_DOMAINS

            if self.domain is not None and self.domain not in SHAPES_LT_DOMAINS:
                raise SageError(f"--domain must be one of {', '.join(SHAPES_LT_DOMAINS)}; got {self.domain!r}")


@dataclass(frozen=True)
class PrepareResult:
    out: Path
    record: dict[str, Any]
    skipped: bool = False


@dataclass(frozen=True)
class Source:
    """How to load one dataset, and which files define it (hashed into the fingerprint)."""

    load: Callable[[PrepareConfig], SourceData]
    input_hashes: Callable[[PrepareConfig], dict[str, str]] | None = None  # None: generated


def compute_class_table(names: list[str], train_labels: np.ndarray, many: int, few: int,
                        group_counts: np.ndarray | None = None) -> pd.DataFrame:
    """class_id, name, train_count, prior and group (many > ``many``, few < ``few``, else medium).

    Groups follow ``group_counts`` when given (CIFAR-100-LT's IR-100 convention), else train counts.
    """
    counts = np.bincount(train_labels, minlength=len(names)).astype(np.int64)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise SageError(f"class {int(empty[0])} ({names[empty[0]]!r}) has no training image")
    by = counts if group_counts is None else np.asarray(group_counts)
    group = np.where(by > many, "many", np.where(by < few, "few", "medium"))
    return pd.DataFrame({
        "class_id": np.arange(len(names), dtype=np.int64), "name": names, "train_count": counts,
        "prior": counts / counts.sum(), "group": group,
    })


def run(config: PrepareConfig, progress: check.Progress | None = None) -> PrepareResult:
    """Prepare ``config.dataset`` into ``config.out`` unless it already holds exactly this preparation.

    ``progress(done, total)`` is called as listed images are checked.
    """
    with lock_output_dir(config.out, STAGE):
        return _run_locked(config, progress)


def _run_locked(config: PrepareConfig, progress: check.Progress | None) -> PrepareResult:
    source = _source_table()[config.dataset]
    hashes = source.input_hashes(config) if source.input_hashes else None
    inputs = _fingerprint_inputs(config, hashes)
    fingerprint = artifacts.sha256_json(inputs)
    if config.dataset in WRITES_IMAGES:
        check_images_are_ours(config.out)
    if artifacts.guard_output_dir(config.out, artifacts.PREPARE_RECORD, fingerprint, OUTPUTS, config.force,
                                  required=REQUIRED):
        return PrepareResult(config.out, artifacts.read_record(config.out, artifacts.PREPARE_RECORD), True)
    with explain_write_errors(config.out, "preparation", fix=WRITE_FIX):
        # inside OUT: the final renames stay within OUT's file system (OUT may be a mount point)
        staging = Path(tempfile.mkdtemp(prefix=".prepare.", suffix=".tmp", dir=config.out))
        try:
            staging.chmod(0o777 & ~artifacts.current_umask())  # mkdtemp makes it private
            record = artifacts.seal_record(staging, _prepare_into(staging, config, source, inputs, hashes, progress),
                                           OUTPUTS)
            artifacts.write_record(staging, artifacts.PREPARE_RECORD, record)
            publish(staging, config.out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return PrepareResult(config.out, record)


def _prepare_into(staging: Path, config: PrepareConfig, source: Source, inputs: dict[str, Any],
                  hashes: dict[str, str] | None, progress: check.Progress | None) -> dict[str, Any]:
    """Load, check and write the tables into ``staging``; returns the record (not yet written)."""
    data = source.load(dataclasses.replace(config, out=staging))  # generated sets write their PNGs here
    if (staging / IMAGES).is_dir():
        (staging / IMAGES / IMAGES_MARK).write_text("written by sage prepare; sage prepare --force replaces this "
                                                    "folder\n")
    data.names, cleaned = class_names.clean_names(data.names)
    data.warnings = [*data.warnings, *cleaned]
    manifest = data.manifest
    if "sample_id" not in manifest.columns:  # ids before any drop, so kept images keep theirs
        manifest.insert(0, "sample_id", np.arange(len(manifest), dtype=np.int64))
    dropped = pd.DataFrame(columns=["path", "split", "reason"])
    if not data.generated:
        manifest, dropped = check.apply_checks(manifest, data.image_root, config.verify, config.skip_bad,
                                               config.workers, progress, config.allow_outside_root)
    manifest = _split_if_unsplit(config, data, manifest)
    train = manifest.loc[manifest["split"] == "train", "label"].to_numpy()
    classes = compute_class_table(data.names, train, config.many_threshold, config.few_threshold,
                                  data.group_counts)
    artifacts.write_table(staging, artifacts.MANIFEST, manifest)
    artifacts.write_table(staging, artifacts.CLASSES, classes)
    check.save_dropped(staging, dropped)
    image_root = config.out if Path(data.image_root) == staging else Path(data.image_root)
    return _build_record(config, inputs, hashes, data, image_root, manifest, classes, len(dropped))


def check_images_are_ours(out: Path) -> None:
    """Refuse an ``OUT/images`` that sage prepare did not write: publishing would replace it, and
    sage never deletes what it did not create, not even with ``--force``."""
    images = out / IMAGES
    if not images.exists() and not images.is_symlink():
        return
    if images.is_dir() and not images.is_symlink() and ((images / IMAGES_MARK).is_file() or _recorded_images(out)):
        return
    raise SageError(f"{images}: exists and was not written by sage prepare (no {IMAGES_MARK} in it); sage will "
                    "not replace it, even with --force: move it away or choose another --out")


def _recorded_images(out: Path) -> bool:
    """Whether ``out``'s prepare.json is of a source that writes OUT/images (so they are sage's)."""
    try:
        record = artifacts.parse_record(out / artifacts.PREPARE_RECORD)
    except (SageError, OSError):
        return False
    return record.get("dataset") in WRITES_IMAGES and record.get("image_root") == "."


def _split_if_unsplit(config: PrepareConfig, data: SourceData, manifest: pd.DataFrame) -> pd.DataFrame:
    """A stratified split of data that came without one; a split option on data with splits is refused."""
    if not data.unsplit:
        if config.split.given:
            raise SageError(f"{config.root}: has its own splits ({data.notes.get('layout')}); --val-fraction, "
                            "--test-fraction, --val-per-class and --test-per-class apply to a flat "
                            "ROOT/<class>/<image> folder or a CSV without a split column")
        return manifest
    manifest, warnings = split_manifest(manifest, data.names, config.split, config.seed)
    for warning in warnings:
        logger.warning("%s", warning)
    data.warnings = [*data.warnings, *warnings]
    data.notes["split"] = {"seed": config.seed, **config.split.describe()}
    logger.info("%s: %s without splits: stratified split (seed %d, %s)", config.root, data.notes.get("layout"),
                config.seed, ", ".join(f"{k} {v}" for k, v in config.split.describe().items()))
    return manifest


def publish(staging: Path, out: Path) -> None:
    """Move what ``staging`` holds into ``out``: the old record goes first, the new one last.

    Everything, record included, was written in ``staging``, so a full disk, a bad image or a kill
    before this point leaves ``out`` as it was; here only renames within one file system happen.
    """
    (out / artifacts.PREPARE_RECORD).unlink(missing_ok=True)  # outputs without a record: interrupted
    if not (staging / check.DROPPED).exists():
        (out / check.DROPPED).unlink(missing_ok=True)
    entries = sorted(staging.iterdir(), key=lambda p: (p.name == artifacts.PREPARE_RECORD, p.name))
    for entry in entries:
        target = out / entry.name
        try:
            if target.is_dir() and not target.is_symlink():
                artifacts.replace_directory(entry, target)
            else:
                os.replace(entry, target)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EBUSY):
                raise
            raise SageError(f"{target}: cannot be replaced by a rename ({exc.strerror}; is it a mount point?); "
                            "prepare into another --out") from None


def _fingerprint_inputs(config: PrepareConfig, hashes: dict[str, str] | None) -> dict[str, Any]:
    keys = ["dataset", "root", "seed", "imbalance_ratio", "many_threshold", "few_threshold"]
    if hashes is not None:  # generated sets keep their original inputs (and fingerprints)
        keys += ["classnames", "verify", "skip_bad", "groups_from"]
    inputs = {k: getattr(config, k) for k in keys}
    if config.dataset == "inat2018":  # the label numbering (LIFT's sorted species names by default)
        inputs["label_order"] = config.label_order or "species"
    if config.dataset == "shapes-lt":  # world options other than world v1's (whose fingerprints stay)
        inputs.update({k: v for k, v in _shapes_lt_options(config).items()
                       if k != "imbalance_ratio" and v != _SHAPES_LT_V1[k]})
    inputs = {k: (str(v) if isinstance(v, Path) else v) for k, v in inputs.items()}
    return inputs if hashes is None else {**inputs, "hashes": hashes}


def _build_record(config: PrepareConfig, inputs: dict[str, Any], hashes: dict[str, str] | None,
                  data: SourceData, image_root: Path, manifest: pd.DataFrame, classes: pd.DataFrame,
                  num_dropped: int) -> dict[str, Any]:
    counts = {s: int((manifest["split"] == s).sum()) for s in artifacts.SPLITS}
    stats = {**counts, "classes": len(classes), "max_count": int(classes["train_count"].max()),
             "min_count": int(classes["train_count"].min())}
    warnings = data.warnings + _compare_recipe(config, stats)
    options = {k: v for k, v in inputs.items() if k != "hashes"}
    return artifacts.build_record(
        "prepare", inputs, dataset=config.dataset, root=options["root"],
        image_root=artifacts.relative_path(image_root, config.out), options=options, hashes=hashes or {},
        counts=counts, num_classes=len(classes),
        group_thresholds={"many": config.many_threshold, "few": config.few_threshold},
        group_counts={g: int((classes["group"] == g).sum()) for g in artifacts.GROUPS},
        max_count=stats["max_count"], min_count=stats["min_count"], dropped=num_dropped,
        warnings=warnings, **data.notes,
    )


def _compare_recipe(config: PrepareConfig, stats: dict[str, int]) -> list[str]:
    if config.dataset not in recipes.RECIPES:
        return []
    recipe = recipes.load_recipe(config.dataset)
    expected = recipes.expected_statistics(recipe, config.imbalance_ratio or 100.0)
    return recipes.compare_statistics(recipe["name"], stats, expected)


def _source_table() -> dict[str, Source]:
    """dataset name -> Source. Imports are local so `sage prepare synthetic` stays light."""
    from sage_cli.prepare import cifar, folder, splits

    def split_source(name: str) -> Source:
        return Source(lambda c: splits.load_split_dataset(name, c.root, c.classnames, by_name=_sorts_by_name(c)),
                      lambda c: _hash_files(splits.input_files(name, c.root, c.classnames)))

    return {
        "synthetic": Source(_generate), "shapes-lt": Source(_generate),
        **{name: split_source(name) for name in splits.SPLIT_DATASETS},
        "cifar100-lt": Source(
            lambda c: cifar.load_cifar100_lt(c.root, c.out, c.imbalance_ratio or 100.0, c.groups_from or "ir100",
                                             c.workers),
            lambda c: _hash_files(cifar.input_files(c.root))),
        "folder": Source(lambda c: folder.load_folder(c.root, c.classnames),
                         lambda c: {**folder.folder_inputs(c.root), **_hash_classnames(c),
                                    **_hash_split(c, folder.detect_layout(c.root) == "flat")}),
        "csv": Source(lambda c: folder.load_csv(c.root, c.classnames),
                      lambda c: _hash_files({"csv": folder.find_csv(c.root)}) | _hash_classnames(c)
                      | _hash_split(c, not folder.csv_has_split(c.root))),
    }


def _sorts_by_name(config: PrepareConfig) -> bool:
    """inat2018's labels numbered by the sorted species names (LIFT's), unless --label-order category-id."""
    return config.dataset == "inat2018" and config.label_order != "category-id"


def _hash_files(files: dict[str, Path]) -> dict[str, str]:
    return {name: artifacts.sha256_file(path) for name, path in files.items()}


def _hash_split(config: PrepareConfig, unsplit: bool) -> dict[str, str]:
    """The split made of data without one (a preparation with other fractions is other inputs)."""
    return {"split": artifacts.sha256_json(config.split.describe())} if unsplit else {}


def _hash_classnames(config: PrepareConfig) -> dict[str, str]:
    return _hash_files({"classnames": config.classnames}) if config.classnames else {}


_SHAPES_LT_V1 = {"max_count": 300, "variant": 0, "domain": "hard"}


def _shapes_lt_options(config: PrepareConfig) -> dict[str, Any]:
    """Shapes-LT's world options with their defaults filled in (the domain, counts and class order)."""
    from sage_cli.world.shapes_lt import COUNT_DEFAULTS, DEFAULT_DOMAIN, DOMAIN_COUNT_DEFAULTS

    domain = config.domain or DEFAULT_DOMAIN
    ratio, max_count = DOMAIN_COUNT_DEFAULTS.get(domain, COUNT_DEFAULTS)
    return {"imbalance_ratio": config.imbalance_ratio or ratio, "max_count": config.max_count or max_count,
            "variant": config.variant, "domain": domain}


def _generate(config: PrepareConfig) -> SourceData:
    if config.dataset == "shapes-lt":
        from sage_cli.world.shapes_lt import prepare_shapes_lt

        options = _shapes_lt_options(config)
        manifest, names = prepare_shapes_lt(config.out, seed=config.seed, **options)
        return SourceData(manifest, names, config.out, generated=True, notes={"world": options})
    from sage_cli.prepare.synthetic import generate_synthetic

    manifest, names = generate_synthetic(config.out, imbalance_ratio=config.imbalance_ratio or 30.0, seed=config.seed)
    return SourceData(manifest, names, config.out, generated=True)
