"""What a sandbox keeps on disk beyond its life: snapshots, archives, volumes.

Snapshots (``snapshot.py``: base images; ``capture.py``: a sandbox captured as
a snapshot), forks of a sandbox's writable layer (``fork.py``), archives of a
stopped sandbox and where they are kept, on local disk or in S3
(``archive.py``, ``archive_store.py``, ``s3_archive.py``), and volumes bound
into sandboxes (``volumes.py``).
"""
