"""Compressing codecs for a document store's token vectors: OPQ + product quantisation, and ColBERTv2 residuals.

A codec store keeps, per field, small integer codes in its shards and the codebooks in `codec.safetensors` beside
them (recorded in the manifest under `codec`). Codebooks are trained once, by faiss, on a sample of the store's own
vectors, and reused by `--extend` and `--resume`; encoding uses faiss too. Decoding is plain torch on the scoring
device (a sum of gathered rows of a rotated codebook table for pq, table gathers for the residuals), so reading a
store needs no faiss.

- `pq`: an OPQ rotation R (d x d, orthonormal) then `M` sub-quantisers of 256 centroids each over d/M dimensions:
  `M` bytes per token vector. Decoding: x = concat_m C_m[code_m] R = sum_m C_m[code_m] R_m (R_m: the m-th block of
  d/M rows of R), read as M rows of a table of every centroid already rotated back (one embedding_bag).
- `residual` (ColBERTv2's compression): the id of the nearest of K k-means centroids (int16, or int32 above 32,768
  centroids) plus each dimension's residual quantised to b = 1 or 2 bits, with bucket cutoffs at the residuals'
  quantiles (i/2^b) and bucket weights at the midpoint quantiles ((i + 0.5)/2^b), per dimension (ColBERTv2 shares
  one set of cutoffs over all dimensions; MICE states have outlier dimensions, so each dimension gets its own).
  Decoding: x = C[id] + W[bucket_j, j], read a byte at a time from a table of the 256 values of each byte.

With `token_means` (either codec), each vector is first reduced by the mean vector of its token id, and the codec
quantises what is left (the static token embeddings as side information, as SDR, Cohen et al. 2022, does with an
autoencoder): a document's vectors at a low layer are mostly their tokens' own, so the residual is several times
smaller than the vector. The means are those of the training sample per token id, shrunk towards the sample's mean
vector by `MEAN_SHRINKAGE` pseudo-vectors; token ids the sample lacks use the sample's mean. Each stored token
keeps its row of that table (int16, 2 bytes, shared by all fields), and decoding adds the row back (for pq, in the
same embedding_bag).

Vectors of a field whose training sample all have unit norm (ColBERT's embeddings) are normalised again after
decoding, as ColBERTv2 does.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from micebench.errors import MicebenchError

#: codec names `precompute --dtype` accepts beside the plain dtypes
CODECS = ("pq", "residual")
#: the file holding the codebooks of a codec store
CODEC_FILE = "codec.safetensors"
#: centroids per PQ sub-quantiser (8-bit codes)
PQ_CENTROIDS = 256
#: OPQ alternations of rotation and PQ (faiss's defaults: 50, with a PQ of 40 then 4 k-means iterations); fewer
#: here, so that training takes seconds to a minute on a CPU (recorded in the manifest)
OPQ_ITERATIONS = 10
OPQ_PQ_FIRST_ITERATIONS = 10
#: token vectors OPQ's rotation is fitted on (the final PQ uses up to `MAX_TRAIN_VECTORS`)
OPQ_TRAIN_VECTORS = 32_768
#: at most this many token vectors train a field's codebooks (a seeded random subset of the sample)
MAX_TRAIN_VECTORS = 65_536
#: token vectors per training point a k-means centroid should have (faiss warns below 39)
POINTS_PER_CENTROID = 39
#: the key under which a ranker's `store_encode` may give each stored token's id, (B, L) beside its mask: the side
#: information `token_means` needs (MICE and ColBERT give it)
TOKEN_IDS = "token_ids"
#: the tensor a `token_means` shard holds: each token's row of the means table (0: a token id the sample lacked)
TOKEN_ROWS = "token_rows"
#: pseudo-vectors at the sample's mean added to each token id's own when averaging (a token seen once is pulled
#: half-way to the mean vector, one seen 20 times 5%)
MEAN_SHRINKAGE = 1.0


@dataclass(frozen=True)
class CodecSpec:
    """What `precompute` was asked for: the codec and its sizes (None = the default or the store's own)."""

    name: str
    pq_bytes: int | None = None
    bits: int | None = None
    centroids: int | None = None
    train_docs: int = 1024
    seed: int = 0
    token_means: bool | None = None

    def options(self) -> dict[str, Any]:
        """The settings a resume or an extension must share (sizes left to the default are not compared)."""
        return {k: v for k, v in asdict(self).items() if v is not None and k not in ("train_docs", "seed")}

    def label(self) -> str:
        """A short name, e.g. pq48, residual-2bit or pq32+tokens (with token means)."""
        side = "+tokens" if self.token_means else ""
        if self.name == "pq":
            return f"pq{self.pq_bytes or ''}{side}"
        return f"residual-{self.bits or DEFAULT_BITS}bit{side}"


DEFAULT_BITS = 2


def default_pq_bytes(dim: int) -> int:
    """One byte per 8 dimensions (1/16 of fp16), or the nearest divisor of `dim` below."""
    return next(m for m in range(max(dim // 8, 1), 0, -1) if dim % m == 0)


def codec_spec(
    dtype: str,
    pq_bytes: int | None = None,
    residual_bits: int | None = None,
    centroids: int | None = None,
    train_docs: int | None = None,
    seed: int = 0,
    token_means: bool = False,
) -> CodecSpec | None:
    """The codec `--dtype` names (None for a plain dtype), its options checked in one line each."""
    if dtype not in CODECS:
        given = [n for n, v in (("pq-bytes", pq_bytes), ("residual-bits", residual_bits)) if v is not None]
        given += [n for n, v in (("centroids", centroids), ("train-docs", train_docs)) if v is not None]
        if given:
            raise MicebenchError(f"--{given[0]} applies to --dtype {'pq' if given[0] == 'pq-bytes' else 'residual'}")
        if token_means:
            raise MicebenchError("--token-means applies to --dtype pq or residual")
        return None
    if dtype == "pq" and (residual_bits is not None or centroids is not None):
        raise MicebenchError("--residual-bits and --centroids apply to --dtype residual, not pq")
    if dtype == "residual" and pq_bytes is not None:
        raise MicebenchError("--pq-bytes applies to --dtype pq, not residual")
    if pq_bytes is not None and pq_bytes < 1:
        raise MicebenchError(f"--pq-bytes must be at least 1 (got {pq_bytes})")
    if residual_bits is not None and residual_bits not in (1, 2):
        raise MicebenchError(f"--residual-bits must be 1 or 2 (got {residual_bits})")
    if centroids is not None and centroids < 2:
        raise MicebenchError(f"--centroids must be at least 2 (got {centroids})")
    if train_docs is not None and train_docs < 1:
        raise MicebenchError(f"--train-docs must be at least 1 (got {train_docs})")
    return CodecSpec(dtype, pq_bytes, residual_bits, centroids, train_docs or 1024, seed, token_means or None)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise MicebenchError(
            "the pq and residual store codecs train with faiss: pip install 'micebench[codecs]' (faiss-cpu)"
        ) from None
    return faiss


def default_centroids(tokens: int, vectors: int) -> int:
    """ColBERTv2's number of centroids, 2^floor(log2(16 sqrt(tokens))), capped so that the training sample has
    `POINTS_PER_CENTROID` vectors per centroid."""
    rule = 2 ** int(math.floor(math.log2(16 * math.sqrt(max(tokens, 1)))))
    cap = 2 ** int(math.floor(math.log2(max(vectors // POINTS_PER_CENTROID, 2))))
    return max(2, min(rule, cap))


class FieldCodec:
    """One field's codebooks: encode (tokens, dim) float vectors into named code tensors, decode them back."""

    name: str
    dim: int
    normalize: bool
    #: (rows, dim) mean vector per row of the store's token table (`token_means`), or None
    means: torch.Tensor | None = None

    def stored(self, field: str) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        """The tensors a shard holds for `field`: name -> (dtype, per-token shape)."""
        raise NotImplementedError

    def encode(self, field: str, x: torch.Tensor, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Codes of (tokens, dim) vectors, as CPU tensors named as in `stored` (`rows`: each token's row of the
        token means, with `token_means`)."""
        raise NotImplementedError

    def decode(self, field: str, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """(..., dim) float32 vectors from gathered code tensors (on the codebooks' device; `TOKEN_ROWS` among
        them with `token_means`)."""
        raise NotImplementedError

    def tensors(self) -> dict[str, torch.Tensor]:
        """The codebooks, by name (saved in the codec file under `<field>.<name>`)."""
        raise NotImplementedError

    def facts(self) -> dict[str, Any]:
        """What the manifest records of this field's codec."""
        raise NotImplementedError

    def bytes_per_token(self) -> int:
        return sum(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize for dtype, shape in self.stored("x").values())

    def to(self, device: torch.device) -> FieldCodec:
        raise NotImplementedError

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=-1) if self.normalize else x

    def _reduce(self, x: torch.Tensor, rows: torch.Tensor | None) -> np.ndarray:
        """(tokens, dim) float32 vectors to quantise: less their token means, with `token_means`."""
        x = x.detach().float().cpu()
        if self.means is not None:
            if rows is None:
                raise MicebenchError("internal: a token-means codec encoded without token rows")
            x = x - self.means.cpu().index_select(0, rows.long().cpu())
        return np.ascontiguousarray(x.numpy())


class PQCodec(FieldCodec):
    """OPQ rotation + product quantisation (8-bit codes, `M` bytes per vector)."""

    name = "pq"

    def __init__(
        self, rotation: torch.Tensor, centroids: torch.Tensor, normalize: bool, means: torch.Tensor | None = None
    ):
        self.rotation = rotation.float()  # (d, d): y = x R^T (faiss's LinearTransform A)
        self.centroids = centroids.float()  # (M, 256, d / M)
        self.M, self.ksub, self.dsub = centroids.shape
        self.dim = self.M * self.dsub
        self.normalize = normalize
        # decoding table: sub-quantiser m's centroid j already rotated back, c_mj R[m-th block rows] (M * 256, d),
        # so a vector decodes as the sum of its M table rows (one embedding_bag, no d x d matmul per token); fp16
        # halves the table's memory traffic, each entry and the sum rounded at 2^-11 relative, far below PQ's error
        blocks = self.rotation.view(self.M, self.dsub, self.dim)
        table = torch.einsum("mjs,msd->mjd", self.centroids, blocks).reshape(self.M * self.ksub, self.dim)
        self.means = None if means is None else means.float()
        if self.means is not None:  # the token means are rows of the same table, after the centroids
            table = torch.cat([table, self.means])
        self._table = table.to(torch.float16).contiguous()
        self._offsets = torch.arange(self.M, device=centroids.device) * self.ksub
        self._faiss: Any = None

    @classmethod
    def train(cls, x: np.ndarray, M: int, seed: int, normalize: bool, means: torch.Tensor | None = None) -> PQCodec:
        """OPQ then PQ, trained by faiss on `x` (n, d): the vectors, or their residuals from `means`."""
        faiss = _faiss()
        d = x.shape[1]
        opq = faiss.OPQMatrix(d, M)
        opq.niter = OPQ_ITERATIONS
        opq.niter_pq_0 = OPQ_PQ_FIRST_ITERATIONS
        opq.max_train_points = OPQ_TRAIN_VECTORS
        inner = _pq(faiss, d, M, seed)
        opq.pq = inner  # the PQ OPQ alternates with (kept alive by `inner` until training ends)
        opq.train(x)
        rotation = faiss.vector_to_array(opq.A).reshape(d, d).copy()
        pq = _pq(faiss, d, M, seed)  # the final PQ, fully trained in the rotated space
        pq.train(np.ascontiguousarray(x @ rotation.T, dtype=np.float32))
        centroids = faiss.vector_to_array(pq.centroids).reshape(M, PQ_CENTROIDS, d // M).copy()
        return cls(torch.from_numpy(rotation), torch.from_numpy(centroids), normalize, means)

    def _quantizer(self) -> tuple[Any, Any]:
        """faiss objects holding these codebooks (for encoding)."""
        if self._faiss is None:
            faiss = _faiss()
            opq = faiss.OPQMatrix(self.dim, self.M)
            faiss.copy_array_to_vector(self.rotation.cpu().numpy().reshape(-1), opq.A)
            opq.is_trained = True
            pq = faiss.ProductQuantizer(self.dim, self.M, 8)
            faiss.copy_array_to_vector(self.centroids.cpu().numpy().reshape(-1), pq.centroids)
            self._faiss = (opq, pq)
        return self._faiss

    def stored(self, field: str) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        return {f"{field}.codes": (torch.uint8, (self.M,))}

    def encode(self, field: str, x: torch.Tensor, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        opq, pq = self._quantizer()
        rotated = opq.apply_py(self._reduce(x, rows))
        return {f"{field}.codes": torch.from_numpy(pq.compute_codes(rotated))}

    def decode(self, field: str, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        codes = parts[f"{field}.codes"]
        rows = codes.reshape(-1, self.M).long() + self._offsets
        if self.means is not None:  # plus the token's mean: one more row of the same bag
            token = parts[TOKEN_ROWS].reshape(-1, 1).long() + self.M * self.ksub
            rows = torch.cat([rows, token], dim=1)
        y = torch.nn.functional.embedding_bag(rows, self._table, mode="sum").float()
        return self._finish(y.view(*codes.shape[:-1], self.dim))

    def tensors(self) -> dict[str, torch.Tensor]:
        means = {} if self.means is None else {"means": self.means.half()}  # fp16 values (see `token_means`)
        return {"rotation": self.rotation, "centroids": self.centroids, **means}

    def facts(self) -> dict[str, Any]:
        return {"dim": self.dim, "sub_quantizers": self.M, "centroids": self.ksub, "normalize": self.normalize}

    def to(self, device: torch.device) -> PQCodec:
        means = None if self.means is None else self.means.to(device)
        return PQCodec(self.rotation.to(device), self.centroids.to(device), self.normalize, means)


def _pq(faiss: Any, d: int, M: int, seed: int) -> Any:
    pq = faiss.ProductQuantizer(d, M, 8)
    pq.cp.seed = seed
    pq.cp.min_points_per_centroid = 1  # small samples are checked (and refused) before training
    pq.cp.max_points_per_centroid = MAX_TRAIN_VECTORS // PQ_CENTROIDS
    return pq


class ResidualCodec(FieldCodec):
    """ColBERTv2's residual compression: a centroid id and b bits per dimension."""

    name = "residual"

    def __init__(
        self,
        centroids: torch.Tensor,
        cutoffs: torch.Tensor,
        weights: torch.Tensor,
        normalize: bool,
        means: torch.Tensor | None = None,
    ):
        self.centroids = centroids.float()  # (K, d)
        self.means = None if means is None else means.float()
        self.cutoffs = cutoffs.float()  # (2^b - 1, d), ascending per dimension
        self.weights = weights.float()  # (2^b, d)
        self.K, self.dim = centroids.shape
        self.bits = int(round(math.log2(weights.shape[0])))
        self.normalize = normalize
        self.id_dtype = torch.int16 if self.K <= 2**15 else torch.int32
        device = centroids.device
        self._shifts = torch.arange(0, 8, self.bits, device=device, dtype=torch.uint8)
        # decoding table: for byte position p and byte value v, the weights of the 8/b dimensions it packs
        per_byte, nbytes = 8 // self.bits, self.dim * self.bits // 8
        values = torch.arange(256, device=device)
        buckets = (values[:, None] >> self._shifts.long()) & ((1 << self.bits) - 1)  # (256, per_byte)
        dims = torch.arange(self.dim, device=device).view(nbytes, per_byte)
        table = self.weights[buckets[None, :, :], dims[:, None, :]]  # (nbytes, 256, per_byte)
        self._table = table.reshape(nbytes * 256, per_byte).contiguous()
        self._byte_offsets = torch.arange(nbytes, device=device) * 256
        self._index: Any = None

    @classmethod
    def train(
        cls, x: np.ndarray, K: int, bits: int, seed: int, normalize: bool, means: torch.Tensor | None = None
    ) -> ResidualCodec:
        """k-means (faiss) on `x` (the vectors, or their residuals from `means`), then the residuals' per-dimension
        quantiles as bucket cutoffs and weights."""
        faiss = _faiss()
        kmeans = faiss.Kmeans(
            x.shape[1],
            K,
            niter=20,
            seed=seed,
            min_points_per_centroid=1,
            max_points_per_centroid=max(MAX_TRAIN_VECTORS // K, 1),
        )
        kmeans.train(x)
        centroids = kmeans.centroids.copy()
        _, ids = kmeans.index.search(x, 1)
        residuals = x - centroids[ids[:, 0]]
        options = 2**bits
        cutoffs = np.quantile(residuals, np.arange(1, options) / options, axis=0)
        weights = np.quantile(residuals, (np.arange(options) + 0.5) / options, axis=0)
        return cls(
            torch.from_numpy(centroids),
            torch.from_numpy(np.ascontiguousarray(cutoffs, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32)),
            normalize,
            means,
        )

    def stored(self, field: str) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        return {
            f"{field}.centroid": (self.id_dtype, ()),
            f"{field}.residual": (torch.uint8, (self.dim * self.bits // 8,)),
        }

    def assign(self, x: np.ndarray) -> np.ndarray:
        """The nearest centroid of each row (faiss's exact L2 search)."""
        if self._index is None:
            faiss = _faiss()
            self._index = faiss.IndexFlatL2(self.dim)
            self._index.add(np.ascontiguousarray(self.centroids.cpu().numpy()))
        return self._index.search(x, 1)[1][:, 0]

    def buckets(self, residuals: torch.Tensor) -> torch.Tensor:
        """Each dimension's bucket (0 .. 2^b - 1) of (n, d) residuals: how many of its cutoffs lie below."""
        bounds = self.cutoffs.T.contiguous().cpu()
        return torch.searchsorted(bounds, residuals.T.contiguous(), right=True).T.to(torch.uint8)

    def encode(self, field: str, x: torch.Tensor, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        reduced = self._reduce(x, rows)
        x = torch.from_numpy(reduced)
        ids = torch.from_numpy(self.assign(reduced))
        buckets = self.buckets(x - self.centroids.cpu()[ids])
        per_byte = 8 // self.bits
        groups = buckets.view(len(x), self.dim // per_byte, per_byte)
        packed = (groups << self._shifts.cpu()).sum(-1, dtype=torch.uint8)  # no overlap: a sum is an or
        return {f"{field}.centroid": ids.to(self.id_dtype), f"{field}.residual": packed}

    def decode(self, field: str, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, packed = parts[f"{field}.centroid"], parts[f"{field}.residual"]
        lead = ids.shape
        x = self.centroids.index_select(0, ids.reshape(-1).long())
        rows = (packed.reshape(-1, packed.shape[-1]).long() + self._byte_offsets).reshape(-1)
        x += self._table.index_select(0, rows).view(-1, self.dim)  # each byte's dimensions from one table row
        if self.means is not None:
            x += self.means.index_select(0, parts[TOKEN_ROWS].reshape(-1).long())
        return self._finish(x.view(*lead, self.dim))

    def tensors(self) -> dict[str, torch.Tensor]:
        means = {} if self.means is None else {"means": self.means.half()}  # fp16 values (see `token_means`)
        return {"centroids": self.centroids, "cutoffs": self.cutoffs, "weights": self.weights, **means}

    def facts(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "centroids": self.K,
            "bits": self.bits,
            "id_dtype": str(self.id_dtype).replace("torch.", ""),
            "normalize": self.normalize,
        }

    def to(self, device: torch.device) -> ResidualCodec:
        means = None if self.means is None else self.means.to(device)
        return ResidualCodec(
            self.centroids.to(device), self.cutoffs.to(device), self.weights.to(device), self.normalize, means
        )


_CLASSES: dict[str, Any] = {"pq": PQCodec, "residual": ResidualCodec}


class StoreCodec:
    """The codecs of every field of a store, their provenance, and the codec file they are saved in.

    With `token_means`, `tokens` holds the sorted token ids of the training sample: row r + 1 of every field's means
    table belongs to `tokens[r]`, row 0 to any other token id.
    """

    def __init__(
        self,
        spec: CodecSpec,
        fields: dict[str, FieldCodec],
        training: dict[str, Any],
        tokens: torch.Tensor | None = None,
    ):
        self.spec, self.fields, self.training = spec, fields, training
        self.tokens = None if tokens is None else tokens.long().cpu()
        rows = 0 if self.tokens is None else len(self.tokens) + 1
        self.row_dtype = torch.int16 if rows <= 2**15 else torch.int32

    @property
    def name(self) -> str:
        return self.spec.name

    def bytes_per_token(self) -> int:
        side = self.row_dtype.itemsize if self.tokens is not None else 0
        return sum(c.bytes_per_token() for c in self.fields.values()) + side

    def stored(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        """Every code tensor a shard holds: name -> (dtype, per-token shape)."""
        names = {name: spec for field, codec in self.fields.items() for name, spec in codec.stored(field).items()}
        if self.tokens is not None:
            names[TOKEN_ROWS] = (self.row_dtype, ())
        return names

    def token_rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Each token's row of the means tables (0 for a token id the training sample lacked)."""
        assert self.tokens is not None
        return token_rows(self.tokens, token_ids).to(self.row_dtype)

    def encode_chunk(self, vectors: dict[str, torch.Tensor], token_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Every code tensor of a shard, from each field's (tokens, dim) vectors and, with `token_means`, the
        tokens' ids."""
        parts: dict[str, torch.Tensor] = {}
        rows = None
        if self.tokens is not None:
            if token_ids is None:
                raise MicebenchError(
                    "--token-means needs the token id of every stored vector, which this ranker does not give"
                )
            rows = parts[TOKEN_ROWS] = self.token_rows(token_ids)
        for field, x in vectors.items():
            parts.update(self.fields[field].encode(field, x, rows))
        return parts

    def decode(self, field: str, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fields[field].decode(field, parts)

    def to(self, device: torch.device | str) -> StoreCodec:
        device = torch.device(device)
        return StoreCodec(self.spec, {f: c.to(device) for f, c in self.fields.items()}, self.training, self.tokens)

    def manifest(self) -> dict[str, Any]:
        """The manifest's `codec` entry."""
        entry = {
            "name": self.spec.name,
            "file": CODEC_FILE,
            "options": self.spec.options(),
            "bytes_per_token": self.bytes_per_token(),
            "fields": {f: c.facts() for f, c in self.fields.items()},
            "training": self.training,
        }
        if self.tokens is not None:
            entry["token_means"] = {
                "token_ids": len(self.tokens),
                "shrinkage": MEAN_SHRINKAGE,
                "row_dtype": str(self.row_dtype).replace("torch.", ""),
            }
        return entry

    def save(self, folder: Path) -> None:
        """Write the codebooks to `folder/codec.safetensors` (atomically, durable)."""
        import os

        from safetensors.torch import save_file

        from micebench.store.shards import release

        tensors = {f"{f}.{n}": t.cpu().contiguous() for f, c in self.fields.items() for n, t in c.tensors().items()}
        if self.tokens is not None:
            tensors[TOKEN_IDS] = self.tokens.contiguous()
        tmp = folder / f".{CODEC_FILE}.tmp"
        save_file(tensors, str(tmp))
        release(tmp)
        os.replace(tmp, folder / CODEC_FILE)

    @classmethod
    def load(cls, folder: Path, entry: dict[str, Any]) -> StoreCodec:
        """The codec a manifest's (or a partial store's) `codec` entry describes, read from its file."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(folder) / entry.get("file", CODEC_FILE)
        name = entry.get("name")
        if name not in _CLASSES:
            raise MicebenchError(f"document store {folder} uses codec {name!r}: upgrade micebench to read it")
        try:
            tensors = load_file(str(path))
        except (OSError, SafetensorError) as error:
            raise MicebenchError(f"corrupt or missing store codebooks {path}: {error}") from None
        options = dict(entry.get("options", {}))
        spec = CodecSpec(name, **{k: v for k, v in options.items() if k != "name"})
        fields = {}
        for field, facts in entry.get("fields", {}).items():
            names = ("rotation", "centroids") if name == "pq" else ("centroids", "cutoffs", "weights")
            names += ("means",) if spec.token_means else ()
            missing = [n for n in names if f"{field}.{n}" not in tensors]
            if missing:
                raise MicebenchError(f"corrupt store codebooks {path}: no {field}.{missing[0]}")
            parts = [tensors[f"{field}.{n}"] for n in names]
            means = parts.pop() if spec.token_means else None
            fields[field] = _CLASSES[name](*parts, bool(facts.get("normalize", False)), means)
        if spec.token_means and TOKEN_IDS not in tensors:
            raise MicebenchError(f"corrupt store codebooks {path}: no {TOKEN_IDS}")
        return cls(spec, fields, dict(entry.get("training", {})), tensors.get(TOKEN_IDS))


def store_label(manifest: dict[str, Any]) -> str:
    """How a store's vectors are kept, in `precompute --dtype` words: fp16, int8, pq48, residual-2bit, ..."""
    codec = manifest.get("codec")
    if isinstance(codec, dict):
        options = {k: v for k, v in codec.get("options", {}).items() if k != "name"}
        return CodecSpec(str(codec.get("name")), **options).label()
    from micebench.models.hf import DTYPES

    dtype = str(manifest.get("dtype", ""))
    return {DTYPES[name]: name for name in ("fp32", "fp16", "bf16")}.get(dtype, dtype)


def check_trainable(spec: CodecSpec, dims: dict[str, int], vectors: int) -> None:
    """Refuse, in one line, a codec the fields' sizes or the training sample cannot support."""
    if spec.name == "pq":
        for field, dim in dims.items():
            M = spec.pq_bytes or default_pq_bytes(dim)
            if dim % M:
                raise MicebenchError(
                    f"--pq-bytes {M} does not divide {field}'s {dim} dimensions (use a divisor of {dim})"
                )
        needed = PQ_CENTROIDS
    else:
        bits = spec.bits or DEFAULT_BITS
        for field, dim in dims.items():
            if (dim * bits) % 8:
                raise MicebenchError(f"{field}'s {dim} dimensions x {bits} bits do not fill whole bytes")
        needed = spec.centroids or 2
    if vectors < needed:
        raise MicebenchError(
            f"too few token vectors to train the {spec.name} codebooks: {vectors} in the training sample, at least "
            f"{needed} needed (encode more documents: --train-docs, or store fp16/int8)"
        )


def token_rows(vocabulary: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Each token id's row of a means table over the sorted `vocabulary`: its position + 1, or 0 if absent."""
    ids = token_ids.long().cpu()
    pos = torch.searchsorted(vocabulary, ids).clamp(max=max(len(vocabulary) - 1, 0))
    return torch.where(vocabulary[pos] == ids, pos + 1, torch.zeros_like(pos))


def token_means(x: torch.Tensor, rows: torch.Tensor, count: int) -> torch.Tensor:
    """(count, dim) means table of (n, dim) vectors grouped by their token `rows` (1 .. count - 1): each row's mean
    shrunk towards the mean vector by `MEAN_SHRINKAGE` pseudo-vectors, row 0 the mean vector itself; rounded to
    fp16, the precision the table is stored and decoded in, so that encoding subtracts what decoding adds."""
    x = x.detach().double().cpu()
    overall = x.mean(0)
    sums = torch.zeros(count, x.shape[1], dtype=torch.float64).index_add_(0, rows.long(), x)
    counts = torch.bincount(rows.long(), minlength=count).double()[:, None]
    means = (sums + MEAN_SHRINKAGE * overall) / (counts + MEAN_SHRINKAGE)
    means[0] = overall
    return means.to(torch.float16).float()


def train_codec(
    spec: CodecSpec,
    samples: dict[str, torch.Tensor],
    tokens: int,
    docs: int,
    token_ids: torch.Tensor | None = None,
) -> StoreCodec:
    """Train one codec per field on its (n, dim) sample vectors (at most `MAX_TRAIN_VECTORS`, a seeded subset);
    `tokens` is the projected size of the whole store (ColBERTv2's rule for the number of centroids). With
    `token_means`, `token_ids` (n,) are the sample vectors' token ids: the means table is computed from the whole
    sample, and the codebooks are trained on what the means leave."""
    check_trainable(spec, {f: int(x.shape[1]) for f, x in samples.items()}, min(len(x) for x in samples.values()))
    vocabulary = rows = None
    if spec.token_means:
        if token_ids is None:
            raise MicebenchError(
                "--token-means needs the token id of every stored vector, which this ranker does not give"
            )
        vocabulary = torch.unique(token_ids.long().cpu())  # sorted
        rows = token_rows(vocabulary, token_ids)
    fields, seconds, used = {}, 0.0, 0
    K = M = None
    for field, x in samples.items():
        start = time.perf_counter()
        means = None if rows is None else token_means(x, rows, len(vocabulary) + 1)
        data = x.detach().float().cpu()
        normalize = bool(torch.all((data.norm(dim=1) - 1).abs() < 1e-3))
        if means is not None:
            data = data - means.index_select(0, rows)
        data = data.numpy()
        if len(data) > MAX_TRAIN_VECTORS:
            pick = np.random.default_rng(spec.seed).choice(len(data), MAX_TRAIN_VECTORS, replace=False)
            data = data[np.sort(pick)]
        data = np.ascontiguousarray(data, dtype=np.float32)
        used = len(data)
        if spec.name == "pq":
            M = spec.pq_bytes or default_pq_bytes(data.shape[1])
            fields[field] = PQCodec.train(data, M, spec.seed, normalize, means)
        else:
            K = spec.centroids or default_centroids(tokens, len(data))
            K = min(K, len(data))
            fields[field] = ResidualCodec.train(data, K, spec.bits or DEFAULT_BITS, spec.seed, normalize, means)
        seconds += time.perf_counter() - start
    training = {
        "documents": docs,
        "vectors": used,
        "seed": spec.seed,
        "seconds": round(seconds, 3),
        "library": f"faiss {_faiss().__version__}",
    }
    if spec.name == "pq":
        training["opq_iterations"] = OPQ_ITERATIONS
    resolved = CodecSpec(
        spec.name,
        spec.pq_bytes or (M if spec.name == "pq" else None),
        spec.bits or (DEFAULT_BITS if spec.name == "residual" else None),
        K if spec.name == "residual" else None,
        spec.train_docs,
        spec.seed,
        spec.token_means,
    )
    return StoreCodec(resolved, fields, training, vocabulary)


def check_compatible(spec: CodecSpec | None, codec: StoreCodec | None, folder: Path) -> None:
    """An extension or resume keeps the store's codec: refuse another codec or other sizes in one line."""
    if codec is None and spec is None:
        return
    if codec is None or spec is None or spec.name != codec.name:
        have = codec.name if codec else "no codec"
        raise MicebenchError(
            f"cannot extend {folder}: it is stored with {have}, this precompute asks for "
            f"{spec.name if spec else 'a plain dtype'}"
        )
    ours, theirs = spec.options(), codec.spec.options()
    differ = sorted(k for k in ours if theirs.get(k) != ours[k])
    if differ:
        raise MicebenchError(
            f"cannot extend {folder}: its codebooks have {differ[0]} {theirs.get(differ[0])!r}, "
            f"this precompute asks for {ours[differ[0]]!r} (leave it out to reuse the store's)"
        )
