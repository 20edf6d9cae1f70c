"""The one I/O layer of agcnn-zoo, shared by the weight hub and the dataset readers.

* :mod:`.errors`   the error hierarchy (every failure a :class:`ZooIOError` with a hint)
* :mod:`.env`      the environment switches (offline, mirror, timeout, deadline)
* :mod:`.files`    hashing, atomic writes, checked reads, safe removal, stale temp files
* :mod:`.locks`    the inter-process lock per produced file
* :mod:`.download` bounded, streamed downloads (network or mirror)
"""
from .download import download, looks_like_html, mirror_path
from .env import DEFAULT_DEADLINE, DEFAULT_TIMEOUT, OFFLINE_ENV, offline
from .errors import (CacheError, CacheNotWritableError, CachePathError, ConfigError,
                     DeadlineError, DiskFullError, DownloadError, IntegrityError, MirrorError,
                     OfflineError, TooLargeError, TruncatedDownloadError, UnexpectedContentError,
                     UnsafeFileError, WeightsError, ZooIOError)
from .files import (FILE_MODE, atomic_write_bytes, atomic_writer, cache_errors, check_regular_file,
                    ensure_dir, git_blob_sha1_bytes, git_blob_sha1_file, is_within, md5_file,
                    read_checked, remove_stale_parts, safe_remove, sha256_bytes,
                    sha256_file, sha256_hasher, temp_name)
from .locks import file_lock, folder_lock

__all__ = [
    "download", "looks_like_html", "mirror_path", "DEFAULT_DEADLINE", "DEFAULT_TIMEOUT",
    "OFFLINE_ENV", "offline", "CacheError", "CacheNotWritableError", "CachePathError",
    "ConfigError", "DeadlineError", "DiskFullError", "DownloadError", "IntegrityError",
    "MirrorError", "OfflineError", "TooLargeError", "TruncatedDownloadError",
    "UnexpectedContentError", "UnsafeFileError", "WeightsError", "ZooIOError", "FILE_MODE",
    "atomic_write_bytes", "atomic_writer", "cache_errors", "check_regular_file", "ensure_dir",
    "git_blob_sha1_bytes", "git_blob_sha1_file", "is_within", "md5_file", "read_checked",
    "remove_stale_parts", "safe_remove", "sha256_bytes", "sha256_file", "sha256_hasher", "temp_name", "file_lock", "folder_lock",
]
