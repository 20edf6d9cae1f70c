"""The weight hub: manifest, typed records, hosts, fetching, conversion and publishing.

Layout (one purpose per module):

* :mod:`.records`   typed :class:`WeightRecord` / host dataclasses, parsed and validated once
* :mod:`.manifest`  ``weights_manifest.json``: load, save, validate, look up records
* :mod:`.cache`     where verified files are kept; the only code that deletes there
* :mod:`.hosts`     one module per host kind (``package``, ``checkout``, ``huggingface``,
                    ``original``)
* :mod:`.fetch`     ``fetch_weights`` / ``load_state_dict``: caches, then hosts in order
* :mod:`.convert`   the authors' checkpoints -> deterministic safetensors
* :mod:`.publish`   upload to a Hugging Face repo and pin the revision
* :mod:`.errors`    the hub's errors (on top of :mod:`agcnn_zoo.io.errors`)

Downloads, atomic writes, hashing and the environment switches live in :mod:`agcnn_zoo.io`,
shared with the dataset readers.
"""
from ..io.env import DEFAULT_DEADLINE, DEFAULT_TIMEOUT
from .cache import cache_dir, hf_cache_dir
from .errors import (CacheError, CacheNotWritableError, CachePathError, ConfigError,
                     DeadlineError, DiskFullError, DownloadError, HostFailure, IntegrityError,
                     MirrorError, NoPretrainedWeightsError, NoRecordError, OfflineError, RecordError, TooLargeError,
                     TruncatedDownloadError, UnexpectedContentError, UnpinnedWeightsWarning,
                     UnsafeFileError, WeightsError, WeightsUnavailableError, ZooIOError)
from .fetch import cached_weights_path, fetch_weights, load_state_dict, resolve_record, verify_file
from .manifest import (get_record, load_manifest, load_records, manifest_path, save_manifest,
                       validate_manifest, weight_record)
from .records import (CheckoutHost, HuggingFaceHost, OriginalHost, PackageHost, WeightRecord,
                      parse_record, trust_host)

__all__ = [
    "fetch_weights", "load_state_dict", "verify_file", "cache_dir", "hf_cache_dir",
    "cached_weights_path", "resolve_record", "WeightsError", "ZooIOError", "IntegrityError",
    "DownloadError", "UnexpectedContentError", "TruncatedDownloadError", "TooLargeError",
    "DeadlineError", "OfflineError", "MirrorError", "ConfigError", "CacheError",
    "CacheNotWritableError", "DiskFullError", "CachePathError", "UnsafeFileError", "RecordError",
    "NoPretrainedWeightsError", "NoRecordError", "WeightsUnavailableError", "UnpinnedWeightsWarning", "HostFailure",
    "DEFAULT_TIMEOUT", "DEFAULT_DEADLINE", "WeightRecord", "HuggingFaceHost", "OriginalHost",
    "PackageHost", "CheckoutHost", "parse_record", "trust_host", "get_record", "load_manifest", "load_records",
    "manifest_path", "save_manifest", "validate_manifest", "weight_record",
]
