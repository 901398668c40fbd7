"""Dataset name resolution: local path, then the local mirror (data dir), then ir_datasets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from micebench.data.base import Dataset
from micebench.data.facts import DatasetFacts
from micebench.data.local import LocalBeirDataset, is_beir_folder
from micebench.data.nanobeir import NANO_SETS, NANOBEIR_EN, NanoBeirDataset, check_local_files, nano_set, nano_source
from micebench.errors import DataError, UnknownNameError, not_found

DATA_DIR_ENV = "MICEBENCH_DATA"


TREC_DL = DatasetFacts(relevance_level=2)
MSMARCO_DEV = DatasetFacts(validation_measure="RR@10")


@dataclass(frozen=True)
class ShortName:
    """A paper dataset name, its ir_datasets id, the folder names a local mirror may use, and its facts."""

    name: str
    irds_id: str
    mirror_folders: tuple[str, ...]
    group: str  # "in-domain" or "beir"
    facts: DatasetFacts = DatasetFacts()
    #: ir_datasets ids starting with one of these (other splits of the same judgements) share the facts
    irds_family: tuple[str, ...] = ()


def _beir(name: str, irds_id: str, *folders: str) -> ShortName:
    return ShortName(name, irds_id, (name, *folders), "beir")


SHORT_NAMES: dict[str, ShortName] = {
    s.name: s
    for s in [
        ShortName(
            "msmarco-dev",
            "msmarco-passage/dev/small",
            ("msmarco-dev", "msmarco-passage-dev-small"),
            "in-domain",
            MSMARCO_DEV,
            ("msmarco-passage/dev",),
        ),
        ShortName(
            "trec-dl-19",
            "msmarco-passage/trec-dl-2019/judged",
            ("trec-dl-2019-passage", "trec-dl-19"),
            "in-domain",
            TREC_DL,
            ("msmarco-passage/trec-dl-2019",),
        ),
        ShortName(
            "trec-dl-20",
            "msmarco-passage/trec-dl-2020/judged",
            ("trec-dl-2020-passage", "trec-dl-20"),
            "in-domain",
            TREC_DL,
            ("msmarco-passage/trec-dl-2020",),
        ),
        _beir("arguana", "beir/arguana"),
        _beir("climate-fever", "beir/climate-fever"),
        _beir("dbpedia", "beir/dbpedia-entity/test", "dbpedia-entity"),
        _beir("fever", "beir/fever/test"),
        _beir("fiqa", "beir/fiqa/test"),
        _beir("hotpotqa", "beir/hotpotqa/test"),
        _beir("nfcorpus", "beir/nfcorpus/test"),
        _beir("nq", "beir/nq"),
        _beir("quora", "beir/quora/test"),
        _beir("scidocs", "beir/scidocs"),
        _beir("scifact", "beir/scifact/test"),
        _beir("touche", "beir/webis-touche2020/v2", "webis-touche2020", "webis-touche2020-v2"),
        _beir("trec-covid", "beir/trec-covid"),
    ]
}


def data_dir(explicit: str | Path | None = None) -> Path | None:
    """The local mirror folder: the explicit argument, else $MICEBENCH_DATA, else none."""
    value = explicit or os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(not_found("data directory", value))
    return path


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~"))


def where(name: str, data_dir_path: Path | None = None) -> tuple[str, str]:
    """Say where a name resolves without loading it: ("local", path) or ("ir_datasets", id)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return "local", str(path.resolve())
    if _looks_like_path(name):
        raise DataError(not_found("dataset folder", name))
    nano = nano_set(name)
    if nano is not None:  # the local folder's files (checked), or the hub repository and split
        source = nano_source(nano[0])
        if source.folder is not None:
            check_local_files(source)
            return "local", f"{source.folder}@{source.split}" if source.layout == NANOBEIR_EN else str(source.folder)
        return "huggingface", source.key.partition(":")[2]
    short = SHORT_NAMES.get(name)
    if data_dir_path is not None:
        for folder in short.mirror_folders if short else (name,):
            candidate = data_dir_path / folder
            if is_beir_folder(candidate):
                return "local", str(candidate.resolve())
    if short is not None:
        return "ir_datasets", short.irds_id
    from micebench.data.irds import irds_has

    if irds_has(name):
        return "ir_datasets", name
    known = ", ".join(SHORT_NAMES)
    raise UnknownNameError(
        f"unknown dataset {name!r}: not a folder, not in the data directory, not an ir_datasets id "
        f"(short names: {known}; NanoBEIR: nano-<set>[@evaluator] for {', '.join(NANO_SETS)})"
    )


def dataset_label(name: str) -> str:
    """The name results use for a dataset: a folder path's last component, anything else verbatim."""
    path = Path(name).expanduser()
    return path.resolve().name if path.is_dir() else name


def short_name_of(label: str) -> ShortName | None:
    """The registry entry a dataset label stands for: a short name, or one of its mirror folder names."""
    return SHORT_NAMES.get(label) or next((s for s in SHORT_NAMES.values() if label in s.mirror_folders), None)


def dataset_facts(name: str, kind: str, target: str) -> DatasetFacts:
    """The registry's facts for a dataset: by short name, by mirror folder name, or by ir_datasets id family."""
    short = short_name_of(name) or (short_name_of(Path(target).name) if kind == "local" else None)
    if short is None and kind == "ir_datasets":
        prefixes = ((s, (s.irds_id, *s.irds_family)) for s in SHORT_NAMES.values())
        short = next((s for s, family in prefixes if target.startswith(family)), None)
    return short.facts if short is not None else DatasetFacts()


def load_dataset(name: str, data_dir_path: str | Path | None = None, split: str | None = None) -> Dataset:
    """Resolve a dataset name (path, short name, mirror folder or ir_datasets id) and open it with its facts."""
    kind, target = where(name, data_dir(data_dir_path))
    label = dataset_label(name)
    nano = nano_set(name) if not Path(name).expanduser().is_dir() else None
    if nano is not None:
        if split is not None:
            raise DataError("--split applies to local folders; NanoBEIR sets have one split")
        return NanoBeirDataset(*nano, name=label)
    if kind == "local":
        dataset: Dataset = LocalBeirDataset(target, split=split, name=label)
    else:
        from micebench.data.irds import IrDatasetsDataset

        if split is not None:
            raise DataError("--split applies to local folders; ir_datasets ids name their split themselves")
        dataset = IrDatasetsDataset(target, name=label)
    dataset.facts = dataset_facts(name, kind, target)
    return dataset


def catalogue(root: Path | None) -> list[tuple[str, str, str, str]]:
    """(name, group, what it resolves to, source) for every short name, then every BEIR folder of the local
    mirror that no short name points to: what `micebench datasets` lists."""
    rows, mirrored = [], set()
    for short in SHORT_NAMES.values():
        kind, target = where(short.name, root)
        if kind == "local":
            mirrored.add(Path(target).name)
        rows.append((short.name, short.group, target, kind))
    if root is not None:
        for folder in sorted(p for p in root.iterdir() if is_beir_folder(p) and p.name not in mirrored):
            rows.append((folder.name, "local", str(folder.resolve()), "local"))
    return rows
