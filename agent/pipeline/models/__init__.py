"""Input models: resolved on the server, fetched into a content-addressed cache, verified,
exposed to the task by path, while the environment is being built.

Modules: ``stage`` (the stage: resolve each model record, fetch, expose, record the digest),
``fetch`` (by URI scheme: file, http(s), s3, gs), ``verify`` (manifests and hashing),
``unpack`` (packages extracted), ``cache`` + ``entries`` (the bounded, shared cache and its
eviction), ``records`` (the values and small pure helpers). The names below are its API.

For each entry of the task's ``models.input`` the model document gives a URI (``file://``,
``http(s)://``; ``s3://`` with the ``boto3`` extra, ``gs://`` with ``google-cloud-storage``).
A URI under the configured files host (``CLEARML_FILES_HOST``, e.g. weights the SDK uploaded with
``output_uri=True``) is fetched with the API token, as the SDK does; no other host sees it.
The weights land in ``<cache>/entries/<sha256>/content/<file name>``; a model the SDK tagged as a
package (system tag ``package``: a zipped folder) is extracted once, into
``<cache>/entries/<sha256>.x/content/``. The task sees the path as
``CONVEYOR_INPUT_MODEL_<NAME>`` (and the first model also as ``CONVEYOR_INPUT_MODEL``).

Checksums: the convention is the model metadata key ``sha256`` (the key the SDK itself puts on
objects it uploads to S3/GCS/Azure). When the model records one, the download must match it, and a
cached copy with that digest is a hit whatever the URI; when it records none, the digest is
computed while downloading and recorded on the model (``models.add_or_update_metadata``), so the
next run verifies against it.

The cache is shared by every agent on the machine: one ``filelock`` guards its bookkeeping, one
per URI makes concurrent agents download a model once. It is bounded by size; the least recently
used entries go first, except those leased by a running task (``leases/<task id>.json``, released
with :meth:`ModelCache.release`). Leased models can hold the cache over its bound, never other
ones: each commit and each release evicts (:attr:`CacheState.within_bound` is the invariant).
Entries are made read-only: in docker mode the cache directory is mounted read-only at the same
path.

Verifying cache hits: a cached copy is checked before a task gets it, against the manifest
recorded when it was cached (each file's size, mtime, ctime and sha256). A file missing, added or
resized fails at once. An entry under ``FULL_VERIFY_BELOW`` bytes (256 MB) is re-hashed in full
on every hit: sha256 runs at ~1 GB/s, so that costs a fraction of a second from the page cache,
about a second from disk, and overlaps the environment build. A larger entry is re-hashed only
where a file's mtime or ctime moved: an overwrite, a ``chmod``, even a write whose mtime was put
back with ``os.utime`` moves the ctime, which no system call sets back (short of changing the
clock). The trade-off: a change that leaves the inode untouched (bit rot, a raw write to the
block device) in an entry over the threshold goes unseen; catching it would mean re-hashing tens
of GB at every task start. An intact entry whose times moved is re-stamped after its re-hash, so
the next hit is cheap again. An entry that fails is evicted (unless another agent replaced it
meanwhile), the task's console says so, and the model is fetched again.
"""

from agent.pipeline.models.cache import ModelCache
from agent.pipeline.models.entries import CacheEntry, CacheState
from agent.pipeline.models.fetch import transport_reason, unreachable
from agent.pipeline.models.records import (
    FetchedModel,
    ModelError,
    ModelSource,
    expected_sha256,
    file_name_of,
    files_host_auth,
    human_size,
    input_model_env,
    model_env_names,
    redact,
    under_files_host,
)
from agent.pipeline.models.stage import fetch_input_models, resolve_model
from agent.pipeline.models.verify import EntryCheck, FileRecord, check_entry

__all__ = [
    "CacheEntry",
    "CacheState",
    "EntryCheck",
    "FetchedModel",
    "FileRecord",
    "ModelCache",
    "ModelError",
    "ModelSource",
    "check_entry",
    "expected_sha256",
    "fetch_input_models",
    "file_name_of",
    "files_host_auth",
    "human_size",
    "input_model_env",
    "model_env_names",
    "redact",
    "resolve_model",
    "transport_reason",
    "under_files_host",
    "unreachable",
]
