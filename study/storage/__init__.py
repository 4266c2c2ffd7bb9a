"""Where study folders live when there is no shared disk: a prefix in an S3 bucket for the files,
a PostgreSQL database for the tuning state and the driver lock.

- `roots`: what `--storage` names, a local folder or `s3://bucket/prefix` (never a URI taken
  for a path).
- `s3`: the pyarrow S3 filesystem of the standard AWS environment, the bucket check, and one
  line for each S3 refusal.
- `bucket_folder`: one folder of a bucket, read and written whole objects at a time.
- `state_db`: the PostgreSQL database of a study in a bucket (`--state-db`).
- `db_lock`: the driver lock there, an advisory lock its session holds.

pyarrow is imported here only (`tests/test_layers.py`); psycopg only in `db_lock`.
"""

from study.storage.roots import ACCEPTED, BucketPath, Root, is_remote, place, storage_root

__all__ = ["ACCEPTED", "BucketPath", "Root", "is_remote", "place", "storage_root"]
